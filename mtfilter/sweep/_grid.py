"""A sweep's grid as runs: every point, readable distinct names, the points that differ only in
seed or learning rate grouped into one run of stacked replicas, and what each run's fit gets."""

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from mtfilter.errors import ConfigError
from mtfilter.folders import LEARNING_RATE_KEY, SEED_KEY, Grid, grid_keys, run_name


@dataclass
class Run:
    """One fit of the sweep: a grid point, or the points that differ only in seed and learning
    rate, stacked (every seed at every rate)."""

    name: str  # the run's folder name, relative to the sweep's folder
    values: dict[str, Any]  # grid axis -> value; the stacked axes are in `seeds`, `learning_rates`
    seeds: list[int]
    learning_rates: list[float] = field(default_factory=list)  # stacked; empty: not stacked
    settings: dict[str, Any] = field(default_factory=dict)  # everything passed to fit
    config: str = ""  # the resolved fit configuration (YAML)
    parameters: int = 0  # one replica's parameters outside the input tables
    table_parameters: int = 0  # one replica's input-table parameters
    cost: float = 0.0  # estimated work, to start the largest first


def expand_grid(grid: Grid | list[Grid]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in the order the axes are given. A list of grids
    is their union, e.g. a product of widths and layouts plus a few wider mt points."""
    grids = grid if isinstance(grid, list) else [grid]
    if not grids or not all(grids):
        raise ConfigError(
            "the sweep's grid is empty: give at least one axis, e.g. model.hidden_dim"
        )
    points: dict[str, dict[str, Any]] = {}
    for one in grids:
        for key, values in one.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(
                    f"grid axis {key!r} needs a non-empty list of values, got {values!r}"
                )
            if len({_canonical(v) for v in values}) != len(values):
                raise ConfigError(f"grid axis {key!r} repeats a value: {values}")
        keys = list(one)
        for combo in itertools.product(*one.values()):
            point = dict(zip(keys, combo, strict=True))
            if _canonical(point) in points:
                raise ConfigError(f"the grids give the point {point} twice")
            points[_canonical(point)] = point
    return list(points.values())


def plan_runs(
    grid: Grid | list[Grid], stack_seeds: bool | str, device: str = "cpu",
    stack_learning_rates: bool | str = "auto", prefix: str = "",
) -> list[Run]:  # fmt: skip
    """Group the grid's points into runs. With the seed (or the learning rate,
    `model.optimizer.init_args.lr`) as an axis and stacking on, the points that differ only
    in them become one run of stacked replicas, every seed at every rate. Names start with
    `prefix` (a subfolder of the sweep's folder, e.g. `selection/`)."""
    points = expand_grid(grid)
    keys = grid_keys(grid)
    stacked = [key for key, mode in ((SEED_KEY, stack_seeds),
                                     (LEARNING_RATE_KEY, stack_learning_rates))
               if key in keys and mode is not False]  # fmt: skip
    for point in points:
        seed = point.get(SEED_KEY)
        if SEED_KEY in point and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ConfigError(f"grid axis {SEED_KEY} needs non-negative integers, got {seed!r}")
    groups: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        if not all(key in point for key in stacked):  # a grid of the list without that axis
            groups[_canonical(point)] = [point]
            continue
        rest = {k: v for k, v in point.items() if k not in stacked}
        groups.setdefault(_canonical(rest), []).append(point)
    runs = []
    for members in groups.values():
        runs += _stack(members, [key for key in stacked if key in members[0]], prefix)
    return runs


def _stack(points: list[dict[str, Any]], axes: list[str], prefix: str) -> list[Run]:
    """Points that differ only in `axes` as one run of every seed at every learning rate; when
    they are not such a product, one run per learning rate."""
    rest = {k: v for k, v in points[0].items() if k not in axes}
    if SEED_KEY in axes:
        seeds = list(dict.fromkeys(p[SEED_KEY] for p in points))
    else:  # a single point's seed, kept in its name too
        seeds = [rest[SEED_KEY]] if SEED_KEY in rest else []
    rates = list(dict.fromkeys(p[LEARNING_RATE_KEY] for p in points)) \
        if LEARNING_RATE_KEY in axes else []  # fmt: skip
    if len(points) != max(len(seeds), 1) * max(len(rates), 1):  # not every seed at every rate
        by_rate: dict[str, list[dict[str, Any]]] = {}
        for point in points:
            by_rate.setdefault(_canonical(point[LEARNING_RATE_KEY]), []).append(point)
        axes = [SEED_KEY]
        return [run for group in by_rate.values() for run in _stack(group, axes, prefix)]
    if len(rates) <= 1:  # one rate is a setting like any other
        rest.update({LEARNING_RATE_KEY: rates[0]} if rates else {})
        rates = []
    named = {**rest, LEARNING_RATE_KEY: rates} if rates else rest
    return [Run(name=prefix + run_name(named), values=rest, seeds=seeds,
                learning_rates=[float(r) for r in rates])]  # fmt: skip


def distinct_names(runs: list[Run]) -> list[Run]:
    """Give every run its own folder. A readable name is not one-to-one (`lr=0.0003` for both
    0.0003 and 0.00030000001; `aggregator=Mean` for any class called Mean; `a/b` and `a b` are
    both `a_b`), so a run whose name an earlier run already holds for another point gets a short
    hash of its point: `lr=0.0003-3f2a9c1e`. The first keeps the readable name, so adding runs
    (a grid that grew, an extension wave) never renames a folder that exists."""
    taken: dict[str, str] = {}  # name -> the point that holds it
    for run in runs:
        point = _canonical([run.values, run.seeds, run.learning_rates])
        if taken.setdefault(run.name, point) != point:
            run.name = f"{run.name}-{hashlib.sha256(point.encode()).hexdigest()[:8]}"
            taken[run.name] = point
    return runs


def split(run: Run, prefix: str = "") -> list[Run]:
    """One run per replica (seed and learning rate), named with them."""
    rates: list[float | None] = [*run.learning_rates] or [None]
    seeds: list[int | None] = [*run.seeds] or [None]
    runs = []
    for rate in rates:
        for seed in seeds:
            values = dict(run.values)
            if rate is not None:
                values[LEARNING_RATE_KEY] = rate
            if seed is not None:
                values[SEED_KEY] = seed
            runs.append(Run(name=prefix + run_name(values), values=values,
                            seeds=[seed] if seed is not None else []))  # fmt: skip
    return runs


def run_settings(run: Run, settings: dict[str, Any]) -> dict[str, Any]:
    """What the run's fit gets on top of the base config: fixed settings, its grid values, its
    seeds (stacked seeds as `data.seeds`, the first also as `seed_everything`) and its stacked
    learning rates (`model.learning_rates`; the first also as the optimizer's)."""
    result = {**settings, **{k: v for k, v in run.values.items() if k != SEED_KEY}}
    if run.learning_rates:
        result[LEARNING_RATE_KEY] = run.learning_rates[0]
        result["model.learning_rates"] = list(run.learning_rates)
    if len(run.seeds) == 1:
        result[SEED_KEY] = run.seeds[0]
    elif run.seeds:
        result[SEED_KEY] = run.seeds[0]
        result["data.seeds"] = list(run.seeds)
    return result


def replicas_of(run: Run) -> int:
    return max(len(run.seeds), 1) * max(len(run.learning_rates), 1)


def config_digest(config: str) -> str:
    return hashlib.sha256(config.encode()).hexdigest()[:16]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def describe(settings: dict[str, Any]) -> str:
    """The settings as the command-line arguments of `mtfilter fit`."""
    parts = []
    for key, value in settings.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"--{key} {shown!r}" if " " in str(shown) else f"--{key} {shown}")
    return " ".join(parts)
