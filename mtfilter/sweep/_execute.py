"""Running one sweep run: `mtfilter fit` in a child process, so a run that crashes, runs out of
memory or diverges cannot take the sweep down, with its outcome recorded in `run.json`."""

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mtfilter.sweep._state import FINISHED, FIT_CONFIG, LOG_FILE, RunState, read_summary


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
) -> RunState:
    """Run the fit of `folder` to its end and record how it went."""
    state = RunState.load(folder)
    state.status, state.error = "running", None
    state.attempts += 1
    state.started = time.time()
    state.save(folder)
    command = fit_command(folder)
    with open(folder / LOG_FILE, "a") as log:
        log.write(f"\n=== attempt {state.attempts}: {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            # its own session: a Ctrl-C in the terminal reaches the sweep alone, which then
            # asks each running fit to stop exactly once (a second signal would abort it)
            start_new_session=True,
        )
        if on_start is not None:
            on_start(process)
        code = process.wait()
    summary = read_summary(folder) if _written_since(folder / "summary.json", state.started) else {}
    status = summary.get("status") or "failed"
    if code != 0 and status == FINISHED:  # the summary was written, then the process broke
        status = "failed"
    if code == -signal.SIGINT:  # stopped by the sweep's Ctrl-C before it could stop cleanly
        status = "stopped"
    state = RunState.load(folder)
    state.status, state.ended = status, time.time()
    if status != FINISHED:
        # the fit's own account (exception type and message) where it wrote one, else the
        # end of its log, where a crash's traceback is
        state.error = summary.get("error") or _tail(folder / LOG_FILE) or f"exit status {code}"
    state.history.append(
        {"attempt": state.attempts, "status": status, "exit_code": code,
         "seconds": round(state.ended - (state.started or state.ended), 3)}
    )  # fmt: skip
    state.save(folder)
    return state


def execute_job(folder: str, threads: int | None = None) -> str:
    """Entry point of a cluster job (submitit): run one folder, return its status."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else None
    return execute(Path(folder), env).status


def _written_since(path: Path, start: float | None) -> bool:
    """Whether `path` was written by this attempt, not left by an earlier one."""
    try:
        return start is None or path.stat().st_mtime >= start - 1.0  # coarse file clocks
    except OSError:
        return False


def _tail(path: Path, lines: int = 12) -> str:
    """The last lines of a log, where a traceback's final message is."""
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])
