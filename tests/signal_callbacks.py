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
    """At the end of epoch `at_epoch`, a Ctrl-C for the sweep; waits until the sweep has passed
    it on to this fit, so the fit stops at the end of this epoch (its `StopOnInterrupt` comes
    after the callbacks of the config)."""

    def __init__(self, flag: str, at_epoch: int = 3) -> None:
        self.flag, self.at_epoch = flag, at_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 != self.at_epoch or not _first_time(self.flag):
            return
        os.kill(os.getppid(), signal.SIGINT)
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
