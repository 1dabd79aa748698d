"""`mtfilter report SWEEP_DIR`: a sweep's runs as results.csv, the seed table's shape with
confidence intervals, verdicts and convergence marks in results.md, and plots."""

from pathlib import Path
from typing import Any, Literal

from mtfilter.folders import SWEEP_FILE, read_json
from mtfilter.report._collect import collect, write_csv
from mtfilter.report._markdown import write_markdown
from mtfilter.report._methods import MethodResult, compare_methods
from mtfilter.report._plots import plot_all
from mtfilter.report._select import Choice, select
from mtfilter.report._stats import Estimate, Report, WidthComparison, compare, verdict

__all__ = [
    "Choice",
    "Estimate",
    "MethodResult",
    "WidthComparison",
    "compare",
    "compare_methods",
    "report",
    "verdict",
]

Metric = Literal["val", "train", "batch"]


def report(
    folder: str | Path,
    metric: Metric | None = None,
    width_key: str | None = None,
    layout_key: str | None = None,
    select_key: str | None = None,
    selection_seeds: list[int] | None = None,
) -> list[Path]:
    """Write results.csv, results.md and the plots of a sweep folder; returns their paths.

    Options left unset come from the sweep's own `report` settings (its sweep.json), else
    the defaults below.

    Args:
        folder: The sweep's folder.
        metric: Which best loss the table and plots compare: `val` (the full-dataset pass in
            eval mode, every epoch; the default), `train` (the epoch mean of the training loss)
            or `batch` (the lowest loss of a single training batch: the original's figure).
        width_key: The varied key that is the model width (default `model.hidden_dim`).
        layout_key: The varied key holding `st` and `mt` (default `model.layout`).
        select_key: A varied key (e.g. `model.optimizer`) of which one value is chosen per
            width and layout: the one with the lowest mean best loss on `selection_seeds`.
        selection_seeds: The seeds the choice is made on; the table then reports the chosen
            value on the other seeds. Default: all seeds (chosen and reported on the same).
    """
    folder = Path(folder)
    saved: dict[str, Any] = (read_json(folder / SWEEP_FILE) or {}).get("report") or {}
    metric = metric or saved.get("metric", "val")
    width_key = width_key or saved.get("width_key", "model.hidden_dim")
    layout_key = layout_key or saved.get("layout_key", "model.layout")
    select_key = select_key or saved.get("select_key")
    if selection_seeds is None:
        selection_seeds = saved.get("selection_seeds")
    keys, rows = collect(folder)
    written = [folder / "results.csv", folder / "results.md"]
    write_csv(written[0], keys, rows)
    choices: list[Choice] = []
    if select_key is not None and select_key in keys:
        rows, choices = select(rows, keys, metric, select_key, width_key, layout_key,
                               selection_seeds)  # fmt: skip
        keys = [k for k in keys if k != select_key]
    sections = compare(rows, keys, metric, width_key, layout_key)
    methods = compare_methods(rows, keys, metric, width_key, layout_key)
    if methods:  # their own table; the seed table's shape where both st and mt ran
        sections = {
            s: c for s, c in sections.items() if all(v is None for v in s) or _both_layouts(c)
        } or sections
    table = Report(folder=folder, keys=keys, rows=rows, metric=metric, width_key=width_key,
                   layout_key=layout_key, sections=sections, methods=methods, choices=choices,
                   select_key=select_key)  # fmt: skip
    write_markdown(written[1], table)
    return written + plot_all(table)


def _both_layouts(comparisons: list[WidthComparison]) -> bool:
    return any(c.gap is not None for c in comparisons)
