"""What runs inside a cluster job (submitit): one run folder's fit, stopped cleanly and requeued
when SLURM preempts the job or its time limit nears, so that it resumes from `last.ckpt`.

SLURM's signals reach every process of a job step, the fit included: SIGTERM at preemption or
`scancel --signal=TERM`, and the warning submitit asks for ahead of the time limit (SIGUSR2,
`--signal=USR2@90`). The fit stops cleanly on either (see `StopOnInterrupt`). Once it has, the
job asks submitit to requeue it, through submitit's own checkpoint-and-requeue handler: a
preemption is requeued whenever it comes, a time limit at most `max_num_timeout` times.
"""

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from mtfilter.stop_signals import STOP_SIGNALS
from mtfilter.sweep._execute import execute, threads_env


class FitJob:
    """A cluster job's function: runs `folder` as the local executor would (`execute`) and
    returns the run's status. Checkpointable for submitit (`checkpoint`): a requeued job calls
    it again, and the fit resumes from the run's `last.ckpt`."""

    def __init__(self) -> None:
        self._fit: subprocess.Popen | None = None

    def __call__(self, folder: str, threads: int | None = None) -> str:
        env = threads_env(threads) if threads else {}
        job_id = _job_id()
        requeue = _submitit_requeue_handler()
        if requeue is not None:
            # Ours until the fit has ended: submitit's handler would requeue at once, and exit,
            # while the fit still writes its checkpoint; its SIGTERM handler ignores SIGTERM.
            for signum in (_requeue_signal(), signal.SIGTERM):
                signal.signal(signum, self._pass_on)
        state = execute(Path(folder), env, on_start=self._started, job_id=job_id)
        status = state.status if state is not None else "running"
        if status == "stopped" and requeue is not None and _still_running(job_id):
            # submitit: `checkpoint` below, `scontrol requeue`, then exit without a result, so
            # the sweep keeps waiting for this job, which runs again
            requeue(_requeue_signal(), None)
        return status

    def checkpoint(self, folder: str, threads: int | None = None) -> Any:
        """The requeued job's call (submitit asks for it when requeueing): the same; the fit
        has stopped and written `last.ckpt` by then."""
        import submitit

        return submitit.helpers.DelayedSubmission(FitJob(), folder, threads)

    def _started(self, process: subprocess.Popen) -> None:
        self._fit = process

    def _pass_on(self, signum: int, frame: Any) -> None:
        # The fit usually has the signal already (SLURM signals the whole step); a repeated
        # scheduler signal changes nothing for it.
        fit = self._fit
        if fit is not None and fit.poll() is None:
            fit.send_signal(signum if signum in STOP_SIGNALS else signal.SIGTERM)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # pickled by submitit for the requeued job; the process is this job's own

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._fit = None


def _job_id() -> str | None:
    """This SLURM job's id as squeue shows it: `<array job>_<task>` for a job array's task."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def _submitit_requeue_handler() -> Any:
    """submitit's checkpoint-and-requeue handler, installed before a job's function runs; None
    outside a submitit job."""
    handler = signal.getsignal(_requeue_signal())
    owner = getattr(handler, "__self__", None)
    return handler if type(owner).__name__ == "SignalHandler" else None


def _requeue_signal() -> int:
    # submitit's preemption signal, SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL names another
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def _still_running(job_id: str | None) -> bool:
    """Whether SLURM still counts the job as running. A job being cancelled (`scancel`) or
    ending at its time limit is COMPLETING, and `scontrol requeue` would bring it back; a job
    SLURM requeues itself (PreemptMode=REQUEUE) must not be requeued twice. Outside SLURM
    (submitit's local mode) the job is running."""
    if job_id is None:
        return True
    try:
        state = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return state == "RUNNING"
