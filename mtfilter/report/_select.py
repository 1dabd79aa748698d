"""Choosing one setting per point (a learning rate, say) on some seeds and reporting it on the
others: the figure of a point is then not biased by having picked the luckiest setting."""

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from mtfilter.folders import SEED_KEY, short_value
from mtfilter.report._stats import _hashable, converged, section_keys


@dataclass
class Choice:
    """The setting chosen for one point (section, width, layout) and what it was chosen from."""

    section: tuple
    width: Any
    layout: Any
    chosen: Any
    means: dict[str, float]  # each candidate (short text) -> mean best loss on the selection seeds
    seeds: int  # selection seeds per candidate
    unconverged: int  # the chosen candidate's selection runs that did not converge
    held_out: bool  # reported on other seeds than those it was chosen on


def select(
    rows: list[dict[str, Any]], keys: list[str], metric: str, key: str, width_key: str,
    layout_key: str, selection_seeds: list[int] | None,
) -> tuple[list[dict[str, Any]], list[Choice]]:  # fmt: skip
    """Per point, the value of `key` with the lowest mean best loss on `selection_seeds` (all
    seeds if None); returns the rows of the chosen values on the other seeds (or on the same
    ones when no other seed ran) and the choices."""
    others = section_keys(keys, width_key, layout_key, key)
    points: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        section = tuple(_hashable(row.get(k)) for k in others)
        points[(section, row.get(width_key), row.get(layout_key))].append(row)
    kept, choices = [], []
    for (section, width, layout), point_rows in points.items():
        scored = [r for r in point_rows if _usable(r, metric)]
        picking = [
            r for r in scored if selection_seeds is None or r.get(SEED_KEY) in selection_seeds
        ]
        by_value: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in picking:
            by_value[_hashable(row.get(key))].append(row)
        if not by_value:
            continue
        means = {
            v: statistics.fmean(r[f"{metric}_loss_best"] for r in rs) for v, rs in by_value.items()
        }
        best = min(means, key=means.__getitem__)
        chosen_rows = [r for r in point_rows if _hashable(r.get(key)) == best]
        reported = [r for r in chosen_rows if r not in picking]
        held_out = bool(reported) and selection_seeds is not None
        kept += reported if held_out else [r for r in chosen_rows if r in picking]
        choices.append(
            Choice(
                section,
                width,
                layout,
                chosen_rows[0].get(key),
                {short_value(by_value[v][0].get(key)): m for v, m in means.items()},
                min(len(rs) for rs in by_value.values()),
                sum(not converged(r, metric) for r in by_value[best]),
                held_out,
            )  # fmt: skip
        )
    return kept, choices


def _usable(row: dict[str, Any], metric: str) -> bool:
    return row.get("status") == "completed" and row.get(f"{metric}_loss_best") is not None
