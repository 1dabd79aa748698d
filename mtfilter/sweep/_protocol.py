"""Select, then confirm: per grid point, candidates (a learning rate, say) run on selection seeds,
the best is picked, a pick at an edge of its candidates extends them past that edge and runs
again, and the final pick runs on held-out seeds. Everything is re-derived from the runs on
disk, so running the sweep again re-runs nothing that completed.

Picks come from `mtfilter.report._select.select`, the function the report uses, so the sweep's
picks and the report's table always agree.
"""

import json
import math
from dataclasses import dataclass
from typing import Any

from mtfilter.errors import ConfigError
from mtfilter.folders import SEED_KEY, Grid, grid_keys
from mtfilter.report._metric import TEST_METRICS, MetricName
from mtfilter.sweep._grid import expand_grid

# A config value as YAML writes it (see mtfilter.sweep.Value).
Values = list[Any]

SELECTION = "selection/"  # subfolders of the sweep's folder
CONFIRMATION = "confirmation/"


@dataclass
class Selection:
    """The select-then-confirm protocol of a sweep.

    Args:
        candidates: Keys to choose per grid point and their candidate values, e.g.
            `model.optimizer.init_args.lr: [0.001, 0.003, 0.01]`; several keys: every
            combination is a candidate. Learning rates train stacked where it pays.
        selection_seeds: Seeds every candidate runs on; the pick is the candidate with the
            lowest mean best `metric` over them (ties: the lowest mean best loss). A candidate
            that diverged on any of them is never picked.
        seeds: Held-out seeds the pick then runs on; the report's table is made of these.
            Empty: the table reports the selection seeds (a little optimistic).
        metric: What the pick minimises (see `mtfilter report --help`): `bit_error` by default,
            which means the same under every loss.
        limits: Per numeric key, `[lowest, highest]` value an extension may try. A pick at the
            lowest or highest value tried (an edge) adds the next value past it, by the
            candidates' own ratio at that edge (`ratio` if set, x3 for a single candidate), and
            runs it on the selection seeds, until the pick is inside its candidates or the
            limit is reached; the report marks a pick still at an edge.
        ratio: The factor of an extension (default: the ratio of the two values at that edge).
        max_extensions: Most extensions per key and side, for keys without `limits`.
    """

    candidates: dict[str, Values]
    selection_seeds: list[int]
    seeds: list[int]
    metric: MetricName = "bit_error"
    limits: dict[str, list[float]] | None = None
    ratio: float | None = None
    max_extensions: int = 3


def check(selection: Selection, grid: Grid | list[Grid]) -> None:
    """Refuse a protocol that cannot work, in one line, before anything runs."""
    keys = grid_keys(grid)
    if not selection.candidates or any(not v for v in selection.candidates.values()):
        raise ConfigError("select.candidates needs at least one key with at least one value")
    clash = [key for key in (*selection.candidates, SEED_KEY) if key in keys]
    if clash:
        raise ConfigError(
            f"select: {', '.join(clash)} must not be a grid axis as well (the protocol sets "
            "the candidates and the seeds of every run)"
        )
    if selection.metric in TEST_METRICS:
        raise ConfigError(
            f"select.metric {selection.metric} reads the test split, which the pick must not "
            f"see: select on validation ({selection.metric.removeprefix('test_')}) and report "
            f"{selection.metric} (report.metric)"
        )
    if not selection.selection_seeds:
        raise ConfigError("select.selection_seeds is empty: give the seeds the pick is made on")
    overlap = set(selection.selection_seeds) & set(selection.seeds)
    if overlap:
        raise ConfigError(
            f"select: seeds {sorted(overlap)} are both selection and held-out seeds; the "
            "held-out seeds must be others, or the reported figures are biased by the pick"
        )
    for key, values in selection.candidates.items():
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise ConfigError(f"select.candidates {key!r} repeats a value: {values}")
    for key, bounds in (selection.limits or {}).items():
        if key not in selection.candidates:
            raise ConfigError(f"select.limits names {key!r}, which is not a candidate key")
        if len(bounds) != 2 or not bounds[0] < bounds[1]:
            raise ConfigError(f"select.limits {key!r} needs [lowest, highest], got {bounds}")
    if selection.ratio is not None and selection.ratio <= 1:
        raise ConfigError(f"select.ratio must be above 1, got {selection.ratio}")


def grid_points(grid: Grid | list[Grid]) -> list[dict[str, Any]]:
    return expand_grid(grid)  # the sweep's own expansion


def point_key(point: dict[str, Any], keys: list[str]) -> str:
    return json.dumps([point.get(k) for k in keys], sort_keys=True, default=str)


class Protocol:
    """The candidates each grid point has tried, in waves: wave 0 is the configured candidates,
    each later wave one extension past an edge. Waves are planned as grids of their own, so a
    run of an earlier wave never changes when the candidates grow."""

    def __init__(self, selection: Selection, grid: Grid | list[Grid]) -> None:
        check(selection, grid)
        self.selection = selection
        self.points = grid_points(grid)
        self.keys = grid_keys(grid)
        # point key -> waves, each {candidate key: its values in this wave}
        self.waves: dict[str, list[dict[str, Values]]] = {
            point_key(p, self.keys): [dict(selection.candidates)] for p in self.points
        }
        self._extensions: dict[tuple[str, str, str], int] = {}

    def selection_grid(self) -> list[Grid]:
        """Every wave of every point on the selection seeds, one grid each."""
        grids = []
        for point in self.points:
            for wave in self.waves[point_key(point, self.keys)]:
                grids.append({**{k: [v] for k, v in point.items()}, **wave,
                              SEED_KEY: list(self.selection.selection_seeds)})  # fmt: skip
        return grids

    def confirmation_grid(self, picks: dict[str, dict[str, Any]]) -> list[Grid]:
        """Each point's pick on the held-out seeds (points without a pick are left out)."""
        if not self.selection.seeds:
            return []
        grids = []
        for point in self.points:
            pick = picks.get(point_key(point, self.keys))
            if pick is not None:
                grids.append({**{k: [v] for k, v in point.items()},
                              **{k: [v] for k, v in pick.items()},
                              SEED_KEY: list(self.selection.seeds)})  # fmt: skip
        return grids

    def extend(self, choices: list[Any]) -> list[str]:
        """Add a wave past the edge of every point whose pick sits at one and may move further;
        returns what was added, in words."""
        added = []
        for choice in choices:
            key = point_key(choice.point, self.keys)
            if key not in self.waves:
                continue
            for name, side in choice.edges.items():
                value = self._next_value(key, name, side, choice.tried[name])
                if value is None:
                    continue
                others = {k: v for k, v in self._tried(key).items() if k != name}
                self.waves[key].append({**others, name: [value]})
                added.append(f"{_point_text(choice.point, self.keys)}: {name} {value!r} "
                             f"({'below' if side == 'low' else 'above'} the pick "
                             f"{choice.chosen[name]!r})")  # fmt: skip
        return added

    def _tried(self, key: str) -> dict[str, Values]:
        tried: dict[str, Values] = {}
        for wave in self.waves[key]:
            for name, values in wave.items():
                tried.setdefault(name, [])
                tried[name] += [v for v in values if v not in tried[name]]
        return tried

    def _next_value(self, key: str, name: str, side: str, tried: list[Any]) -> Any:
        numbers = sorted(v for v in tried if isinstance(v, int | float))
        if not numbers:
            return None
        edge = numbers[0] if side == "low" else numbers[-1]
        if self.selection.ratio is not None:
            ratio = self.selection.ratio
        elif len(numbers) >= 2:
            neighbour = numbers[1] if side == "low" else numbers[-2]
            ratio = max(edge, neighbour) / min(edge, neighbour) if min(edge, neighbour) > 0 else 3
        else:
            ratio = 3.0
        if not (math.isfinite(ratio) and ratio > 1) or edge <= 0:
            return None
        value = edge / ratio if side == "low" else edge * ratio
        value = float(f"{value:.3g}")  # a readable name: 0.000333, not 0.0003333333333333333
        if all(isinstance(v, int) and not isinstance(v, bool) for v in numbers):
            value = int(round(value))
        if value in numbers:
            return None
        limits = (self.selection.limits or {}).get(name)
        if limits is not None:
            low, high = limits
            if not low * (1 - 1e-9) <= value <= high * (1 + 1e-9):
                return None
        else:
            count = self._extensions.get((key, name, side), 0)
            if count >= self.selection.max_extensions:
                return None
            self._extensions[(key, name, side)] = count + 1
        return value


def picks_by_point(choices: list[Any], keys: list[str]) -> dict[str, dict[str, Any]]:
    return {point_key(c.point, keys): dict(c.chosen) for c in choices}


def _point_text(point: dict[str, Any], keys: list[str]) -> str:
    # a key another grid entry varies but this point leaves at the base value is not named
    named = [k for k in keys if point.get(k) is not None]
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={point[k]}" for k in named) or "the point"
