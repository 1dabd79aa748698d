"""The signals that stop a fit cleanly, and the exit status they leave (light: no torch)."""

import os
import signal

# Ctrl-C; what SLURM sends at a time limit or preemption (SIGTERM) and what it can be asked to
# send ahead of it (`--signal`, SIGUSR1/2; submitit's jobs use SIGUSR2); a closed terminal.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)  # fmt: skip


def stopped_exit_status(signum: int) -> int:
    """Exit status of a fit stopped by signal `signum`: 128 + its number, as a shell reports a
    process the signal ended (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + signum


def stop_signal_of(exit_status: int) -> signal.Signals | None:
    """The stop signal that ended a fit with `exit_status`, whether it stopped cleanly (128 + N)
    or died of it before it could (-N, as `subprocess` reports it); None for any other end."""
    for signum in STOP_SIGNALS:
        if exit_status in (-signum, stopped_exit_status(signum)):
            return signal.Signals(signum)
    return None


def terminal_outputs() -> list[int]:
    """Standard output and error where they are a terminal (ask before it may hang up: a closed
    terminal no longer says it is one)."""
    return [fd for fd in (1, 2) if os.isatty(fd)]


def leave_closed_terminal(outputs: list[int]) -> None:
    """After SIGHUP (the terminal was closed): `outputs` (see `terminal_outputs`) now go to
    /dev/null, as under `nohup`, so that printing later cannot fail with EIO halfway through a
    clean stop."""
    if not outputs:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in outputs:
        os.dup2(devnull, fd)
    os.close(devnull)
