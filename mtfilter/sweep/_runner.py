"""Running a sweep's runs: each folder prepared, the runs started here or on a cluster with a
progress line each, and the exit status tallied from the runs' own records at the end."""

import signal
import sys
import time
from pathlib import Path
from typing import Any

from mtfilter.stop_signals import stopped_exit_status
from mtfilter.sweep._grid import Run, replicas_of
from mtfilter.sweep._local import default_workers, run_locally
from mtfilter.sweep._state import FAILED, FINISHED, RunState, prepare, reconcile
from mtfilter.sweep._submitit import SubmititOptions, run_with_submitit


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
