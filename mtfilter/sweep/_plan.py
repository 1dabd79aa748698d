"""From a sweep's grid to the runs it will start: each resolved into its fit configuration and
checked, stacked or split by what pays on the device, and given an estimated cost."""

from pathlib import Path
from typing import Any

from mtfilter.errors import ConfigError
from mtfilter.folders import Grid
from mtfilter.parse_errors import check_config_file
from mtfilter.sweep._grid import (
    Run,
    config_digest,
    distinct_names,
    plan_runs,
    replicas_of,
    run_settings,
    split,
)
from mtfilter.sweep._preflight import preflight
from mtfilter.sweep._protocol import SELECTION

# Runs whose model has at most this many parameters outside the input tables are stacked when
# their seeds or learning rates are an axis and stacking is "auto" on a CPU. Measured
# (docs/benchmarks.md, "Stacked seeds"): eight stacked seeds give 4.6x the throughput of separate
# runs for mt at hidden 8 but about 1-2.4x for st, and less at hidden 64, where the stacked
# activations no longer fit in cache.
CPU_STACKING_MAX_PARAMETERS = 20_000


def plan(
    base: Path, grid: Grid | list[Grid], settings: dict[str, Any],
    stack_seeds: bool | str = "auto", device: str = "cpu",
    stack_learning_rates: bool | str = "auto", prefix: str = "",
) -> list[Run]:  # fmt: skip
    """The sweep's runs, each resolved into its fit config and checked, without running any."""
    problem = check_config_file(str(base))
    if problem:
        raise ConfigError(f"base: {problem}")
    runs: list[Run] = []
    for run in plan_runs(grid, stack_seeds, device, stack_learning_rates, prefix):
        _resolve_run(base, run, settings)
        # the axes stacked here were allowed; `True` on all of them stacks whatever the size
        modes = [stack_seeds] * (len(run.seeds) > 1) + [stack_learning_rates] * bool(
            run.learning_rates
        )
        stacking = True if modes and all(mode is True for mode in modes) else "auto"
        if replicas_of(run) > 1 and not should_stack(run, stacking, device):
            for single in split(run, prefix):
                _resolve_run(base, single, settings)
                runs.append(single)
        else:
            runs.append(run)
    runs = distinct_names(runs)
    _refuse_shared_fits(runs)
    return runs


def _refuse_shared_fits(runs: list[Run]) -> None:
    """Two points that resolve to one fit (`hidden_dim: [8, 8.0]`, say) would train it twice
    under two names: refused, naming both."""
    seen: dict[str, str] = {}
    for run in runs:
        other = seen.setdefault(config_digest(run.config), run.name)
        if other != run.name:
            raise ConfigError(
                f"grid points {other} and {run.name} give the same fit configuration: "
                "remove one of them"
            )


def _resolve_run(base: Path, run: Run, settings: dict[str, Any]) -> None:
    run.settings = run_settings(run, settings)
    try:
        run.config, parsed, run.parameters, run.table_parameters = preflight(
            base, run.settings, grid=list(run.values)
        )
    except ConfigError as error:
        raise ConfigError(f"run {run.name}: {error}") from None
    run.cost = estimated_cost(parsed, run.parameters, run.table_parameters, replicas_of(run))


def plan_waves(
    grids: list[Grid], base: Path, settings: dict[str, Any], device: str,
    stacking: dict[str, Any],
) -> list[Run]:  # fmt: skip
    """The selection runs, each wave planned on its own: the runs of a wave never merge with
    another's, so extending the candidates adds runs and never changes one."""
    runs = [
        run
        for one in grids
        for run in plan(base, one, settings, device=device, prefix=SELECTION, **stacking)
    ]
    return distinct_names(runs)


def should_stack(run: Run, stack: bool | str, device: str) -> bool:
    """Whether a run of several replicas trains them stacked or is split into one run each."""
    if len(run.seeds) * max(len(run.learning_rates), 1) < 2 or stack is False:
        return False
    if stack is True or device != "cpu":
        return True
    return run.parameters <= CPU_STACKING_MAX_PARAMETERS


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
