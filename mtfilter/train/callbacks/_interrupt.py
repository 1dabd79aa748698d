"""Ctrl-C, and the signals schedulers send before they kill a job, end training cleanly."""

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from tqdm import tqdm
from typing_extensions import override

from mtfilter.errors import RunAborted, RunStopped
from mtfilter.stop_signals import STOP_SIGNALS, leave_closed_terminal, terminal_outputs

# SLURM waits 30 s (its default KillWait) between SIGTERM and SIGKILL; ending the epoch and
# writing the checkpoint must fit well inside that, leaving time for the summary and the exit.
GRACE_S = 20.0


class StopOnInterrupt(Callback):
    """A stop signal ends training cleanly, as if it were the last epoch: `last.ckpt` and the
    summary (status `stopped`) are written, and the fit resumes exactly from `last.ckpt`.

    Signals: Ctrl-C (SIGINT), SIGTERM (a scheduler's time limit or preemption, `kill`), SIGHUP
    (a closed terminal), SIGUSR1/SIGUSR2 (SLURM's `--signal` warning). The current epoch
    finishes first, unless it could not end and be written within `grace_s` of the signal (very
    wide models, where one epoch takes longer than a scheduler waits before it kills): then
    training stops inside the epoch (`RunStopped`) and `last.ckpt` stays as last written, at the
    end of an earlier epoch. A second Ctrl-C aborts at once (`RunAborted`); a repeated scheduler
    signal changes nothing.

    `signal` is the number of the signal that stopped the fit (None if none came); the
    `mtfilter` command exits with `stopped_exit_status(signal)`.

    Args:
        grace_s: Longest time between a signal other than Ctrl-C and the end of training
            (default: `GRACE_S`).
    """

    def __init__(self, grace_s: float | None = None) -> None:
        self.grace_s = GRACE_S if grace_s is None else grace_s
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        self._terminal_outputs: list[int] = []
        self._trainer: L.Trainer | None = None
        self._epoch_start: float | None = None
        self._epoch_s: float | None = None  # how long the last complete epoch took
        self._in_step = False  # inside a training step: stopping there leaves nothing half-done
        self._stop_inside = False

    @property
    def requested(self) -> bool:
        """Whether a signal asked this fit to stop."""
        return self.signal is not None

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not earlier: Lightning installs its own SIGTERM handler (which fails the fit)
        # just before training starts, and this one replaces it.
        if sys.platform == "win32" or not _in_main_thread():
            return
        self._trainer = trainer
        self._terminal_outputs = terminal_outputs()
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            if signum == signal.SIGINT == self.signal:
                # Not a KeyboardInterrupt, which Lightning turns into exit status 1
                raise RunAborted("aborted by a second Ctrl-C; the last checkpoint is kept")
            return  # schedulers repeat their signals; the stop is under way
        self.signal = signum
        name = signal.Signals(signum).name
        if signum == getattr(signal, "SIGHUP", None):
            leave_closed_terminal(self._terminal_outputs)
        if signum != signal.SIGINT and not self._epoch_ends_in_time():
            self._stop_inside = True
            if self._in_step:
                raise self._stopped_inside()
            return
        if rank_zero_only.rank == 0:  # on a line of its own, below the progress bar
            again = " (press Ctrl-C again to abort now)" if signum == signal.SIGINT else ""
            tqdm.write(f"{name}: stopping after this epoch{again}", file=sys.stderr)

    def _epoch_ends_in_time(self) -> bool:
        """Whether the current epoch, and the checkpoint after it, will be done within
        `grace_s`, judged by the last epoch and the last checkpoint write."""
        trainer = self._trainer
        if trainer is None or trainer.world_size > 1:
            return True  # the processes must agree on where to stop: at the end of an epoch
        if self._epoch_s is None or self._epoch_start is None:
            return False  # no epoch finished yet: no telling how long one takes
        left = self._epoch_s - (time.monotonic() - self._epoch_start)
        return max(left, 0.0) + _last_write_s(trainer) <= self.grace_s

    def _stopped_inside(self) -> RunStopped:
        assert self._trainer is not None and self.signal is not None
        trainer, name = self._trainer, signal.Signals(self.signal).name
        epoch = trainer.current_epoch + 1
        took = (
            f"an epoch took {self._epoch_s:.1f} s" if self._epoch_s is not None
            else "no epoch had ended yet"
        )  # fmt: skip
        message = (
            f"{name} inside epoch {epoch}, which would not have ended within {self.grace_s:g} s "
            f"({took}): stopped there"
        )
        checkpoint = getattr(trainer.checkpoint_callback, "last_path", None)
        if checkpoint and Path(checkpoint).is_file() and trainer.log_dir is not None:
            config = Path(trainer.log_dir) / "config.yaml"
            message += (
                f"; resume from the last checkpoint: mtfilter fit --config {config} "
                f"--ckpt_path {checkpoint}"
            )
        else:
            message += "; no checkpoint was written yet, so running it again starts over"
        return RunStopped(message, self.signal)

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._stop_inside:  # the signal came between two steps
            raise self._stopped_inside()
        self._in_step = True

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        self._in_step = False

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_start is not None:
            self._epoch_s = time.monotonic() - self._epoch_start
        requested = self.signal is not None
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            trainer.should_stop = True

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        self._trainer = None


def _last_write_s(trainer: L.Trainer) -> float:
    """How long the last checkpoint write took (0 before the first)."""
    return float(getattr(trainer.checkpoint_callback, "last_write_s", 0.0))


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
