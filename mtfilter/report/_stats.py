"""Means, 95% confidence intervals over seeds, and the paired mt - st gap, per width."""

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats

from mtfilter.folders import SEED_KEY
from mtfilter.report._metric import METRICS, SIDE_FIGURES, Metric

LAYOUTS = ("st", "mt")


# Fewer seeds give no interval: with two, the t-interval's half-width is 12.7 standard errors,
# wider than anything it could tell apart here.
MIN_SEEDS_FOR_INTERVAL = 3


@dataclass
class Estimate:
    """A mean over seeds with its 95% t-interval (`low` and `high` are None below
    `MIN_SEEDS_FOR_INTERVAL` seeds)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @classmethod
    def of(cls, values: list[float], nonnegative: bool = False) -> "Estimate":
        """The mean of `values` and its interval; with `nonnegative` (a loss) the interval is cut
        at 0, which keeps its coverage since the true mean cannot lie below."""
        n = len(values)
        mean = statistics.fmean(values)
        if n < MIN_SEEDS_FOR_INTERVAL:
            return cls(mean, None, None, n)
        sem = statistics.stdev(values) / math.sqrt(n)
        if sem == 0:
            return cls(mean, mean, mean, n)
        low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
        return cls(mean, max(low, 0.0) if nonnegative else low, high, n)


@dataclass
class EpochRange:
    """Where the seeds' best epochs lie: the median (one of them) and the range."""

    median: int
    low: int
    high: int

    @classmethod
    def of(cls, epochs: list[int]) -> "EpochRange":
        return cls(statistics.median_low(epochs), min(epochs), max(epochs))


@dataclass
class WidthComparison:
    """One width of one section: each layout's best figure and epoch, the paired gap, the
    figures shown beside it and the representational floor."""

    width: Any
    value: dict[str, Estimate]  # layout -> best of the compared figure over seeds
    epoch: dict[str, EpochRange]  # layout -> the seeds' best epochs
    parameters: dict[str, float]  # layout -> parameters of one model
    gap: Estimate | None  # mt - st over the seeds both have
    unconverged: dict[str, int] = field(default_factory=dict)  # layout -> seeds not converged
    # layout -> SIDE_FIGURES name -> its best over seeds (loss, bit error, exact-match error)
    side: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    # layout -> the floor's (bit error, exact-match error) and whether each is exact
    floor: dict[str, "FloorCells"] = field(default_factory=dict)
    gaps_by_seed: dict[Any, float] = field(default_factory=dict)  # mt - st of each seed
    # layout -> mean over seeds of the conflict measurement at the epoch of the lowest val loss
    # (or, for runs that did not record it, the last one): (conflicting pairs, cosine, "best"
    # or "end")
    conflict: dict[str, tuple[float | None, float | None, str]] = field(default_factory=dict)


@dataclass
class FloorCells:
    """A layout's representational floor at one width, as results.csv records it."""

    bit_error: float
    exact_match_error: float
    bit_error_exact: bool
    exact_match_error_exact: bool

    @classmethod
    def of(cls, row: dict[str, Any]) -> "FloorCells | None":
        if row.get("floor_bit_error") in (None, ""):
            return None
        return cls(
            float(row["floor_bit_error"]),
            float(row["floor_exact_match_error"]),
            row.get("floor_bit_error_kind") == "exact",
            row.get("floor_exact_match_error_kind") == "exact",
        )


@dataclass
class Report:
    """What results.md and the plots are made of: the sweep's rows and their comparisons."""

    folder: Path
    keys: list[str]  # the varied keys (the chosen one of `select_key` left out)
    rows: list[dict[str, Any]]  # one per run and seed (the chosen setting's, with a selection)
    metric: str  # a name of METRICS: the figure compared
    width_key: str
    layout_key: str
    sections: dict[tuple, list["WidthComparison"]]  # the other keys' values -> widths
    methods: list[Any] = field(default_factory=list)  # MethodResult
    choices: list[Any] = field(default_factory=list)  # Choice
    select_key: list[str] | None = None
    unconverged: str = "exclude"  # see `compare`
    every_row: list[dict[str, Any]] = field(default_factory=list)  # before any selection
    width_per: str | None = None  # a varied key the gap plot divides widths by
    contrast_key: str | None = None  # a varied key whose values are compared point by point
    contrasts: list[Any] = field(default_factory=list)  # Contrast
    not_included: list[str] = field(default_factory=list)  # include folders with no sweep yet
    select_metric: str | None = None  # what the choices minimised (default: `metric`)

    @property
    def compared(self) -> Metric:
        return METRICS[self.metric]

    @property
    def width_name(self) -> str:
        return self.width_key.rsplit(".", 1)[-1]

    def section_name(self, section: tuple) -> str:
        """The settings a section sets, e.g. `accumulate_gradients=False`; "" for the one that
        sets none (every other varied key left at its base value)."""
        others = section_keys(self.keys, self.width_key, self.layout_key)
        return ", ".join(
            f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(others, section, strict=True)
            if v is not None
        )  # fmt: skip


def section_keys(keys: list[str], width_key: str, layout_key: str, *excluded: str) -> list[str]:
    """The varied keys whose values split a sweep into sections: all but width, layout and
    seed (and `excluded`)."""
    return [k for k in keys if k not in (width_key, layout_key, SEED_KEY, *excluded)]


def compare(
    rows: list[dict[str, Any]], keys: list[str], metric: str, width_key: str, layout_key: str,
    seed_key: str = SEED_KEY, unconverged: str = "exclude",
) -> dict[tuple, list[WidthComparison]]:  # fmt: skip
    """Completed rows grouped into sections (the other varied keys' values) and widths. Rows of
    runs that did not converge are counted (`unconverged`) and, with `unconverged="exclude"`,
    left out of the figures, which are then optima only; `"mark"` keeps them (a fixed-budget
    study's figures, none an optimum)."""
    compared = METRICS[metric]
    others = section_keys(keys, width_key, layout_key, seed_key)
    table: dict[tuple, dict[Any, dict[Any, dict[Any, dict[str, Any]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(dict))
    )
    for row in rows:
        if not compared.measured(row):
            continue
        section = tuple(hashable(row.get(k)) for k in others)
        layout = row.get(layout_key)
        table[section][row.get(width_key)][layout][row.get(seed_key)] = row
    result: dict[tuple, list[WidthComparison]] = {}
    for section, widths in table.items():
        comparisons = []
        for width in sorted(widths, key=sort_key):
            by_layout = widths[width]
            value, epoch, parameters, late, side, floor = {}, {}, {}, {}, {}, {}
            for layout, all_seeds in list(by_layout.items()):
                late[layout] = sum(not converged(r, metric) for r in all_seeds.values())
                first = next(iter(all_seeds.values()))
                parameters[layout] = first["parameters_total"]
                cells = FloorCells.of(first)
                if cells is not None:
                    floor[layout] = cells
                seeds = {s: r for s, r in all_seeds.items()
                         if unconverged == "mark" or converged(r, metric)}  # fmt: skip
                by_layout[layout] = seeds
                if not seeds:
                    continue
                value[layout] = Estimate.of([compared.best(r) for r in seeds.values()],
                                            nonnegative=True)  # fmt: skip
                epochs = [compared.best_epoch(r) for r in seeds.values()]
                if None not in epochs:
                    epoch[layout] = EpochRange.of(epochs)
                side[layout] = _side_figures(list(seeds.values()))
            gap, by_seed = None, {}
            if all(by_layout.get(layout) for layout in LAYOUTS):
                common = sorted(set(by_layout["st"]) & set(by_layout["mt"]), key=str)
                by_seed = {s: compared.best(by_layout["mt"][s]) - compared.best(by_layout["st"][s])
                           for s in common}  # fmt: skip
                if common:
                    gap = Estimate.of(list(by_seed.values()))
            conflict = {layout: _conflict(seeds)
                        for layout, seeds in by_layout.items() if seeds}  # fmt: skip
            comparisons.append(WidthComparison(width, value, epoch, parameters, gap, late, side,
                                               floor, by_seed, conflict))  # fmt: skip
        result[section] = comparisons
    return result


def _mean_of(rows: dict[Any, dict[str, Any]], column: str) -> float | None:
    values = [float(r[column]) for r in rows.values() if r.get(column) not in (None, "")]
    return statistics.fmean(values) if values else None


@dataclass
class Transition:
    """Where mt stops trailing st, in one section. `width`: the smallest width from which, at
    it and every wider width tried, the paired 95% interval of mt - st covers 0 or lies below
    (with fewer than 3 seeds: the mean gap is at most 0). `per_seed`: for each seed, the
    smallest width from which its mt is no worse than its st at every wider width tried."""

    width: Any | None
    per_seed: dict[Any, Any]

    @property
    def seed_range(self) -> EpochRange | None:
        widths = [w for w in self.per_seed.values() if w is not None]
        return EpochRange.of(widths) if widths and len(widths) == len(self.per_seed) else None


def transition(comparisons: list[WidthComparison]) -> Transition | None:
    """mt's transition to st's level in one section (see `Transition`); None without gaps."""
    widths = [c for c in comparisons if c.gap is not None and isinstance(c.width, int | float)]
    if not widths:
        return None

    def within(gap: Estimate) -> bool:
        return gap.low <= 0 if gap.low is not None else gap.mean <= 0

    def first_from(flags: list[bool]) -> Any | None:
        start = None
        for c, ok in zip(widths, flags, strict=True):
            start = (start if start is not None else c.width) if ok else None
        return start

    seeds = set().union(*(c.gaps_by_seed for c in widths))
    per_seed = {
        seed: first_from([c.gaps_by_seed.get(seed, float("inf")) <= 0 for c in widths])
        for seed in sorted(seeds, key=str)
    }
    return Transition(first_from([within(c.gap) for c in widths if c.gap]), per_seed)


def _conflict(seeds: dict[Any, dict[str, Any]]) -> tuple[float | None, float | None, str]:
    """Conflicting pairs and mean cosine over these seeds, at their best epochs where every
    seed recorded them there (runs from before that figure existed recorded only the last)."""
    at_best = all(r.get("conflict_fraction_at_best") is not None for r in seeds.values())
    suffix, when = ("_at_best", "best") if at_best else ("_last", "end")
    fraction = _mean_of(seeds, f"conflict_fraction{suffix}")
    return fraction, _mean_of(seeds, f"conflict_mean_cosine{suffix}"), when


def _side_figures(rows: list[dict[str, Any]]) -> dict[str, Estimate]:
    """The loss and the loss-free errors of these rows, each over the rows that have it."""
    figures = {}
    for name in SIDE_FIGURES:
        values = [METRICS[name].best(r) for r in rows if METRICS[name].best(r) not in (None, "")]
        if values:
            figures[name] = Estimate.of([float(v) for v in values], nonnegative=True)
    return figures


# Without a convergence check in the run, a best epoch in the last tenth of the epochs counts as
# not converged: the loss was still falling when training ended.
LATE_FRACTION = 0.1


def converged(row: dict[str, Any], metric: str) -> bool:
    """Whether a run converged: its convergence check's verdict where it had one, else whether
    its best epoch lies before the last tenth of its epochs."""
    if row.get("converged") is not None:
        return bool(row["converged"])
    best, epochs = METRICS[metric].best_epoch(row), row.get("epochs")
    if best is None or not epochs:
        return False
    return best <= epochs * (1 - LATE_FRACTION)


def verdict(gap: Estimate) -> str:
    """Is mt worse than st, by how much, with what confidence."""
    if gap.low is None or gap.high is None:
        seeds = "one seed" if gap.n == 1 else f"{gap.n} seeds"
        return (f"mt - st = {gap.mean:+.4f} ({seeds}: no confidence interval below "
                f"{MIN_SEEDS_FOR_INTERVAL})")  # fmt: skip
    interval = f"95% CI {gap.low:+.4f} to {gap.high:+.4f}, {gap.n} seeds"
    if gap.low > 0:
        return f"mt is worse than st by {gap.mean:.4f} ({interval})"
    if gap.high < 0:
        return f"mt is better than st by {-gap.mean:.4f} ({interval})"
    return f"no clear difference: mt - st = {gap.mean:+.4f} ({interval})"


def hashable(value: Any) -> Any:
    """Sections are keyed by the other axes' values; a mapping or list (an optimizer, say)
    becomes its compact JSON text."""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def sort_key(value: Any) -> tuple:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def section_sort_key(section: tuple) -> tuple:
    """Sections in order, whatever their values: a key set for some points only (an
    aggregator, say) is None elsewhere, which Python will not compare with a name."""
    return tuple(sort_key(value) for value in section)
