"""Running one sweep run: `mtfilter fit` in a child process, so a run that crashes, runs out of
memory or diverges cannot take the sweep down, with its outcome recorded in `run.json`.

The run folder's lock (see `RunLock`) is taken before the fit starts and handed to the fit's
process, so at most one live process ever writes a run folder: a run still held by a fit that
outlived a killed sweep is waited for, never started twice.
"""

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mtfilter.folders import FIT_CONFIG, LOG_FILE, SUMMARY_FILE
from mtfilter.record.summaries import read_status
from mtfilter.stop_signals import stop_signal_of
from mtfilter.sweep._state import FINISHED, RunLock, RunState, reconcile

# Seconds between checks of a run folder locked by another process.
LOCK_POLL_S = 1.0


def threads_env(threads: int) -> dict[str, str]:
    """The environment that gives a fit's process `threads` CPU threads."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def fit_command(folder: Path) -> list[str]:
    """The run's fit, logging into its own folder; continued from `last.ckpt` when an earlier
    attempt left one (resuming is exact: see the README)."""
    command = [
        sys.executable, "-m", "mtfilter.cli", "fit", "--config", str(folder / FIT_CONFIG),
        "--trainer.logger.init_args.save_dir", str(folder),
        "--trainer.logger.init_args.name", "",
        "--trainer.logger.init_args.version", "",
    ]  # fmt: skip
    last = folder / "checkpoints" / "last.ckpt"
    if last.is_file():
        command += ["--ckpt_path", str(last)]
    return command


def execute(
    folder: Path,
    env: dict[str, str] | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    on_wait: Callable[[Path, int | None], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    job_id: str | None = None,
) -> RunState | None:
    """Run the fit of `folder` to its end and record how it went (with `job_id`, the cluster
    job that ran it, in its history).

    If another live process holds the folder (a fit left running by a sweep that was killed,
    or by a cluster job that is still ending), wait for it (`on_wait` is told once) and run
    only if it did not complete. Returns None when `should_stop` turns true while waiting.
    """
    lock = RunLock(folder)
    if not lock.acquire():
        if on_wait is not None:
            on_wait(folder, lock.owner())
        while not lock.acquire():
            if should_stop():
                return None
            time.sleep(LOCK_POLL_S)
        state = reconcile(folder)
        if state.status == FINISHED:
            lock.release()
            return state
    try:
        return _run_locked(folder, lock, env, on_start, job_id)
    finally:
        lock.release()


def _run_locked(
    folder: Path,
    lock: RunLock,
    env: dict[str, str] | None,
    on_start: Callable[[subprocess.Popen], None] | None,
    job_id: str | None,
) -> RunState:
    state = RunState.load(folder)
    state.status, state.error = "running", None
    state.attempts += 1
    state.started = time.time()
    state.save(folder)
    command = fit_command(folder)
    with open(folder / LOG_FILE, "a") as log:
        log.write(f"\n=== attempt {state.attempts}: {shlex.join(command)}\n")
        log.flush()
        attempt_start = log.tell()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            # its own session: a Ctrl-C in the terminal reaches the sweep alone, which then
            # asks each running fit to stop exactly once (a second signal would abort it)
            start_new_session=True,
            pass_fds=(lock.fileno(),),  # the fit holds the folder's lock as long as it lives
        )
        lock.record_owner(process.pid)
        if on_start is not None:
            on_start(process)
        code = process.wait()
    written = _written_since(folder / SUMMARY_FILE, state.started)
    outcome, error = read_status(folder) if written else (None, None)
    # The fit's summary is the truth: a completed fit stays completed whatever happened to its
    # process after it wrote it (a Ctrl-C landing during its last moments, say).
    stop_signal = stop_signal_of(code)
    status = outcome or ("stopped" if stop_signal is not None else "failed")
    state = RunState.load(folder)
    state.status, state.ended = status, time.time()
    if status == "stopped":  # a Ctrl-C or a scheduler's signal: it resumes where it stopped
        name = "Ctrl-C" if stop_signal in (None, signal.SIGINT) else stop_signal.name
        again = (
            "run the sweep again to go on from its last.ckpt"
            if (folder / "checkpoints" / "last.ckpt").is_file()
            else "it stopped before its first checkpoint: running the sweep again starts it anew"
        )
        state.error = error or f"stopped by {name}: {again}"
    elif status != FINISHED:
        state.error = error or _error_in_log(folder / LOG_FILE, attempt_start, code)
    state.history.append(
        {"attempt": state.attempts, "status": status, "exit_code": code,
         "seconds": round(state.ended - (state.started or state.ended), 3),
         **({"job": job_id} if job_id else {})}
    )  # fmt: skip
    state.save(folder)
    return state


def _written_since(path: Path, start: float | None) -> bool:
    """Whether `path` was written by this attempt, not left by an earlier one."""
    try:
        return start is None or path.stat().st_mtime >= start - 1.0  # coarse file clocks
    except OSError:
        return False


def _error_in_log(path: Path, offset: int, code: int) -> str:
    """The error of a fit that wrote no summary, from this attempt's part of its log: mtfilter's
    one-line error, else the final line of a traceback, else how the process ended."""
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            lines = [line.rstrip() for line in f if line.strip()]
    except OSError:
        lines = []
    for line in reversed(lines):
        if line.startswith("mtfilter: error:"):
            return line.removeprefix("mtfilter: error:").strip()
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    if tracebacks:
        after = [line for line in lines[tracebacks[-1] :] if not line.startswith(" ")]
        return after[-1]  # "SomeError: message"
    if code < 0:
        name = signal.Signals(-code).name
        why = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"the fit was killed by {name}{why}"
    return f"the fit exited with status {code}"
