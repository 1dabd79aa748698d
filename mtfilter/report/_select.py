"""Choosing one setting per point (a learning rate, say) on some seeds and reporting it on the
others: the figure of a point is then not biased by having picked the luckiest setting. The
sweep's select-then-confirm protocol picks with the same function, so its picks and the
report's always agree."""

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from mtfilter.folders import SEED_KEY, short_value
from mtfilter.report._metric import METRICS, SIDE_FIGURES
from mtfilter.report._stats import FloorCells, converged, hashable, section_keys, sort_key

DIVERGED = "diverged"


@dataclass
class Choice:
    """The setting chosen for one point (section, width, layout) and what it was chosen from."""

    section: tuple
    width: Any
    layout: Any
    chosen: dict[str, Any]  # each selected key -> its chosen value
    means: dict[str, float]  # each candidate (short text) -> mean figure on the selection seeds
    seeds: int  # selection seeds per candidate
    unconverged: int  # the chosen candidate's selection runs that did not converge
    held_out: bool  # reported on other seeds than those it was chosen on
    point: dict[str, Any] = field(default_factory=dict)  # the point's own keys and values
    section_name: str = ""  # the point's other settings, e.g. `loss=bce`
    # selected keys whose chosen value is the lowest ("low") or highest ("high") value tried
    edges: dict[str, str] = field(default_factory=dict)
    tried: dict[str, list[Any]] = field(default_factory=dict)  # each key -> the values tried
    # the chosen candidate on the selection seeds: mean best loss, bit and exact-match error
    figures: dict[str, float] = field(default_factory=dict)
    floor: FloorCells | None = None

    @property
    def tied_at_edge(self) -> bool:
        """Whether a chosen value is the lowest or highest numeric value tried though not
        marked as an edge: it ties with the value inside on the compared figure, so an optimum
        lies inside and only the tie-break (the loss) chose the edge."""
        for key, value in self.chosen.items():
            numbers = [v for v in self.tried.get(key, []) if _is_number(v)]
            if (
                key not in self.edges
                and len(numbers) >= 2
                and value in (min(numbers), max(numbers))
            ):
                return True
        return False

    def text(self) -> str:
        """The chosen setting, e.g. `lr=0.003`."""
        return ", ".join(f"{k.rsplit('.', 1)[-1]}={short_value(v)}" for k, v in self.chosen.items())


def select(
    rows: list[dict[str, Any]], keys: list[str], metric: str, select_keys: str | list[str],
    width_key: str, layout_key: str, selection_seeds: list[int] | None,
) -> tuple[list[dict[str, Any]], list[Choice]]:  # fmt: skip
    """Per point, the values of `select_keys` with the lowest mean best `metric` on
    `selection_seeds` (all seeds if None), ties broken by the mean best loss; a candidate whose
    run diverged on any selection seed is never chosen. Returns the rows of the chosen values
    on the other seeds (or on the same ones when no other seed ran) and the choices."""
    chosen_keys = [select_keys] if isinstance(select_keys, str) else list(select_keys)
    compared, loss = METRICS[metric], METRICS["val"]
    others = section_keys(keys, width_key, layout_key, *chosen_keys)
    points: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        section = tuple(hashable(row.get(k)) for k in others)
        points[(section, row.get(width_key), row.get(layout_key))].append(row)
    kept, choices = [], []
    for (section, width, layout), point_rows in points.items():
        picking = [r for r in point_rows
                   if _counts(r, metric) and _selecting(r, selection_seeds)]  # fmt: skip
        by_value: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for row in picking:
            by_value[_candidate(row, chosen_keys)].append(row)
        if not by_value:
            continue
        score = {v: (_mean(rs, compared.best), _mean(rs, loss.best)) for v, rs in by_value.items()}
        finite = [v for v in score if math.isfinite(score[v][0])]
        if not finite:
            continue  # every candidate diverged: nothing to choose
        best = min(finite, key=score.__getitem__)
        chosen_rows = [r for r in point_rows if _candidate(r, chosen_keys) == best]
        reported = [r for r in chosen_rows if r not in picking and _counts(r, metric)]
        held_out = bool(reported) and selection_seeds is not None
        kept += reported if held_out else [r for r in chosen_rows if r in picking]
        first = chosen_rows[0]
        tried = {k: _tried(by_value, chosen_keys.index(k), picking, k) for k in chosen_keys}
        choices.append(
            Choice(
                section=section,
                width=width,
                layout=layout,
                chosen={k: first.get(k) for k in chosen_keys},
                means={_text(by_value[v][0], chosen_keys): score[v][0] for v in by_value},
                seeds=min(len(rs) for rs in by_value.values()),
                unconverged=sum(
                    not converged(r, metric) for r in by_value[best] if r.get("status") != DIVERGED
                ),
                held_out=held_out,
                point={
                    **{k: first.get(k) for k in others},
                    width_key: width,
                    layout_key: layout,
                },
                edges=_edges(best, chosen_keys, tried, {v: m for v, (m, _) in score.items()}),
                section_name=", ".join(
                    f"{k.rsplit('.', 1)[-1]}={v}"
                    for k, v in zip(others, section, strict=True)
                    if v is not None
                ),  # fmt: skip
                tried=tried,
                figures={name: _mean(by_value[best], METRICS[name].best) for name in SIDE_FIGURES},
                floor=next((f for f in map(FloorCells.of, chosen_rows) if f is not None), None),
            )
        )
    return kept, choices


def _selecting(row: dict[str, Any], selection_seeds: list[int] | None) -> bool:
    return selection_seeds is None or row.get(SEED_KEY) in selection_seeds


def _counts(row: dict[str, Any], metric: str) -> bool:
    """A row that says something about its candidate: completed with a figure, or diverged."""
    if row.get("status") == DIVERGED:
        return True
    return METRICS[metric].measured(row)


def _mean(rows: list[dict[str, Any]], figure: Any) -> float:
    """Mean over the rows; a diverged row makes its candidate the worst (infinite)."""
    values = [figure(r) for r in rows]
    if any(r.get("status") == DIVERGED for r in rows) or any(v in (None, "") for v in values):
        return math.inf
    return statistics.fmean(float(v) for v in values)


def _candidate(row: dict[str, Any], keys: list[str]) -> tuple:
    return tuple(hashable(row.get(k)) for k in keys)


def _text(row: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(short_value(row.get(k)) for k in keys)


def _tried(by_value: dict[tuple, Any], index: int, rows: list[dict[str, Any]], key: str) -> list:
    """The distinct values of `key` (position `index` of a candidate) tried, in order."""
    raw = {hashable(r.get(key)): r.get(key) for r in rows}
    return sorted((raw[value] for value in {v[index] for v in by_value}), key=sort_key)


def _edges(
    best: tuple, keys: list[str], tried: dict[str, list[Any]], figure: dict[tuple, float]
) -> dict[str, str]:
    """The numeric keys whose chosen value is the lowest ("low") or highest ("high") of two or
    more tried, and strictly better on the compared figure than the next value inward: where
    that neighbour ties (every rate reaches 0 bit error, say), an optimum lies inside and only
    the tie-break chose the edge."""
    edges = {}
    for index, key in enumerate(keys):
        numbers = [v for v in tried[key] if _is_number(v)]
        value = _value_of(best[index], numbers)
        if len(numbers) < 2 or value is None:
            continue
        if value == min(numbers):
            side, neighbour = "low", numbers[1]
        elif value == max(numbers):
            side, neighbour = "high", numbers[-2]
        else:
            continue
        inward = (*best[:index], hashable(neighbour), *best[index + 1 :])
        if inward in figure and figure[inward] <= figure[best]:
            continue  # a tie with the value inside
        edges[key] = side
    return edges


def _value_of(candidate: Any, numbers: list[Any]) -> Any:
    """The number a candidate's (hashable) value stands for, or None."""
    return next((n for n in numbers if hashable(n) == candidate), None)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
