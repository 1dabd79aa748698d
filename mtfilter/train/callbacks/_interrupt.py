"""Ctrl-C ends training cleanly at the end of the current epoch."""

import signal
import sys
import threading
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from tqdm import tqdm
from typing_extensions import override

from mtfilter.errors import RunAborted


class StopOnInterrupt(Callback):
    """The first Ctrl-C finishes the current epoch, then ends training normally (checkpoints and
    summary written as at the end); a second Ctrl-C aborts at once (`RunAborted`)."""

    def __init__(self) -> None:
        self._requested = False
        self._previous: Any = None

    @property
    def requested(self) -> bool:
        """Whether a Ctrl-C asked this fit to stop."""
        return self._requested

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if sys.platform == "win32" or not _in_main_thread():
            return
        self._previous = signal.getsignal(signal.SIGINT)

        def request_stop(signum: int, frame: Any) -> None:
            if self._requested:
                # Not a KeyboardInterrupt, which Lightning turns into exit status 1
                raise RunAborted("aborted by a second Ctrl-C; the last checkpoint is kept")
            self._requested = True
            if rank_zero_only.rank == 0:  # on a line of its own, below the progress bar
                tqdm.write("stopping after this epoch (press Ctrl-C again to abort now)",
                           file=sys.stderr)  # fmt: skip

        signal.signal(signal.SIGINT, request_stop)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        requested = self._requested
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            trainer.should_stop = True

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
