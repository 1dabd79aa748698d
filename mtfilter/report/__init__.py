"""`mtfilter report SWEEP_DIR`: a sweep's runs as results.csv, the seed table's shape with
confidence intervals and verdicts in results.md, and plots."""

from pathlib import Path
from typing import Literal

from mtfilter.report._collect import collect, write_csv
from mtfilter.report._markdown import write_markdown
from mtfilter.report._methods import MethodResult, compare_methods
from mtfilter.report._plots import plot_all
from mtfilter.report._stats import Estimate, WidthComparison, compare, verdict

__all__ = [
    "Estimate",
    "MethodResult",
    "WidthComparison",
    "compare",
    "compare_methods",
    "report",
    "verdict",
]


def report(
    folder: str | Path,
    metric: Literal["val", "train"] = "val",
    width_key: str = "model.hidden_dim",
    layout_key: str = "model.layout",
) -> list[Path]:
    """Write results.csv, results.md and the plots of a sweep folder; returns their paths.

    Args:
        folder: The sweep's folder.
        metric: Which best loss the table and plots compare: `val` (the full-dataset pass in
            eval mode, every epoch) or `train` (the epoch mean of the training loss).
        width_key: The varied key that is the model width (x axis of the plots).
        layout_key: The varied key holding `st` and `mt`.
    """
    folder = Path(folder)
    keys, rows = collect(folder)
    written = [folder / "results.csv", folder / "results.md"]
    write_csv(written[0], keys, rows)
    sections = compare(rows, keys, metric, width_key, layout_key)
    methods = compare_methods(rows, keys, metric, width_key, layout_key)
    if methods:  # their own table; the seed table's shape is for plain st and mt
        sections = {s: c for s, c in sections.items() if all(v is None for v in s)} or sections
    write_markdown(written[1], folder, keys, rows, sections, metric, width_key, layout_key,
                   methods)  # fmt: skip
    written += plot_all(folder, sections, rows, metric, width_key.rsplit(".", 1)[-1],
                        layout_key, width_key, methods)  # fmt: skip
    return written
