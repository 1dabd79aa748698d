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
from mtfilter.folders import SEED_KEY, Grid, grid_keys, run_name

# Runs whose model has at most this many parameters outside the input tables are stacked when
# their seeds are an axis and stacking is "auto" on a CPU. Measured (docs/benchmarks.md): eight
# stacked seeds give 4.9x the throughput of separate runs for mt at hidden 8 but only 0.9x for
# st at hidden 64, where the stacked activations no longer fit in cache.
CPU_STACKING_MAX_PARAMETERS = 20_000


@dataclass
class Run:
    """One fit of the sweep: a grid point, or the points that differ only in seed, stacked."""

    name: str  # the run's folder name
    values: dict[str, Any]  # grid axis -> value; the seed axis is in `seeds` instead
    seeds: list[int]
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


def plan_runs(grid: Grid | list[Grid], stack_seeds: bool | str, device: str = "cpu") -> list[Run]:
    """Group the grid's points into runs. With the seed as an axis and stacking on, the points
    that differ only in seed become one run with its seeds stacked as replicas."""
    points = expand_grid(grid)
    if SEED_KEY not in grid_keys(grid) or stack_seeds is False:
        return [_single(point) for point in points]
    groups: dict[str, Run] = {}
    for point in points:
        values = {k: v for k, v in point.items() if k != SEED_KEY}
        seed = point.get(SEED_KEY)
        if seed is None:  # a grid of the list without the seed axis
            groups.setdefault(run_name(point), _single(point))
            continue
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"grid axis {SEED_KEY} needs non-negative integers, got {seed!r}")
        name = run_name(values)
        groups.setdefault(name, Run(name=name, values=values, seeds=[])).seeds.append(seed)
    return list(groups.values())


def _single(point: dict[str, Any]) -> Run:
    seed = point.get(SEED_KEY)
    return Run(name=run_name(point), values=point, seeds=[seed] if seed is not None else [])


def should_stack(run: Run, stack_seeds: bool | str, device: str) -> bool:
    """Whether a run of several seeds trains them stacked or is split into one run per seed."""
    if len(run.seeds) < 2 or stack_seeds is False:
        return False
    if stack_seeds is True or device != "cpu":
        return True
    return run.parameters <= CPU_STACKING_MAX_PARAMETERS


def split_seeds(run: Run) -> list[Run]:
    """One run per seed, named with the seed."""
    return [
        Run(
            name=run_name({**run.values, SEED_KEY: seed}),
            values={**run.values, SEED_KEY: seed},
            seeds=[seed],
        )
        for seed in run.seeds
    ]


def run_settings(run: Run, settings: dict[str, Any]) -> dict[str, Any]:
    """What the run's fit gets on top of the base config: fixed settings, its grid values and
    its seeds (stacked seeds as `data.seeds`, the first also as `seed_everything`)."""
    result = {**settings, **{k: v for k, v in run.values.items() if k != SEED_KEY}}
    if len(run.seeds) == 1:
        result[SEED_KEY] = run.seeds[0]
    elif run.seeds:
        result[SEED_KEY] = run.seeds[0]
        result["data.seeds"] = list(run.seeds)
    return result


def preflight(
    base: Path, settings: dict[str, Any], grid: list[str] | tuple[str, ...] = ()
) -> tuple[str, Any, int, int]:
    """Everything `mtfilter fit --config BASE --key value ...` would build, checked without
    building it (`PreflightCLI`: the fit's own parser, links and constructors, the model on the
    `meta` device). Returns the resolved configuration as YAML, its parsed form, and one
    replica's parameter counts outside the input tables and in them. A bad key or value fails
    here, named with whether it came from the sweep's `grid` (keys in `grid`), its `settings` or
    the base config."""
    from mtfilter.lightning_cli import PreflightCLI  # imports this package: import when used

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
