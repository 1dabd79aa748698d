"""`mtfilter sweep`: the entry point, from a sweep's settings to its runs and its report."""

from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse.typing import Path_fr

from mtfilter.errors import ConfigError
from mtfilter.folders import unwritable
from mtfilter.sweep._definition import (
    Value,
    definition,
    plain,
    report_settings,
    with_floor_stop,
)
from mtfilter.sweep._grid import Run, describe
from mtfilter.sweep._plan import plan, plan_waves
from mtfilter.sweep._protocol import Protocol, Selection
from mtfilter.sweep._runner import Execution
from mtfilter.sweep._select_then_confirm import select_then_confirm
from mtfilter.sweep._submitit import SubmititOptions


def sweep(
    base: Path_fr,
    grid: dict[str, list[Value]] | list[dict[str, list[Value]]],
    settings: dict[str, Value] | None = None,
    folder: str = "lightning_logs/sweeps/sweep",
    select: Selection | None = None,
    stack_seeds: bool | Literal["auto"] = "auto",
    stack_learning_rates: bool | Literal["auto"] = "auto",
    executor: Literal["local", "submitit"] = "local",
    workers: int | None = None,
    runs_per_gpu: int = 1,
    submitit: SubmititOptions | None = None,
    report: dict[str, Value] | None = None,
    dry_run: bool = False,
) -> int:
    """Run every point of a grid of fit settings as its own fit, then write the report.

    Running the same sweep again skips runs that completed and continues the others (from
    their `last.ckpt` where they have one). A run that fails is recorded with its error and
    the others go on; the exit status is 1 if any failed, 128 + N if signal N stopped it
    (130: Ctrl-C).

    Args:
        base: The fit config every run starts from (relative paths: to the sweep config).
        grid: Axes to vary, `key: [values]`, any key `mtfilter fit` accepts, e.g.
            `model.hidden_dim: [8, 16]`. Every combination is one point. A list of such
            grids runs the union of their points.
        settings: Keys set for every point, on top of the base config. A sweep compared on
            `bit_error` or `exact_match_error` (`select`'s default) adds
            `convergence.stop_at_floor: true` unless they set it: each replica ends where those
            errors reach the model's floor, which no later epoch passes.
        folder: The sweep's folder: one subfolder per run, the report at the top.
        select: Select, then confirm: per grid point, candidate values (e.g. learning rates)
            run on selection seeds, the best is picked (a pick at an edge of the candidates
            extends them first), then it runs on held-out seeds, all in this one command; the
            runs go to `selection/` and `confirmation/` (see `Selection`).
        stack_seeds: With `seed_everything` as an axis, train a point's seeds together as
            stacked replicas (one process, the same results to rounding). `auto`: always for
            local runs on a GPU; on a CPU, and for `submitit` jobs (whose devices this process
            cannot see), only for small models, where it pays on a CPU (docs/benchmarks.md).
        stack_learning_rates: The same for `model.optimizer.init_args.lr` as an axis (or a
            candidate of `select`): a point's rates train together, every seed at every rate.
        executor: `local` (this machine) or `submitit` (SLURM job arrays; see `submitit`).
        workers: Runs at once locally. Default: one single-threaded process per CPU core, or
            `runs_per_gpu` per GPU.
        runs_per_gpu: Runs sharing each GPU locally.
        submitit: Cluster settings for `executor: submitit`.
        report: Settings of the report written at the end, kept in the folder so that
            `mtfilter report FOLDER` uses them too: e.g. `{metric: bit_error}`, or
            `{select_key: model.optimizer, selection_seeds: [0, 1]}` (see `mtfilter report
            --help`; `select` sets its own).
        dry_run: List the runs and their commands; run and write nothing.
    """
    base_path = Path(base.absolute).resolve()
    problem = None if dry_run else unwritable(folder)
    if problem:  # before any run is planned (minutes, for a large study)
        raise ConfigError(f"folder {folder}: {problem}")
    grid, settings = plain(grid), plain(settings or {})
    device = "cuda" if torch.cuda.is_available() and executor == "local" else "cpu"
    stacking: dict[str, Any] = {
        "stack_seeds": stack_seeds,
        "stack_learning_rates": stack_learning_rates,
    }
    report_options = report_settings(plain(report or {}), select)
    settings = with_floor_stop(settings, report_options.get("metric"))
    protocol = Protocol(select, grid) if select is not None else None
    if protocol is None:
        runs = plan(base_path, grid, settings, device=device, **stacking)
    else:
        runs = plan_waves(protocol.selection_grid(), base_path, settings, device, stacking)
    if dry_run:
        _print_plan(runs, Path(folder), base_path, protocol is not None)
        return 0
    recorded = definition(str(base.absolute), base_path, grid, settings, stacking,
                          report_options, select)  # fmt: skip
    execution = Execution(Path(folder), executor, workers, runs_per_gpu, submitit)
    if protocol is None:
        completed = execution.run(runs, recorded)
    else:
        completed = select_then_confirm(protocol, execution, runs, recorded, base_path,
                                        settings, device, stacking)  # fmt: skip
    return execution.finish(completed)


def _print_plan(runs: list[Run], folder: Path, base: Path, protocol: bool) -> None:
    print(f"{len(runs)} runs in {folder}, largest first (dry run: nothing is run or written)")
    for run in sorted(runs, key=lambda r: r.cost, reverse=True):
        seeds = f", seeds {run.seeds} stacked" if len(run.seeds) > 1 else ""
        if run.learning_rates:
            seeds += f", learning rates {run.learning_rates} stacked"
        print(f"  {run.name}: {run.parameters:,} parameters outside the input table{seeds}")
        print(f"    mtfilter fit --config {base} {describe(run.settings)}")
    if protocol:
        print("then: picks, extensions past edge picks and the held-out runs, as results come in")
