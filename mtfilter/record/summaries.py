"""`summary.json`, typed: what a fit writes at its end and what the sweep and the report read
back. Standard library only, so that reading summaries never loads torch.

One replica's figures are a `Summary`. A fit of stacked replicas writes one per replica
(`seed_<s>/summary.json`) and, at the top of its folder, a `StackedSummary` listing them.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtfilter.folders import SUMMARY_FILE, read_json, write_json
from mtfilter.record import metrics
from mtfilter.record.metrics import Figure


@dataclass
class Summary:
    """One replica's summary.

    `train` and `val` hold each figure of `metrics.FIGURES` under its name:
    `{name}_best`, `{name}_best_epoch` (and `_per_bit` lists) for figures with a best,
    `{name}_final` (and `{name}_final_per_bit`) for figures with a final value, `{name}_at_best`
    for figures read at the epoch of the lowest `val/loss`.
    """

    status: str  # completed, stopped, interrupted, diverged, failed
    error: str | None = None
    seed: int | None = None
    learning_rate: float | None = None  # a stacked learning rate's; None: the optimizer's
    data_seed: int | None = None
    data_fingerprint: str | None = None
    epochs: int = 0
    convergence: dict[str, Any] | None = None  # see ConvergenceSchedule.summary
    wall_time_s: float = 0.0
    parameters: dict[str, int] = field(default_factory=dict)  # see BitMLP.parameter_counts
    train: dict[str, Any] = field(default_factory=dict)
    val: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, str | None] = field(default_factory=dict)
    multitask: dict[str, Any] = field(default_factory=dict)
    floor: dict[str, Any] | None = None  # see floor.Floor: the model's representational floor
    # data with held-out splits: each split's figures with the best epoch's weights, in eval
    # mode, and that epoch: {"test": {"bit_error": ..., ...}, "train": {...}, "epoch": 42}
    # (`mtfilter.train.split_figures`; the epoch is the best checkpoint's, None without one)
    splits: dict[str, Any] | None = None
    hparams: dict[str, Any] = field(default_factory=dict)

    def section(self, figure: Figure) -> dict[str, Any]:
        return self.train if figure.stage == "train" else self.val

    def best(self, figure: Figure) -> tuple[float | None, int | None]:
        """The figure's lowest value and its epoch (None when it has none)."""
        section = self.section(figure)
        name = figure.summary_name
        return section.get(f"{name}_best"), section.get(f"{name}_best_epoch")

    def final(self, figure: Figure) -> float | None:
        return self.section(figure).get(f"{figure.summary_name}_final")

    def at_best(self, figure: Figure) -> float | None:
        return self.section(figure).get(f"{figure.summary_name}_at_best")

    @property
    def converged(self) -> bool | None:
        """The convergence check's verdict; None where none ran."""
        return None if self.convergence is None else self.convergence.get("converged")

    def layout(self) -> str | None:
        return (self.hparams.get("model") or {}).get("layout")

    @classmethod
    def from_json(cls, content: dict[str, Any]) -> "Summary":
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in content.items() if k in known})


@dataclass
class StackedSummary:
    """The top-level summary of a fit of stacked replicas."""

    status: str
    error: str | None
    seeds: list[int]  # per replica (a seed repeats when learning rates are stacked)
    replicas: list[str]  # paths of the replicas' summaries, relative to the run folder
    learning_rates: list[float] | None = None  # per replica, when learning rates are stacked


def figure_fields(
    figure: Figure, best: Any, final: Any, num_bits: int, at_best: Any = None
) -> dict[str, Any]:
    """A figure's entries in its summary section, from `best(tag) -> (value, epoch)`,
    `final(tag) -> value` and `at_best(tag) -> value` (None where the run has no value)."""
    name, fields = figure.summary_name, {}
    bits = [f"{figure.tag}/bit_{i}" for i in range(num_bits)] if figure.per_bit else []
    if figure.best:
        fields[f"{name}_best"], fields[f"{name}_best_epoch"] = best(figure.tag)
        if bits:
            per_bit = [best(tag) for tag in bits]
            fields[f"{name}_best_per_bit"] = [value for value, _ in per_bit]
            fields[f"{name}_best_epoch_per_bit"] = [epoch for _, epoch in per_bit]
    if figure.final:
        fields[f"{name}_final"] = final(figure.tag)
        if bits:
            fields[f"{name}_final_per_bit"] = [final(tag) for tag in bits]
    if figure.at_best and at_best is not None:
        fields[f"{name}_at_best"] = at_best(figure.tag)
    return fields


def figure_sections(
    best: Any, final: Any, num_bits: int, at_best: Any = None, figures: list[Figure] | None = None
) -> dict[str, dict[str, Any]]:
    """The `train` and `val` sections for every figure of `figures` (default `FIGURES`)."""
    sections: dict[str, dict[str, Any]] = {"train": {}, "val": {}}
    for figure in figures or metrics.FIGURES:
        sections[figure.stage].update(figure_fields(figure, best, final, num_bits, at_best))
    return sections


def write(folder: Path, summaries: list[Summary], names: list[str], filename: str) -> None:
    """One replica: its summary in `folder`; stacked replicas: each in its own folder (`names`,
    e.g. `seed_3` or `seed_3-lr_0.01`) and the list of them in `folder`."""
    if len(summaries) == 1:
        write_json(folder / filename, asdict(summaries[0]))
        return
    paths = []
    for name, summary in zip(names, summaries, strict=True):
        write_json(folder / name / filename, asdict(summary))
        paths.append(f"{name}/{filename}")
    first = summaries[0]
    seeds = [summary.seed for summary in summaries if summary.seed is not None]
    rates = [s.learning_rate for s in summaries if s.learning_rate is not None]
    stacked = StackedSummary(first.status, first.error, seeds, paths, rates or None)
    write_json(folder / filename, asdict(stacked))


def read(folder: Path) -> list[tuple[Summary, Path]] | None:
    """A run folder's replica summaries, each with its own folder (its TensorBoard run); None
    before the fit wrote one. A replica whose file is missing keeps the top-level status."""
    top = read_json(folder / SUMMARY_FILE)
    if top is None:
        return None
    if "replicas" not in top:
        return [(Summary.from_json(top), folder)]
    replicas = []
    for path in top["replicas"]:
        content = read_json(folder / path) or {"status": top.get("status", "failed")}
        replicas.append((Summary.from_json(content), (folder / path).parent))
    return replicas


def read_status(folder: Path) -> tuple[str | None, str | None]:
    """The status and error a run folder's summary reports; (None, None) before it wrote one."""
    top = read_json(folder / SUMMARY_FILE) or {}
    return top.get("status"), top.get("error")
