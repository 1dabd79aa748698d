"""`mtfilter report SWEEP_DIR`: a sweep's runs as results.csv, the seed table's shape with
confidence intervals, verdicts and convergence marks in results.md, and plots."""

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mtfilter.errors import ConfigError
from mtfilter.folders import REPORT_LOCK, SWEEP_FILE, exclusive, read_json
from mtfilter.report._against import read_results, write_against
from mtfilter.report._collect import collect, write_csv
from mtfilter.report._contrast import Contrast, contrast
from mtfilter.report._include import check_include, not_swept
from mtfilter.report._include import include as include_runs
from mtfilter.report._markdown import write_markdown
from mtfilter.report._methods import MethodResult, compare_methods
from mtfilter.report._metric import METRICS, TEST_METRICS, MetricName
from mtfilter.report._select import Choice, select
from mtfilter.report._stats import Estimate, Report, WidthComparison, compare, verdict

__all__ = [
    "Choice",
    "Contrast",
    "Estimate",
    "MethodResult",
    "WidthComparison",
    "compare",
    "compare_methods",
    "pick",
    "report",
    "verdict",
]


def report(
    folder: str | Path,
    metric: MetricName | None = None,
    width_key: str | None = None,
    layout_key: str | None = None,
    select_key: str | list[str] | None = None,
    selection_seeds: list[int] | None = None,
    unconverged: Literal["exclude", "mark"] | None = None,
    width_per: str | None = None,
    contrast_key: str | None = None,
    include: list[dict[str, Any]] | None = None,
    against: Path | None = None,
) -> list[Path]:
    """Write results.csv, results.md and the plots of a sweep folder; returns their paths.

    Options left unset come from the sweep's own `report` settings (its sweep.json), else
    the defaults below.

    Args:
        folder: The sweep's folder.
        metric: Which best figure the table and plots compare: `val` (the full-dataset loss in
            eval mode, every epoch; the default), `train` (the epoch mean of the training loss),
            `batch` (the lowest loss of a single training batch: the original's figure), or
            the figures that mean the same under every loss: `bit_error` (share of wrong bits)
            and `exact_match_error` (share of inputs with a wrong bit). Every table shows the
            loss, both errors and the representational floor beside it.
        width_key: The varied key that is the model width (default `model.hidden_dim`).
        layout_key: The varied key holding `st` and `mt` (default `model.layout`).
        select_key: A varied key (e.g. `model.optimizer.init_args.lr`), or several, of which
            one value is chosen per width and layout: the one with the lowest mean best `metric`
            on `selection_seeds` (ties: the lowest mean best loss). A choice at the lowest or
            highest value tried is marked: the optimum may lie beyond.
        selection_seeds: The seeds the choice is made on; the table then reports the chosen
            value on the other seeds. Default: all seeds (chosen and reported on the same).
        unconverged: `exclude` (the default): runs that did not converge are counted and
            named but left out of every figure and comparison, which are then optima only;
            `mark`: kept and marked (fixed-budget studies, where no figure is an optimum).
        width_per: A varied key (e.g. `data.num_bits`) the gap plot divides each section's
            widths by, so that sections of different sizes share one axis (hidden / num_bits).
        contrast_key: A varied key (e.g. `model.loss`) whose values are compared at every
            width and layout, paired by seed: which gives the better optimum where.
        include: Runs of other sweep folders to report beside this one's, each
            `{folder: PATH, where: {KEY: VALUE}}` (the runs whose settings match `where`;
            `null`: not set), e.g. a series another study already ran. They are read from
            their own folders and appear in results.csv; keys one folder varies and the other
            does not are filled from the runs' recorded settings. A folder with no sweep in
            it yet is left out, and results.md says so.
        against: Another results.csv of the same study (a committed one, say) to compare this
            folder's answer with, point by point, in against.md: the picks, each layout's
            figure, mt - st and what its interval says, the transition width, the contrast
            and the methods, with what moved named (see `read_results`).
    """
    folder = Path(folder)
    settings = _settings(folder, metric=metric, width_key=width_key, layout_key=layout_key,
                         select_key=select_key, selection_seeds=selection_seeds,
                         unconverged=unconverged, width_per=width_per,
                         contrast_key=contrast_key, include=include, against=against)  # fmt: skip
    if not (folder / SWEEP_FILE).is_file():  # before a lock file is made there
        collect(folder)  # raises, naming the folder
    # One report at a time per folder (two sweeps over it that end together), each file
    # replaced whole: the files are always one report's.
    with exclusive(folder / REPORT_LOCK):
        return _write(folder, settings)


def _write(folder: Path, settings: "_Settings") -> list[Path]:
    # the other results first: a file that is not one is refused before anything is written
    against = None if settings.against is None else read_results(settings.against)
    keys, rows = include_runs(*collect(folder), settings.include)
    left_out = not_swept(settings.include)
    for other in left_out:
        print(f"report: {other} has no sweep yet (no {SWEEP_FILE}); its runs are left out",
              file=sys.stderr)  # fmt: skip
    written = [folder / "results.csv", folder / "results.md"]
    write_csv(written[0], keys, rows)
    table = _analyse(folder, keys, rows, settings, left_out)
    write_markdown(written[1], table)
    if settings.against is not None and against is not None:
        old = _analyse(folder, *against, settings, [])
        path, summary = write_against(folder / "against.md", old, table, settings.against)
        print(f"report: against {settings.against}: {summary}", file=sys.stderr)
        written.append(path)
    from mtfilter.report._plots import plot_all  # matplotlib: only when plotting

    return written + plot_all(table)


def _analyse(
    folder: Path, keys: list[str], rows: list[dict[str, Any]], settings: "_Settings",
    left_out: list[str],
) -> Report:  # fmt: skip
    """The picks, sections, contrasts and methods of a sweep's rows: what results.md shows."""
    width_key, layout_key = settings.width_key, settings.layout_key
    choices: list[Choice] = []
    every_row = rows
    chosen = settings.metric
    select_keys = [k for k in settings.select_keys if k in keys]
    if select_keys:  # chosen on the protocol's own figure, never on the test split
        rows, choices = select(rows, keys, settings.select_metric, select_keys, width_key,
                               layout_key, settings.selection_seeds)  # fmt: skip
        keys = [k for k in keys if k not in select_keys]
    sections = compare(rows, keys, chosen, width_key, layout_key,
                       unconverged=settings.unconverged)  # fmt: skip
    contrast_key = settings.contrast_key if settings.contrast_key in keys else None
    contrasts = (
        []
        if contrast_key is None
        else contrast(rows, keys, chosen, contrast_key, width_key, layout_key, settings.unconverged)
    )
    # a key compared on its own is not a method: every run sets it
    method_keys = [k for k in keys if k != contrast_key]
    methods = compare_methods(rows, method_keys, chosen, width_key, layout_key,
                              settings.unconverged, within=contrast_key)  # fmt: skip
    if methods:  # their own table; the seed table's shape where both st and mt ran
        sections = {
            s: c for s, c in sections.items() if all(v is None for v in s) or _both_layouts(c)
        } or sections
    table = Report(folder=folder, keys=keys, rows=rows, metric=chosen,
                   select_metric=settings.select_metric, width_key=width_key,
                   layout_key=layout_key, sections=sections, methods=methods, choices=choices,
                   select_key=select_keys or None, unconverged=settings.unconverged,
                   every_row=every_row, width_per=settings.width_per,
                   contrast_key=contrast_key, contrasts=contrasts,
                   not_included=left_out)  # fmt: skip
    return table


def pick(folder: str | Path, runs: list[str] | None = None) -> list[Choice]:
    """The choices the report of a sweep folder makes (its `select_key` on its
    `selection_seeds`), from the runs named (default: all), without writing anything: what
    the sweep's select-then-confirm protocol acts on."""
    folder = Path(folder)
    settings = _settings(folder)
    keys, rows = collect(folder, runs)
    select_keys = [k for k in settings.select_keys if k in keys]
    if not select_keys:
        return []
    return select(rows, keys, settings.select_metric, select_keys, settings.width_key,
                  settings.layout_key, settings.selection_seeds)[1]  # fmt: skip


@dataclass
class _Settings:
    metric: str
    select_metric: str  # what a choice minimises: a sweep's `select.metric`, else `metric`
    width_key: str
    layout_key: str
    select_keys: list[str]
    selection_seeds: list[int] | None
    unconverged: str
    width_per: str | None
    contrast_key: str | None
    include: list[dict[str, Any]]
    against: Path | None


def _settings(folder: Path, **given: Any) -> _Settings:
    """The report's options: those given, else the sweep's own `report` settings (its
    sweep.json), else the defaults."""
    saved: dict[str, Any] = (read_json(folder / SWEEP_FILE) or {}).get("report") or {}

    def option(name: str, default: Any) -> Any:
        value = given.get(name)
        return value if value is not None else saved.get(name, default)

    metric = option("metric", "val")
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    # a choice never reads the test split: without a recorded `select.metric`, a report
    # compared on a test figure chooses on its validation counterpart
    select_metric = option("select_metric", metric.removeprefix("test_"))
    if select_metric in TEST_METRICS:
        raise ConfigError(f"select_metric {select_metric} reads the test split: no choice may")
    select_key = option("select_key", None)
    return _Settings(
        metric=metric,
        select_metric=select_metric,
        width_key=option("width_key", "model.hidden_dim"),
        layout_key=option("layout_key", "model.layout"),
        select_keys=[select_key] if isinstance(select_key, str) else list(select_key or []),
        selection_seeds=option("selection_seeds", None),
        unconverged=option("unconverged", "exclude"),
        width_per=option("width_per", None),
        contrast_key=option("contrast_key", None),
        include=option("include", None) or [],
        against=None if option("against", None) is None else Path(option("against", None)),
    )


# What a sweep config's `report:` may set: `report`'s own options, less the folder.
REPORT_OPTIONS = tuple(name for name in inspect.signature(report).parameters if name != "folder")


def check_report_settings(settings: dict[str, Any]) -> None:
    """Refuse a sweep's `report:` settings that the report would not read (a misspelt key, a
    malformed `include` entry)."""
    unknown = [key for key in settings if key not in REPORT_OPTIONS]
    if unknown:
        raise ConfigError(
            f"report: {unknown[0]!r} is not a report option; they are {', '.join(REPORT_OPTIONS)}"
        )
    for spec in settings.get("include") or []:
        check_include(spec)


def _both_layouts(comparisons: list[WidthComparison]) -> bool:
    return any(c.gap is not None for c in comparisons)
