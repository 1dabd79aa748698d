"""Reading a sweep folder back: one row per run (each stacked replica its own row), from the
runs' `run.json` and `summary.json` files."""

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mtfilter.errors import ConfigError
from mtfilter.folders import (
    LEARNING_RATE_KEY,
    RUN_FILE,
    SEED_KEY,
    SWEEP_FILE,
    grid_keys,
    read_json,
    replacing,
)
from mtfilter.record import metrics, summaries
from mtfilter.record.metrics import Figure
from mtfilter.record.summaries import Summary

# Conflict telemetry columns: the run's mean over its measurements (empty where not measured),
# and its last measurement (`_last`: at the converged weights, for a run that stopped there).
CONFLICT_FIGURES = {
    "conflict_fraction": "conflict/fraction",
    "conflict_mean_cosine": "conflict/mean_cosine",
    "grad_norm_spread": "conflict/grad_norm_spread",
}
LAST_CONFLICT_FIGURES = {f"{column}_last": tag for column, tag in CONFLICT_FIGURES.items()}
# ... and the measurement at (or last before) the epoch of the lowest val/loss
AT_BEST_CONFLICT_FIGURES = {f"{c}_at_best": tag for c, tag in CONFLICT_FIGURES.items()}


def figure_columns() -> list[str]:
    """The figures' columns of results.csv, from `metrics.FIGURES`: `{column}_best` and
    `{column}_best_epoch` for a best value, `{column}_final` for a final one, `{column}_at_best`
    for one read at the epoch of the lowest val/loss."""
    return [column for figure in metrics.FIGURES for column, _ in _figure_fields(figure)]


def _figure_fields(figure: Figure) -> Iterator[tuple[str, Callable[[Summary], Any]]]:
    """One figure's results.csv columns, each with how a run's summary gives its value."""
    if figure.best:
        yield f"{figure.column}_best", lambda summary: summary.best(figure)[0]
        yield f"{figure.column}_best_epoch", lambda summary: summary.best(figure)[1]
    if figure.final:
        yield f"{figure.column}_final", lambda summary: summary.final(figure)
    if figure.at_best:
        yield f"{figure.column}_at_best", lambda summary: summary.at_best(figure)


# The representational floor (see mtfilter.nn.floor), per run.
FLOOR_COLUMNS = {
    "floor_bit_error": "bit_error",
    "floor_bit_error_kind": "bit_error_kind",
    "floor_exact_match_error": "exact_match_error",
    "floor_exact_match_error_kind": "exact_match_error_kind",
}


def label_columns() -> list[str]:
    """The multi-label figures' columns (`metrics.LABEL_FIGURES`), where runs record them."""
    return [column for figure in metrics.LABEL_FIGURES for column, _ in _figure_fields(figure)]


# A split's figures with the best epoch's weights (held-out data: summary.json's `splits`):
# results.csv's prefix of each split, e.g. `test_bit_error` (the Hamming loss on the test split)
SPLIT_PREFIXES = {"test": "test", "train": "train_split"}
SPLIT_FIGURES = ("loss", "bit_error", "exact_match_error", "exact_match", "f1", "f1_micro")


def split_columns() -> list[str]:
    """The splits' figures, and `split_epoch`: the epoch whose weights they were read with."""
    figures = [f"{prefix}_{name}" for prefix in SPLIT_PREFIXES.values() for name in SPLIT_FIGURES]
    return [*figures, "split_epoch"]


def columns(rows: list[dict[str, Any]] | None = None) -> list[str]:
    """Every figure of a row, in the order of results.csv after the varied keys; the
    multi-label and split figures only where one of `rows` has them."""
    held_out = [c for c in [*label_columns(), *split_columns()]
                if any(row.get(c) is not None for row in rows or [])]  # fmt: skip
    return ["parameters_total", "parameters_per_task", *figure_columns(), *held_out,
            *FLOOR_COLUMNS, "epochs", "converged", "converged_epoch", "converged_reason",
            "wall_time_s", *CONFLICT_FIGURES, *LAST_CONFLICT_FIGURES,
            *AT_BEST_CONFLICT_FIGURES]  # fmt: skip


def collect(folder: Path, runs: list[str] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """The sweep's varied keys and its rows, one per run and replica (of the runs named, or
    of every run). The varied keys are the grid's and any other a run was given: sweep.json
    holds the grid of the folder's latest sweep, which a narrower `--grid` leaves without keys
    that earlier runs vary, and rows that differ only there must not share a section."""
    sweep = read_json(folder / SWEEP_FILE)
    if sweep is None:
        raise ConfigError(f"{folder} is not a sweep folder (no readable {SWEEP_FILE})")
    keys = grid_keys(sweep.get("grid", {}))
    rows = []
    for name in sweep.get("runs", []) if runs is None else runs:
        run_folder = folder / name
        state = read_json(run_folder / RUN_FILE)
        if state is None:
            continue
        keys.extend(key for key in state.get("values", {}) if key not in keys)
        replicas = summaries.read(run_folder)
        status = state.get("status") or "pending"
        rates, seeds = state.get("learning_rates") or [None], state.get("seeds") or [None]
        if replicas is None:  # never finished: a row per replica without figures
            replicas = [(Summary(status=status, seed=seed, learning_rate=rate), run_folder)
                        for rate in rates for seed in seeds]  # fmt: skip
        for summary, log_dir in replicas:
            rows.append(_row(name, state, summary, log_dir, len(rates) * len(seeds)))
    return keys, rows


def _row(
    name: str, state: dict[str, Any], summary: Summary, log_dir: Path, replicas: int
) -> dict[str, Any]:
    values = dict(state.get("values", {}))
    if summary.seed is not None:
        values[SEED_KEY] = summary.seed
    if summary.learning_rate is not None:  # a replica of stacked learning rates
        values[LEARNING_RATE_KEY] = summary.learning_rate
    model = summary.hparams.get("model") or {}
    for key in ("layout", "hidden_dim"):  # also where the base config sets them: methods on mt
        if model.get(key) is not None:
            values.setdefault(f"model.{key}", model[key])
    conflict = summary.multitask.get("conflict_mean") or {}
    last = summary.multitask.get("conflict_last") or {}
    at_best = summary.multitask.get("conflict_at_best") or {}
    status = summary.status
    if state.get("status") not in (None, "completed") and status == "completed":
        status = state["status"]  # a later attempt of the run is not finished
    figures = {
        column: read(summary)
        for figure in metrics.figures(label_figures=True)
        for column, read in _figure_fields(figure)
    }
    splits = summary.splits or {}
    figures.update({
        f"{prefix}_{name}": splits.get(split, {}).get(name)
        for split, prefix in SPLIT_PREFIXES.items() for name in SPLIT_FIGURES
    })  # fmt: skip
    figures["split_epoch"] = splits.get("epoch")
    floor = summary.floor or {}
    convergence = summary.convergence or {}
    return {
        "run": name,
        **values,
        "status": status,
        "parameters_total": summary.parameters.get("total"),
        "parameters_per_task": summary.parameters.get("per_task"),
        **figures,
        **{column: floor.get(field) for column, field in FLOOR_COLUMNS.items()},
        "epochs": summary.epochs if summary.epochs else None,
        "converged": convergence.get("converged"),
        "converged_epoch": convergence.get("epoch"),
        "converged_reason": convergence.get("converged_reason"),
        "wall_time_s": summary.wall_time_s or None,
        **{column: conflict.get(tag) for column, tag in CONFLICT_FIGURES.items()},
        **{column: last.get(tag) for column, tag in LAST_CONFLICT_FIGURES.items()},
        **{column: at_best.get(tag) for column, tag in AT_BEST_CONFLICT_FIGURES.items()},
        "replicas": replicas,
        "error": summary.error or (state.get("error") if status != "completed" else None),
        "log_dir": str(log_dir),
        "hparams": summary.hparams,  # the run's settings, for keys its sweep does not vary
    }


def write_csv(path: Path, keys: list[str], rows: list[dict[str, Any]]) -> None:
    names = ["run", *keys, "status", *columns(rows), "replicas", "error", "log_dir"]
    names = list(dict.fromkeys(names))  # seed_everything may be both a key and a value
    with replacing(path) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in names})


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else value
