"""`mtfilter sweep`: a grid of fit runs under one folder, resumable, crash-safe, in parallel
locally or as a SLURM job array, optionally selecting a setting per point then confirming it on
held-out seeds, with its report written at the end."""

import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, Union

import torch
from jsonargparse import Namespace
from jsonargparse.typing import Path_fr

from mtfilter.cli.parse_errors import check_config_file
from mtfilter.errors import ConfigError
from mtfilter.folders import SEED_KEY, Grid
from mtfilter.stop_signals import stopped_exit_status
from mtfilter.sweep._local import default_workers, run_locally
from mtfilter.sweep._plan import (
    Run,
    config_digest,
    describe,
    distinct_names,
    estimated_cost,
    plan_runs,
    preflight,
    replicas_of,
    run_settings,
    should_stack,
    split,
)
from mtfilter.sweep._protocol import (
    CONFIRMATION,
    SELECTION,
    Protocol,
    Selection,
    picks_by_point,
)
from mtfilter.sweep._state import FAILED, FINISHED, RunState, prepare, reconcile
from mtfilter.sweep._submitit import SubmititOptions, run_with_submitit

__all__ = ["Selection", "SubmititOptions", "plan", "sweep"]


# A config value as YAML writes it. Not `Any`: jsonargparse would read a `class_path` mapping as
# a class to fill in with its defaults, where the sweep must pass it on as written.
Value = Union[bool, int, float, str, None, dict, list]  # noqa: UP007 (jsonargparse needs Union)


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
        settings: Keys set for every point, on top of the base config.
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
    grid, settings = _plain(grid), _plain(settings or {})
    device = "cuda" if torch.cuda.is_available() and executor == "local" else "cpu"
    stacking: dict[str, Any] = {
        "stack_seeds": stack_seeds,
        "stack_learning_rates": stack_learning_rates,
    }
    report_settings = _report_settings(_plain(report or {}), select)
    protocol = Protocol(select, grid) if select is not None else None
    if protocol is None:
        runs = plan(base_path, grid, settings, device=device, **stacking)
    else:
        runs = _plan_waves(protocol.selection_grid(), base_path, settings, device, stacking)
    if dry_run:
        _print_plan(runs, Path(folder), base_path)
        if protocol is not None:
            print("then: picks, extensions past edge picks and the held-out runs, as results "
                  "come in")  # fmt: skip
        return 0
    definition = {  # sweep.json: what the report and a second run read back
        "base": str(base.absolute), "base_config": base_path.read_text(),
        "grid": grid if select is None else _recorded_grid(grid, select),
        "settings": settings, **stacking, "report": report_settings,
        "select": None if select is None else _plain(asdict(select)),
    }  # fmt: skip
    execution = Execution(Path(folder), executor, workers, runs_per_gpu, submitit)
    if protocol is None:
        completed = execution.run(runs, definition)
    else:
        completed = _select_then_confirm(protocol, execution, runs, definition, base_path,
                                         settings, device, stacking)  # fmt: skip
    return execution.finish(completed)


def _report_settings(report: dict[str, Any], select: Selection | None) -> dict[str, Any]:
    """The report's settings as sweep.json keeps them, checked by name; the protocol sets its
    own metric (unless given), the keys it chooses and its selection seeds."""
    from mtfilter.report import check_report_settings, not_swept  # matplotlib-free

    check_report_settings(report)
    for other in not_swept(report.get("include") or []):  # said now, not after the training
        print(f"note: the report includes {other}, which has no sweep yet; its runs are left "
              "out of the report until its sweep has run", file=sys.stderr)  # fmt: skip
    if select is None:
        return report
    return {
        "metric": select.metric, **report,
        "select_key": list(select.candidates), "selection_seeds": select.selection_seeds,
    }  # fmt: skip


def _select_then_confirm(
    protocol: Protocol, execution: "Execution", runs: list[Run], definition: dict[str, Any],
    base: Path, settings: dict[str, Any], device: str, stacking: dict[str, Any],
) -> bool:  # fmt: skip
    """Selection runs, extended past edge picks until none moves, then the held-out runs."""
    from mtfilter.report import pick  # matplotlib-free: the report's own choice

    while True:
        if not execution.run(runs, definition):
            return False
        choices = pick(execution.folder, execution.names)  # the waves so far: a replay
        added = protocol.extend(choices)
        if not added:
            break
        print("extending past edge picks: " + "; ".join(added), flush=True)
        runs = _plan_waves(protocol.selection_grid(), base, settings, device, stacking)
    held_out = protocol.confirmation_grid(picks_by_point(choices, protocol.keys))
    if not held_out:
        return True
    print(f"confirming {len(held_out)} picks on seeds {protocol.selection.seeds}", flush=True)
    return execution.run(plan(base, held_out, settings, device=device, prefix=CONFIRMATION,
                              **stacking), definition)  # fmt: skip


def _plan_waves(
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


def _recorded_grid(grid: Grid | list[Grid], select: Selection) -> list[Grid]:
    """The grid as sweep.json records it: the protocol's keys and seeds as axes too, so the
    report knows every key that varies."""
    grids = grid if isinstance(grid, list) else [grid]
    seeds = [*select.selection_seeds, *select.seeds]
    return [{**one, **select.candidates, SEED_KEY: seeds} for one in grids]


class Execution:
    """Runs of one sweep folder: prepared, run here or on a cluster with progress lines, and
    tallied from the runs' own summaries at the end."""

    def __init__(
        self, folder: Path, executor: str, workers: int | None, runs_per_gpu: int,
        submitit: SubmititOptions | None,
    ) -> None:  # fmt: skip
        self.folder, self.executor = folder, executor
        self.workers, self.runs_per_gpu, self.submitit = workers, runs_per_gpu, submitit
        self.started = time.monotonic()
        self.names: list[str] = []  # every run of this sweep, in the order planned
        self.finished = 0
        self.stop_signal: int | None = None  # the signal that stopped the sweep, if one did

    def run(self, runs: list[Run], definition: dict[str, Any]) -> bool:
        """Run what is not finished yet; False when interrupted."""
        todo = prepare(self.folder, runs, definition)
        self.names += [run.name for run in runs if run.name not in self.names]
        done = len(runs) - len(todo)
        self.finished = len(self.names) - len(todo)
        replicas = sum(replicas_of(run) for run in runs)
        print(f"sweep {self.folder}: {len(runs)} runs ({replicas} replicas), {done} already "
              f"finished, {len(todo)} to run", flush=True)  # fmt: skip
        if not todo:
            return True
        if self.executor == "local":
            count = self.workers or default_workers(self.runs_per_gpu)
            print(f"running locally, {count} at a time, largest first", flush=True)
            self.stop_signal = run_locally(
                todo, count, self.runs_per_gpu, self._on_done, self._on_wait
            )
            return self.stop_signal is None
        all_ran = run_with_submitit(todo, self.folder, self.submitit or SubmititOptions(),
                                    self._on_done)  # fmt: skip
        self.stop_signal = None if all_ran else signal.SIGINT
        return all_ran

    def _on_done(self, run_folder: Path, state: RunState) -> None:
        self.finished += state.status == FINISHED
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - self.started))
        seconds = state.history[-1]["seconds"] if state.history else 0.0
        note = "" if state.status == FINISHED else f"  see {run_folder / 'log.txt'}"
        print(f"[{self.finished}/{len(self.names)} done, {elapsed}] {state.status:9s} "
              f"{state.name} ({seconds:.1f} s){note}", flush=True)  # fmt: skip

    def _on_wait(self, run_folder: Path, pid: int | None) -> None:
        owner = f" (pid {pid})" if pid else ""
        print(f"waiting: {run_folder.name} is still being written by another process{owner}, "
              "a fit of an earlier sweep; it is not started twice", flush=True)  # fmt: skip

    def finish(self, completed: bool) -> int:
        """Write the report and return the exit status, from the runs' own summaries."""
        from mtfilter.report import report as write_report  # matplotlib only when reporting

        written = write_report(self.folder)
        states = [reconcile(self.folder / name) for name in self.names]
        failed = [s for s in states if s.status in FAILED]
        unfinished = [s for s in states if s.status != FINISHED]
        total = len(states)
        print("report: " + ", ".join(str(path) for path in written), flush=True)
        if not completed:
            print(f"interrupted: {len(unfinished)} runs unfinished; run the same command to go "
                  "on", file=sys.stderr)  # fmt: skip
            return stopped_exit_status(self.stop_signal or signal.SIGINT)
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
        if run.learning_rates:
            seeds += f", learning rates {run.learning_rates} stacked"
        print(f"  {run.name}: {run.parameters:,} parameters outside the input table{seeds}")
        print(f"    mtfilter fit --config {base} {describe(run.settings)}")
