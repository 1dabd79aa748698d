"""`mtfilter sweep`: a grid of fit runs under one folder, resumable, crash-safe, in parallel
locally or as a SLURM job array, with its report written at the end."""

import sys
import time
from pathlib import Path
from typing import Any, Literal, Union

import torch
from jsonargparse import Namespace
from jsonargparse.typing import Path_fr

from mtfilter.errors import ConfigError
from mtfilter.folders import Grid
from mtfilter.parse_errors import check_config_file
from mtfilter.sweep._local import default_workers, run_locally
from mtfilter.sweep._plan import (
    Run,
    describe,
    estimated_cost,
    plan_runs,
    preflight,
    run_settings,
    should_stack,
    split_seeds,
)
from mtfilter.sweep._state import FAILED, FINISHED, RunState, prepare, reconcile
from mtfilter.sweep._submitit import SubmititOptions, run_with_submitit

__all__ = ["SubmititOptions", "plan", "sweep"]


# A config value as YAML writes it. Not `Any`: jsonargparse would read a `class_path` mapping as
# a class to fill in with its defaults, where the sweep must pass it on as written.
Value = Union[bool, int, float, str, None, dict, list]  # noqa: UP007 (jsonargparse needs Union)


def sweep(
    base: Path_fr,
    grid: dict[str, list[Value]] | list[dict[str, list[Value]]],
    settings: dict[str, Value] | None = None,
    folder: str = "lightning_logs/sweeps/sweep",
    stack_seeds: bool | Literal["auto"] = "auto",
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
    the others go on; the exit status is 1 if any failed, 130 if interrupted.

    Args:
        base: The fit config every run starts from (relative paths: to the sweep config).
        grid: Axes to vary, `key: [values]`, any key `mtfilter fit` accepts, e.g.
            `model.hidden_dim: [8, 16]`. Every combination is one point. A list of such
            grids runs the union of their points.
        settings: Keys set for every point, on top of the base config.
        folder: The sweep's folder: one subfolder per run, the report at the top.
        stack_seeds: With `seed_everything` as an axis, train a point's seeds together as
            stacked replicas (one process, identical results). `auto`: always on a GPU; on a
            CPU only for small models, where it pays (docs/benchmarks.md).
        executor: `local` (this machine) or `submitit` (SLURM job arrays; see `submitit`).
        workers: Runs at once locally. Default: one single-threaded process per CPU core, or
            `runs_per_gpu` per GPU.
        runs_per_gpu: Runs sharing each GPU locally.
        submitit: Cluster settings for `executor: submitit`.
        report: Settings of the report written at the end, kept in the folder so that
            `mtfilter report FOLDER` uses them too: e.g. `{metric: batch}`, or `{select_key:
            model.optimizer, selection_seeds: [0, 1]}` (see `mtfilter report --help`).
        dry_run: List the runs and their commands; run and write nothing.
    """
    started = time.monotonic()
    folder_path = Path(folder)
    grid, settings = _plain(grid), _plain(settings or {})
    device = "cuda" if torch.cuda.is_available() and executor == "local" else "cpu"
    runs = plan(Path(base.absolute).resolve(), grid, settings, stack_seeds, device)
    if dry_run:
        _print_plan(runs, folder_path, Path(base.absolute).resolve())
        return 0
    definition = {
        "base": str(base.absolute), "base_config": Path(base.absolute).read_text(),
        "grid": grid, "settings": settings, "stack_seeds": stack_seeds,
        "report": _plain(report or {}),
    }  # fmt: skip
    todo = prepare(folder_path, runs, definition)
    total = len(runs)
    print(
        f"sweep {folder_path}: {total} runs ({sum(max(len(r.seeds), 1) for r in runs)} points), "
        f"{total - len(todo)} already finished, {len(todo)} to run",
        flush=True,
    )
    finished = [total - len(todo)]

    def on_done(run_folder: Path, state: RunState) -> None:
        finished[0] += state.status == FINISHED
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - started))
        seconds = state.history[-1]["seconds"] if state.history else 0.0
        note = "" if state.status == FINISHED else f"  see {run_folder / 'log.txt'}"
        print(f"[{finished[0]}/{total} done, {elapsed}] {state.status:9s} {state.name} "
              f"({seconds:.1f} s){note}", flush=True)  # fmt: skip

    def on_wait(run_folder: Path, pid: int | None) -> None:
        owner = f" (pid {pid})" if pid else ""
        print(f"waiting: {run_folder.name} is still being written by another process{owner}, "
              "a fit of an earlier sweep; it is not started twice", flush=True)  # fmt: skip

    completed = True
    if todo and executor == "local":
        count = workers or default_workers(runs_per_gpu)
        print(f"running locally, {count} at a time, largest first", flush=True)
        completed = run_locally(todo, count, runs_per_gpu, on_done, on_wait)
    elif todo:
        completed = run_with_submitit(todo, folder_path, submitit or SubmititOptions(), on_done)

    from mtfilter.report import report as write_report  # matplotlib only when reporting

    written = write_report(folder_path)
    # the tally comes from the runs' own summaries, not from what this process saw
    states = [reconcile(folder_path / run.name) for run in runs]
    failed = [s for s in states if s.status in FAILED]
    unfinished = [s for s in states if s.status != FINISHED]
    print("report: " + ", ".join(str(path) for path in written), flush=True)
    if not completed:
        print(f"interrupted: {len(unfinished)} runs unfinished; run the same command to go on",
              file=sys.stderr)  # fmt: skip
        return 130
    if failed:
        print(f"{len(failed)} of {total} runs failed: " + ", ".join(s.name for s in failed),
              file=sys.stderr)  # fmt: skip
        return 1
    if unfinished:  # stopped by a Ctrl-C of an earlier sweep's fit, say: not failed, not done
        print(
            f"{len(unfinished)} of {total} runs did not finish: "
            + ", ".join(f"{s.name} ({s.status})" for s in unfinished),
            file=sys.stderr,
        )
        return 1
    return 0


def plan(
    base: Path, grid: Grid | list[Grid], settings: dict[str, Any],
    stack_seeds: bool | str = "auto", device: str = "cpu",
) -> list[Run]:  # fmt: skip
    """The sweep's runs, each resolved into its fit config and checked, without running any."""
    problem = check_config_file(str(base))
    if problem:
        raise ConfigError(f"base: {problem}")
    runs: list[Run] = []
    for run in plan_runs(grid, stack_seeds, device):
        _resolve_run(base, run, settings)
        if len(run.seeds) > 1 and not should_stack(run, stack_seeds, device):
            for single in split_seeds(run):
                _resolve_run(base, single, settings)
                runs.append(single)
        else:
            runs.append(run)
    return runs


def _resolve_run(base: Path, run: Run, settings: dict[str, Any]) -> None:
    run.settings = run_settings(run, settings)
    try:
        run.config, parsed, run.parameters, run.table_parameters = preflight(
            base, run.settings, grid=list(run.values)
        )
    except ConfigError as error:
        raise ConfigError(f"run {run.name}: {error}") from None
    run.cost = estimated_cost(parsed, run.parameters, run.table_parameters, len(run.seeds))


def _plain(value: Any) -> Any:
    """jsonargparse hands nested mappings over as Namespaces; the sweep works on plain data."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _print_plan(runs: list[Run], folder: Path, base: Path) -> None:
    print(f"{len(runs)} runs in {folder}, largest first (dry run: nothing is run or written)")
    for run in sorted(runs, key=lambda r: r.cost, reverse=True):
        seeds = f", seeds {run.seeds} stacked" if len(run.seeds) > 1 else ""
        print(f"  {run.name}: {run.parameters:,} parameters outside the input table{seeds}")
        print(f"    mtfilter fit --config {base} {describe(run.settings)}")
