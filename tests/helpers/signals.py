"""Callbacks that send signals at chosen moments of a fit, so that interrupted fits and sweeps
are tested deterministically. A sweep's fits run them (`trainer.callbacks` in its settings) in
their own processes; those act once, marked by a flag file, so a second sweep runs undisturbed."""

import os
import signal
import time
from pathlib import Path

import lightning as L

from mtfilter.train.callbacks import StopOnInterrupt

PATIENCE_S = 120  # how long a fit waits for what the test does next


def _first_time(flag: str) -> bool:
    try:
        Path(flag).touch(exist_ok=False)
        return True
    except FileExistsError:
        return False


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {PATIENCE_S} s for {what}")
        time.sleep(0.02)


class CtrlCAtEpoch(L.Callback):
    """A Ctrl-C for this fit's own process at the start of epoch `epoch` (0-based)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


class CtrlCTheSweep(L.Callback):
    """At the end of epoch `at_epoch`, a Ctrl-C (or `signal`) for the sweep; waits until the
    sweep has passed it on to this fit, so the fit stops at the end of this epoch (its
    `StopOnInterrupt` comes after the callbacks of the config)."""

    def __init__(self, flag: str, at_epoch: int = 3, signal: str = "SIGINT") -> None:
        self.flag, self.at_epoch, self.signal = flag, at_epoch, signal

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 != self.at_epoch or not _first_time(self.flag):
            return
        os.kill(os.getppid(), getattr(signal, self.signal))
        stop = next(c for c in trainer.callbacks if isinstance(c, StopOnInterrupt))
        _wait_for(lambda: stop.requested, "the sweep to pass the Ctrl-C on")


class CtrlCTheSweepAfterFinishing(L.Callback):
    """Once the fit has finished (summary written), a Ctrl-C for the sweep, which passes it on to
    this process after Lightning's handling is over: it dies of SIGINT (exit status -2)."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not _first_time(self.flag):
            return
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getppid(), signal.SIGINT)
        time.sleep(PATIENCE_S)  # ended by the sweep's SIGINT
        raise TimeoutError("the sweep did not pass the Ctrl-C on")


class KillTheSweep(L.Callback):
    """At the end of epoch `at_epoch`, SIGKILL for the sweep; this fit, now an orphan, goes on
    once the file `release` exists (the test creates it when a second sweep is waiting)."""

    def __init__(self, flag: str, release: str, at_epoch: int = 3) -> None:
        self.flag, self.release, self.at_epoch = flag, release, at_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 != self.at_epoch or not _first_time(self.flag):
            return
        os.kill(os.getppid(), signal.SIGKILL)
        _wait_for(lambda: Path(self.release).exists(), "the test to release this fit")


class StopSignalAtEpoch(L.Callback):
    """At the end of epoch `at_epoch`, the first time only (marked by the file `flag`): a stop
    signal for this fit. `sender="self"` sends `signal` to this process; `sender="test"` writes
    this process's SLURM job id (its pid outside SLURM) and its run folder, a line each, into
    `flag` and waits for the test to send it (`scancel`, `kill`)."""

    def __init__(self, flag: str, at_epoch: int = 3, signal: str = "SIGTERM",
                 sender: str = "self") -> None:  # fmt: skip
        self.flag, self.at_epoch, self.signal, self.sender = flag, at_epoch, signal, sender

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 != self.at_epoch or not _first_time(self.flag + ".taken"):
            return
        if self.sender == "self":
            os.kill(os.getpid(), getattr(signal, self.signal))
        else:
            env = os.environ
            job = f"{env.get('SLURM_ARRAY_JOB_ID')}_{env.get('SLURM_ARRAY_TASK_ID')}"
            if "SLURM_ARRAY_JOB_ID" not in env:
                job = env.get("SLURM_JOB_ID", str(os.getpid()))
            Path(self.flag + ".partial").write_text(f"{job}\n{trainer.log_dir}")
            os.replace(self.flag + ".partial", self.flag)  # whole when it appears
        stop = next(c for c in trainer.callbacks if isinstance(c, StopOnInterrupt))
        _wait_for(lambda: stop.requested, f"a {self.signal}")


class StopSignalInsideEpoch(L.Callback):
    """A stop signal for this process inside epoch `at_epoch` (1-based), before its first
    step (`where="between steps"`) or in the middle of its backward pass (`"in a step"`)."""

    def __init__(self, at_epoch: int, where: str, signal: str = "SIGTERM") -> None:
        self.at_epoch, self.where, self.signal = at_epoch, where, signal

    def _send(self, trainer: L.Trainer, where: str) -> None:
        if trainer.current_epoch + 1 == self.at_epoch and where == self.where:
            os.kill(os.getpid(), getattr(signal, self.signal))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._send(trainer, "between steps")

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._send(trainer, "in a step")
