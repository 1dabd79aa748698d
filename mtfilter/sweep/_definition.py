"""What a sweep's folder records of its definition (sweep.json, which the report and a second run
read back): the grid, the settings, the report's settings checked by name."""

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Union

from jsonargparse import Namespace

from mtfilter.folders import SEED_KEY, Grid
from mtfilter.sweep._protocol import Selection

# A config value as YAML writes it. Not `Any`: jsonargparse would read a `class_path` mapping as
# a class to fill in with its defaults, where the sweep must pass it on as written.
Value = Union[bool, int, float, str, None, dict, list]  # noqa: UP007 (jsonargparse needs Union)


def report_settings(report: dict[str, Any], select: Selection | None) -> dict[str, Any]:
    """The report's settings as sweep.json keeps them, checked by name; the protocol sets its
    own metric (unless given), the keys it chooses and its selection seeds."""
    from mtfilter.report import check_report_settings, not_swept  # matplotlib-free

    check_report_settings(report)
    for other in not_swept(report.get("include") or []):  # said now, not after the training
        print(f"note: the report includes {other}, which has no sweep yet; its runs are left "
              "out of the report until its sweep has run", file=sys.stderr)  # fmt: skip
    if select is None:
        return report
    # the picks always minimise `select.metric`, whatever figure the report compares
    return {
        "metric": select.metric, **report, "select_metric": select.metric,
        "select_key": list(select.candidates), "selection_seeds": select.selection_seeds,
    }  # fmt: skip


# The convergence rule of studies compared on a loss-free error (see `with_floor_stop`).
FLOOR_STOP_KEY = "convergence.stop_at_floor"
LOSS_FREE_METRICS = ("bit_error", "exact_match_error")


def with_floor_stop(settings: dict[str, Any], metric: str | None) -> dict[str, Any]:
    """A study compared on bit error or exact-match error ends each replica where both reach
    the model's floor, which no later epoch can pass (`ConvergenceSchedule.stop_at_floor`);
    its settings can say otherwise (`convergence.stop_at_floor: false`)."""
    if metric in LOSS_FREE_METRICS and FLOOR_STOP_KEY not in settings:
        return {**settings, FLOOR_STOP_KEY: True}
    return settings


def recorded_grid(grid: Grid | list[Grid], select: Selection) -> list[Grid]:
    """The grid as sweep.json records it: the protocol's keys and seeds as axes too, so the
    report knows every key that varies."""
    grids = grid if isinstance(grid, list) else [grid]
    seeds = [*select.selection_seeds, *select.seeds]
    return [{**one, **select.candidates, SEED_KEY: seeds} for one in grids]


def plain(value: Any) -> Any:
    """jsonargparse hands nested mappings over as Namespaces; the sweep works on plain data."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def definition(
    base: str, base_path: Path, grid: Grid | list[Grid], settings: dict[str, Any],
    stacking: dict[str, Any], report: dict[str, Any], select: Selection | None,
) -> dict[str, Any]:  # fmt: skip
    """sweep.json's content: what the report and a second run of the sweep read back."""
    return {
        "base": base, "base_config": base_path.read_text(),
        "grid": grid if select is None else recorded_grid(grid, select),
        "settings": settings, **stacking, "report": report,
        "select": None if select is None else plain(asdict(select)),
    }  # fmt: skip
