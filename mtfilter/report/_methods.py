"""Methods against the mt - st gap: when a sweep varies keys besides width, layout and seed
(an aggregator, a scalarizer, the task filter, ...), each of their settings on `mt` is a method,
compared per width with plain st and plain mt (the runs where those keys are unset), by seed."""

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from mtfilter.folders import SEED_KEY, short_value
from mtfilter.report._metric import METRICS
from mtfilter.report._stats import (
    Estimate,
    FloorCells,
    _side_figures,
    converged,
    section_keys,
    sort_key,
)


@dataclass
class MethodResult:
    """One method at one width, over the seeds it shares with plain st and mt."""

    width: Any
    method: str  # "st", "mt", or the method's settings, e.g. "aggregator=UPGrad"
    loss: Estimate
    gap_to_st: Estimate | None  # method - st, paired by seed
    gap_closed: Estimate | None  # (mt - method) / (mt - st), paired by seed
    conflict_fraction: float | None  # mean over seeds of each run's mean over training
    mean_cosine: float | None
    norm_spread: float | None
    side: dict[str, Estimate] = field(default_factory=dict)  # loss, bit and exact-match error
    floor: FloorCells | None = None


def compare_methods(
    rows: list[dict[str, Any]], keys: list[str], metric: str, width_key: str, layout_key: str,
    unconverged: str = "exclude", within: str | None = None,
) -> list[MethodResult]:  # fmt: skip
    """Per width: st, mt, then every method; empty when the sweep varies nothing else. Runs
    that did not converge are left out (`unconverged="mark"` keeps them). With `within` (a
    key every run sets, e.g. `model.loss`), each of its values is compared on its own: its
    methods against its st and mt, named with it."""
    others = section_keys(keys, width_key, layout_key, *([within] if within else []))
    if not others:
        return []
    # (within's value, width) -> method -> seed -> row
    table: dict[Any, dict[str, dict[Any, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if not METRICS[metric].measured(row):
            continue
        if unconverged == "exclude" and not converged(row, metric):
            continue
        settings = {k: row.get(k) for k in others if row.get(k) not in (None, "")}
        if settings:
            method = ", ".join(f"{k.rsplit('.', 1)[-1]}={short_value(v)}" for k, v in
                               settings.items())  # fmt: skip
            if row.get(layout_key) != "mt":
                method = f"{row.get(layout_key)} + {method}"
        else:
            method = str(row.get(layout_key))
        group = (str(row.get(within)) if within else "", row.get(width_key))
        table[group][method][row.get(SEED_KEY)] = row
    if not any(m in ("st", "mt") for methods in table.values() for m in methods):
        return []  # no plain st or mt: the other keys are conditions (num_bits, say), not methods
    results = []
    for group in sorted(table, key=lambda g: (g[0], sort_key(g[1]))):
        methods = table[group]
        width = group[1]
        suffix = f" ({within.rsplit('.', 1)[-1]}={group[0]})" if within else ""
        st, mt = methods.get("st", {}), methods.get("mt", {})
        for method in sorted(methods, key=lambda m: (m != "st", m != "mt", m)):
            by_seed = methods[method]
            best = {seed: METRICS[metric].best(row) for seed, row in by_seed.items()}
            paired = [s for s in by_seed if s in st and s in mt]
            gap_to_st = gap_closed = None
            if paired and method != "st":
                gap_to_st = Estimate.of([best[s] - _best(st[s], metric) for s in paired])
                closing = [
                    (_best(mt[s], metric) - best[s]) / (_best(mt[s], metric) - _best(st[s], metric))
                    for s in paired
                    if _best(mt[s], metric) != _best(st[s], metric)
                ]
                gap_closed = Estimate.of(closing) if closing else None
            results.append(
                MethodResult(
                    width=width,
                    method=method + suffix,
                    loss=Estimate.of(list(best.values()), nonnegative=True),
                    gap_to_st=gap_to_st,
                    gap_closed=gap_closed,
                    conflict_fraction=_mean(by_seed, "conflict_fraction"),
                    mean_cosine=_mean(by_seed, "conflict_mean_cosine"),
                    norm_spread=_mean(by_seed, "grad_norm_spread"),
                    side=_side_figures(list(by_seed.values())),
                    floor=FloorCells.of(next(iter(by_seed.values()))),
                )
            )
    return results


def _best(row: dict[str, Any], metric: str) -> float:
    return METRICS[metric].best(row)


def _mean(by_seed: dict[Any, dict[str, Any]], column: str) -> float | None:
    values = [row[column] for row in by_seed.values() if row.get(column) not in (None, "")]
    return sum(values) / len(values) if values else None
