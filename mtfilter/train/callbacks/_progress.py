"""A progress line per epoch, refreshed by time: epochs done, elapsed, rate, best loss; without a
terminal (a log file), a plain line now and then instead."""

import sys
import time

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ProgressBar
from tqdm import tqdm
from typing_extensions import override

from mtfilter.errors import ConfigError
from mtfilter.record.publishing import recording


class EpochProgressBar(ProgressBar):
    """Epochs done / total, elapsed time, rate and the best loss so far.

    Refreshed every `refresh_s` seconds rather than per step, so the display costs one host sync
    per refresh. When stderr is not a terminal (`make fit > log.txt`, a batch job), a plain line
    every `log_every_s` seconds instead: epoch, elapsed time, rate, best figure, and the
    convergence schedule's learning-rate drops and converged replicas so far.

    Args:
        refresh_s: Seconds between refreshes on a terminal.
        monitor: Epoch-log key whose best value is shown.
        log_every_s: Seconds between plain lines without a terminal; 0: none.
    """

    def __init__(
        self, refresh_s: float = 1.0, monitor: str = "val/loss", log_every_s: float = 60.0
    ) -> None:
        super().__init__()
        if not log_every_s >= 0:
            raise ConfigError(f"progress.log_every_s must be >= 0, got {log_every_s}")
        self.refresh_s = refresh_s
        self.monitor = monitor
        self.log_every_s = log_every_s
        self._started = 0.0
        self._plain = False  # plain lines: no terminal
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
            self._until, total = f"until converged, at most {total:,}", None
        self._bar = tqdm(
            total=total,
            initial=trainer.current_epoch,
            unit="epoch",
            dynamic_ncols=True,
            disable=None,
            mininterval=0,
            smoothing=0.1,
        )
        self._last_refresh = self._started = time.monotonic()
        self._plain = bool(self._bar.disable) and self.log_every_s > 0
        self._first_epoch = trainer.current_epoch

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is None:
            return
        if self._plain and time.monotonic() - self._last_refresh >= self.log_every_s:
            self._print_line(trainer, pl_module)
        elif not self._bar.disable and time.monotonic() - self._last_refresh >= self.refresh_s:
            self._refresh(trainer, pl_module)

    def _print_line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """`epoch 4,900 (until converged, at most 50,000), 6.2 min, 13.1 epochs/s, best val/loss
        0.0047 @ 4,812, lr drops 2, converged 0 of 1`: one line, for a log file."""
        from mtfilter.train.callbacks._convergence import schedule_of  # a sibling

        record = recording(pl_module)
        self._last_refresh = now = time.monotonic()
        record.publish_epoch_log(check_finite=False)
        epoch = trainer.current_epoch + 1
        elapsed = now - self._started
        rate = (epoch - self._first_epoch) / elapsed if elapsed > 0 else 0.0
        total = f"{self._until}" if self._until else f"of {trainer.max_epochs:,}"
        values, epochs = record.epoch_log.best(self.monitor)
        if len(values) == 1:
            best = f"best {self.monitor} {values[0]:.4f} @ {int(epochs[0]):,}"
        else:
            best = f"best {self.monitor} {np.mean(values):.4f} (mean of {len(values)} replicas)"
        parts = [f"epoch {epoch:,} ({total})", f"{elapsed / 60:.1f} min",
                 f"{rate:.1f} epochs/s", best]  # fmt: skip
        schedule = schedule_of(trainer)
        if schedule is not None and schedule.enabled:
            drops = sum(len(d) for d in schedule.drop_epochs)
            done = sum(e is not None for e in schedule.converged_epochs)
            parts += [f"lr drops {drops}", f"converged {done} of {len(schedule.converged_epochs)}"]
        print(", ".join(parts), file=sys.stderr, flush=True)

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
    """Whether the convergence schedule can end the run before `max_epochs` (its first plateau
    check comes after `patience` epochs; a floor check at its first check)."""
    from mtfilter.train.callbacks._convergence import schedule_of  # a sibling

    schedule = schedule_of(trainer)
    return (
        schedule is not None and schedule.enabled and schedule.stop
        and (max_epochs > schedule.patience or schedule.stop_at_floor)
    )  # fmt: skip
