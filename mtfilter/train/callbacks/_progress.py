"""A progress line per epoch, refreshed by time: epochs done, elapsed, rate, best loss."""

import time

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ProgressBar
from tqdm import tqdm
from typing_extensions import override

from mtfilter.record.publishing import recording


class EpochProgressBar(ProgressBar):
    """Epochs done / total, elapsed time, rate and the best loss so far.

    Refreshed every `refresh_s` seconds rather than per step, so the display costs one host sync
    per refresh; silent when stderr is not a terminal.

    Args:
        refresh_s: Seconds between refreshes.
        monitor: Epoch-log key whose best value is shown.
    """

    def __init__(self, refresh_s: float = 1.0, monitor: str = "val/loss") -> None:
        super().__init__()
        self.refresh_s = refresh_s
        self.monitor = monitor
        self._enabled = True
        self._bar: tqdm | None = None
        self._last_refresh = 0.0
        self._until = ""  # how the run ends, when not at max_epochs

    @override
    def disable(self) -> None:
        self._enabled = False

    @override
    def enable(self) -> None:
        self._enabled = True

    @property
    @override
    def is_enabled(self) -> bool:
        return self._enabled and self._bar is not None and not self._bar.disable

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self._until = ""
        if total is not None and _stops_at_convergence(trainer, total):
            # The run ends when it converges, usually long before max_epochs: a total of
            # max_epochs would show an ETA to the cap. No total, no ETA: the epochs and the rate.
            self._until, total = f"until converged (at most {total:,} epochs)", None
        self._bar = tqdm(
            total=total,
            initial=trainer.current_epoch,
            unit="epoch",
            dynamic_ncols=True,
            disable=None,
            mininterval=0,
            smoothing=0.1,
        )
        self._last_refresh = time.monotonic()

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is None or self._bar.disable:
            return
        if time.monotonic() - self._last_refresh >= self.refresh_s:
            self._refresh(trainer, pl_module)

    def _refresh(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self._bar is not None
        record = recording(pl_module)
        self._last_refresh = time.monotonic()
        record.publish_epoch_log(check_finite=False)  # rank 0 only: the ranks stop together
        values, epochs = record.epoch_log.best(self.monitor)
        if len(values) == 1:
            postfix = f"best {self.monitor} {values[0]:.4f} @ {epochs[0]}"
        else:
            postfix = f"best {self.monitor} {np.mean(values):.4f} (mean of {len(values)} seeds)"
        self._bar.set_postfix_str(", ".join(filter(None, [postfix, self._until])), refresh=False)
        self._bar.update(record.epoch_log.num_epochs - self._bar.n)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            if not self._bar.disable:
                self._refresh(trainer, pl_module)
            self._bar.close()
            self._bar = None

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _stops_at_convergence(trainer: L.Trainer, max_epochs: int) -> bool:
    """Whether the convergence schedule can end the run before `max_epochs` (its first check
    comes after `patience` epochs)."""
    from mtfilter.train.callbacks._convergence import schedule_of  # a sibling

    schedule = schedule_of(trainer)
    return (
        schedule is not None and schedule.enabled and schedule.stop
        and max_epochs > schedule.patience
    )  # fmt: skip
