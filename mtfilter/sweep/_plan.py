"""From a sweep definition to runs: grid expansion, readable names, seed stacking, and each run's
fit configuration resolved and checked before anything starts."""

import hashlib
import itertools
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtfilter.errors import ConfigError
from mtfilter.folders import LEARNING_RATE_KEY, SEED_KEY, Grid, grid_keys, run_name

# Runs whose model has at most this many parameters outside the input tables are stacked when
# their seeds or learning rates are an axis and stacking is "auto" on a CPU. Measured
# (docs/benchmarks.md, "Stacked seeds"): eight stacked seeds give 4.6x the throughput of separate
# runs for mt at hidden 8 but about 1-2.4x for st, and less at hidden 64, where the stacked
# activations no longer fit in cache.
CPU_STACKING_MAX_PARAMETERS = 20_000


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


def should_stack(run: Run, stack: bool | str, device: str) -> bool:
    """Whether a run of several replicas trains them stacked or is split into one run each."""
    if len(run.seeds) * max(len(run.learning_rates), 1) < 2 or stack is False:
        return False
    if stack is True or device != "cpu":
        return True
    return run.parameters <= CPU_STACKING_MAX_PARAMETERS


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


# preflight's results in this process, by base file (its path and bytes), settings and grid keys:
# each wave of a select-then-confirm sweep plans the earlier waves' runs again, and a PreflightCLI
# costs 0.5-1 s on a 2-core CPU (hundreds per start of the optimum study, unmemoised)
_PREFLIGHTS: dict[str, tuple[str, Any, int, int]] = {}


def preflight(
    base: Path, settings: dict[str, Any], grid: list[str] | tuple[str, ...] = ()
) -> tuple[str, Any, int, int]:
    """Everything `mtfilter fit --config BASE --key value ...` would build, checked without
    building it (`PreflightCLI`: the fit's own parser, links and constructors, the model on the
    `meta` device). Returns the resolved configuration as YAML, its parsed form (shared between
    calls with the same arguments: read it, never change it), and one replica's parameter counts
    outside the input tables and in them. A bad key or value fails here, named with whether it
    came from the sweep's `grid` (keys in `grid`), its `settings` or the base config."""
    key = json.dumps(
        [str(Path(base).resolve()), hashlib.sha256(Path(base).read_bytes()).hexdigest(),
         settings, sorted(grid)], sort_keys=True, default=str,
    )  # fmt: skip
    if key not in _PREFLIGHTS:
        _PREFLIGHTS[key] = _preflight(base, settings, grid)
    return _PREFLIGHTS[key]


def _preflight(
    base: Path, settings: dict[str, Any], grid: list[str] | tuple[str, ...]
) -> tuple[str, Any, int, int]:
    from mtfilter.cli.fit import PreflightCLI  # imports this package: import when used

    def origin(key: str) -> str:
        if key in grid:
            return "in the sweep's grid"
        return "in the sweep's settings" if key in settings else f"in base config {base}"

    args = ["--config", str(base)]
    for key, value in settings.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = PreflightCLI(args, origin=origin)
    replicas = len(cli.model.seeds)
    embedding = cli.model.net.embedding
    tables = 0 if embedding is None else embedding.weight.numel() // replicas
    counts = cli.model.parameter_counts()
    return cli.resolved(), cli.config, counts["total"] - tables, tables


def replicas_of(run: Run) -> int:
    return max(len(run.seeds), 1) * max(len(run.learning_rates), 1)


def estimated_cost(config: Any, parameters: int, table_parameters: int, replicas: int) -> float:
    """A proxy of a run's work, to start the largest first: epochs x (a fixed cost per epoch +
    the replicas' parameters, input tables weighted 1/16 since a step reads only the rows of
    its batch). Fitted to the wall times of configs/sweep/quick.yaml on a 2-core CPU, where
    the fixed cost was about that of 15,000 parameters; only the order matters."""
    epochs = config.trainer.max_epochs if config.trainer.max_epochs not in (None, -1) else 1000
    replicas = max(replicas, 1)
    cost = float(epochs) * (15_000 + replicas * (parameters + table_parameters / 16))
    # an aggregator adds a per-task Jacobian and a small optimisation per replica to every
    # step: 3.6-6.4x a plain mt run's time at hidden 8 with 4 replicas on one CPU thread
    # (configs/sweep/filters.yaml, docs/sweeps/filters/)
    return cost * (5.0 if config.model.get("aggregator") is not None else 1.0)


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
