"""Publishing what a run records: the epoch log and the conflict telemetry move from the device
to the loggers in batches, and a NaN or infinite figure stops the run.

`RecordsEpochs` is what mtfilter's callbacks need from a LightningModule; they depend on it,
not on `BitMappingModule`.
"""

import time
from typing import Any, Protocol, runtime_checkable

import lightning as L
import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from mtfilter.errors import NonFiniteLossError
from mtfilter.nn.floor import Floor
from mtfilter.nn.replicas import Replica
from mtfilter.record import tensorboard
from mtfilter.record.conflicts import ConflictRecord
from mtfilter.record.epoch_log import EpochLog
from mtfilter.record.metrics import Figure


class EpochPublisher:
    """Writes the epoch log's new rows and the conflict figures to every logger (TensorBoard:
    one event per written epoch and replica; others: `log_metrics`), at most every
    `interval_s` seconds during training: each publish pulls the log to the host, one sync.

    With stacked replicas TensorBoard gets one run per replica, named by it (`seed_<s>/`, or
    `seed_<s>-lr_<rate>/` with stacked learning rates), with the same tags.

    The loggers get every `every_epochs`-th epoch and the last one (`final`), or none with 0
    (Lightning's `log_every_n_steps` semantics); every epoch is still recorded, checked for
    NaN/inf and in the summaries. Writing an event is most of what
    logging costs (docs/benchmarks.md), so a long run's curves need not hold every epoch.
    """

    interval_s = 2.0
    every_epochs = 1

    def __init__(
        self, epoch_log: EpochLog, conflicts: ConflictRecord, replicas: list[Replica]
    ) -> None:
        self.epoch_log, self.conflicts, self.replicas = epoch_log, conflicts, replicas
        self.conflict_keys: list[str] = []
        # Earlier event files' epochs from here on are stale: all of them for a fit from scratch
        # (in a sweep's fixed folder, an attempt that stopped before its first checkpoint left
        # some), those after the checkpoint for one resumed in its own folder (set on loading).
        self.purge_from: int | None = 1
        self._last = time.monotonic()
        self._non_finite: str | None = None  # the first NaN/inf seen, until raised
        self._replica_writers: list[SummaryWriter] = []
        self._held: tuple[np.ndarray, np.ndarray] | None = None  # the last epoch not written

    def last_epoch_metrics(self) -> dict[str, float]:
        """The last epoch's figures (not per bit), named as `validate` names them (`seed_3/`
        before each replica's when stacked); empty before the first epoch."""
        if self.epoch_log.num_epochs == 0:
            return {}
        keys = [key for key in self.epoch_log.keys if "/bit_" not in key]
        row = np.stack([self.epoch_log.last(key) for key in keys], axis=1)  # (R, K), on the host
        return replica_metrics(keys, row, self.replicas)

    def due(self) -> bool:
        return time.monotonic() - self._last > self.interval_s

    def publish(
        self, loggers: list[Logger], writes: bool, check_finite: bool = True, final: bool = False
    ) -> None:
        """Pull recorded epochs to the host, write those due (`writes`: this is rank 0; `final`:
        the last epoch too), and stop on NaN/inf. With `check_finite=False` a non-finite value
        is only noted, and raised at the next checked call: under DDP every rank checks at the
        same epochs, so all stop together."""
        self._last = time.monotonic()
        self.epoch_log.pull()
        epochs, values = self.epoch_log.take_unpublished()  # (E,), (E, R, K)
        if self.purge_from is not None and writes:
            for writer in self._all_writers(loggers):
                tensorboard.purge_from(writer, self.purge_from)
            self.purge_from = None
        if len(epochs) > 0:
            if writes:
                self._write_rows(loggers, self.epoch_log.keys, *self._due(epochs, values, final))
            fresh = epochs > self.epoch_log.restored_through  # a restored history may lack a figure
            self._note_non_finite(epochs[fresh], values[fresh])
        elif final and writes and self._held is not None:  # the last epoch, left out before
            self._write_rows(loggers, self.epoch_log.keys, *self._held)
        conflict_epochs, conflicts = self.conflicts.take()  # (E, R, K)
        if conflicts is not None and writes:
            self._write_rows(loggers, self.conflict_keys, np.array(conflict_epochs),
                             conflicts.numpy())  # fmt: skip
            self._write_cosine_images(loggers, conflict_epochs[-1])
        if final:
            self._held = None
        if check_finite and self._non_finite is not None:
            raise NonFiniteLossError(self._non_finite)

    def _due(
        self, epochs: np.ndarray, values: np.ndarray, final: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rows the loggers get: every `every_epochs`-th epoch, and the last with `final`;
        the last one left out is held for a final call that brings no new epoch."""
        if self.every_epochs == 0:
            return epochs[:0], values[:0]
        due = epochs % self.every_epochs == 0
        if final:
            due[-1] = True
        self._held = None if due[-1] else (epochs[-1:], values[-1:])
        return epochs[due], values[due]

    def _note_non_finite(self, epochs: np.ndarray, values: np.ndarray) -> None:
        bad = ~np.isfinite(values)
        if bad.any() and self._non_finite is None:
            row, replica, key = np.argwhere(bad)[0]
            self._non_finite = (
                f"{self.epoch_log.keys[key]} became {values[row, replica, key]} at epoch "
                f"{epochs[row]} ({self.replicas[replica].describe()}): training stopped. Lower the "
                "learning rate or check the configuration; the best checkpoint and summary "
                "of the epochs before are kept."
            )

    def writers(self, logger: TensorBoardLogger) -> list[SummaryWriter]:
        """One writer per replica: the run's own for a single replica, else a folder per
        replica (`Replica.name`) so TensorBoard shows each as its own run with the same tags."""
        if len(self.replicas) == 1:
            return [logger.experiment]
        if not self._replica_writers:
            self._replica_writers = [
                SummaryWriter(f"{logger.log_dir}/{replica.name}") for replica in self.replicas
            ]
        return self._replica_writers

    def flush(self) -> None:
        for writer in self._replica_writers:
            writer.flush()

    def _all_writers(self, loggers: list[Logger]) -> list[SummaryWriter]:
        return [w for lg in loggers if isinstance(lg, TensorBoardLogger) for w in self.writers(lg)]

    def _write_rows(
        self, loggers: list[Logger], keys: list[str], epochs: np.ndarray, values: np.ndarray
    ) -> None:
        if len(epochs) == 0:
            return
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                for writer, replica_values in zip(
                    self.writers(logger), values.transpose(1, 0, 2), strict=True
                ):
                    tensorboard.write_scalar_rows(writer, keys, epochs, replica_values)
            else:
                for epoch, row in zip(epochs.tolist(), values, strict=True):
                    logger.log_metrics(replica_metrics(keys, row, self.replicas), step=epoch)

    def _write_cosine_images(self, loggers: list[Logger], epoch: int) -> None:
        cosines = self.conflicts.latest_cosines
        if cosines is None:  # a restored history only: checkpoints keep no cosine matrix
            return
        matrices = cosines.float().cpu().numpy()
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                for writer, matrix in zip(self.writers(logger), matrices, strict=True):
                    tensorboard.write_cosine_image(writer, "conflict/cosine", matrix, epoch)


def replica_metrics(keys: list[str], row: np.ndarray, replicas: list[Replica]) -> dict[str, float]:
    """Flatten a (R, K) row into logger metrics, prefixed by replica when there are several."""
    if len(replicas) == 1:
        return dict(zip(keys, row[0].tolist(), strict=True))
    return {
        f"{replica.name}/{key}": value
        for replica, replica_row in zip(replicas, row, strict=True)
        for key, value in zip(keys, replica_row.tolist(), strict=True)
    }


@runtime_checkable
class RecordsEpochs(Protocol):
    """What mtfilter's callbacks read from a LightningModule: its stacked replicas, the epoch
    log and its publishing, and what the run is, for its summary (`BitMappingModule` is one)."""

    replicas: list[Replica]
    num_bits: int
    epoch_log: EpochLog
    publisher: EpochPublisher
    floor: Floor | None  # the model's representational floor on its data, once fit starts
    figures: list[Figure]  # what each epoch records (`metrics.figures`)

    def floor_of(self, replica: int) -> Floor | None:
        """A replica's representational floor on its training data, once fit starts."""
        ...

    def split_sections(
        self, weights: dict[str, Tensor] | None
    ) -> list[dict[str, dict[str, Any]]] | None:
        """Per replica, each data split's figures with these weights (data with held-out
        splits only; None otherwise)."""
        ...

    def publish_epoch_log(self, check_finite: bool = True) -> None: ...

    def scale_learning_rate(self, replica: int, factor: float) -> None: ...

    def stop_training(self, replicas: list[int]) -> None: ...

    def run_description(self, replica: int, best_epoch: int | None = None) -> dict[str, Any]: ...


def recording(pl_module: L.LightningModule) -> RecordsEpochs:
    """`pl_module` as what the callbacks need, or one clear error."""
    if not isinstance(pl_module, RecordsEpochs):
        raise TypeError(
            f"mtfilter's callbacks need a LightningModule that records its epochs (such as "
            f"BitMappingModule), got {type(pl_module).__name__}"
        )
    return pl_module
