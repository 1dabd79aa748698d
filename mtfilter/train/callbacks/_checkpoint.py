"""The best-epoch checkpoint: exact best weights tracked every epoch, files written seldom."""

import math
import os
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from mtfilter.errors import ConfigError, NonFiniteLossError
from mtfilter.record.publishing import RecordsEpochs, recording
from mtfilter.train.checkpoint_upgrade import tracked_entries


class BestEpochCheckpoint(ModelCheckpoint):
    """Checkpoints: `best.ckpt`, the weights of the best epoch, and `last.ckpt`, to resume.

    `best.ckpt` holds the weights of the epoch with the lowest `monitor`, per replica, and
    `last.ckpt` everything needed to resume, without a save on every improving epoch.

    Lightning's ModelCheckpoint saves whenever the monitored loss improves, which here is almost
    every epoch and costs more than a small model's epoch (~4-5 ms a save). Instead the best
    weights are copied into a buffer on the device at the end of every epoch that improves on
    the best (on a GPU by `torch.where`, without a host sync), so the best epoch is exact, and
    files are written at most every `every_n_seconds`, spending at most `max_write_fraction` of
    the wall time writing, plus once at the end of training.

    `best.ckpt` holds only model weights and buffers (BatchNorm statistics) of the best epoch of
    each replica, with the hyperparameters and the dataset fingerprint: load it for `validate`,
    `test`, `predict` or `BitMappingModule.load_from_checkpoint`. Resume training from
    `last.ckpt`, which also carries the optimizer, the metric history and this best-epoch state.

    Args:
        monitor: Epoch-log key to minimise.
        dirpath: Folder of the checkpoints (default: `<log dir>/checkpoints`).
        every_n_seconds: Shortest time between two writes during training.
        max_write_fraction: Longest share of the wall time spent writing; large models write
            less often than `every_n_seconds` to stay under it.
    """

    def __init__(
        self,
        monitor: str = "val/loss",
        dirpath: str | None = None,
        every_n_seconds: float = 60.0,
        max_write_fraction: float = 0.05,
    ) -> None:
        if not 0 < max_write_fraction <= 1:
            raise ConfigError(
                f"checkpoint.max_write_fraction must be in (0, 1], got {max_write_fraction}"
            )
        if not every_n_seconds >= 0:
            raise ConfigError(f"checkpoint.every_n_seconds must be >= 0, got {every_n_seconds}")
        # What it inherits: the folder (`dirpath`, default `<log dir>/checkpoints`), the state
        # key of checkpoints, `best_model_path` / `last_model_path` and the Trainer's handling of
        # its checkpoint callback (`trainer.checkpoint_callback`, `ckpt_path="best"` / "last").
        # Its own saving is replaced (the two hooks at the end do nothing); `filename` and
        # `save_last` name the two files for what Lightning reads of them.
        super().__init__(
            dirpath=dirpath,
            filename="best",
            monitor=monitor,
            mode="min",
            save_last=True,
            enable_version_counter=False,
        )
        self.every_n_seconds = every_n_seconds
        self.max_write_fraction = max_write_fraction
        self.num_writes = 0
        self.last_write_s = 0.0  # how long the last write took (a stop signal's grace counts it)
        self._next_write = math.inf
        self._names: list[str] = []  # state_dict entries tracked per replica
        self._live: list[Tensor] = []  # their (R, n) views of the live tensors
        self._snapshot: list[Tensor] | None = None  # best weights, (R, n) per tracked entry
        self._best_score: Tensor | None = None  # (R,)
        self._best_epoch: Tensor | None = None  # (R,)
        self._restored: dict[str, Any] | None = None
        self._cached_state_key: str | None = None
        self._record: RecordsEpochs | None = None

    @property
    @override
    def state_key(self) -> str:
        # Lightning formats this key from the arguments at every hook call (~1.7 us, ~10 calls
        # an epoch); it never changes.
        if self._cached_state_key is None:
            self._cached_state_key = super().state_key
        return self._cached_state_key

    @property
    def best_path(self) -> str:
        return os.path.join(self.dirpath or "", "best" + self.FILE_EXTENSION)

    @property
    def last_path(self) -> str:
        return os.path.join(self.dirpath or "", self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record = recording(pl_module)  # checked once, read every epoch
        replicas = len(self._record.replicas)
        state = pl_module.state_dict()  # detached tensors sharing the live storage
        self._names = tracked_entries(state, replicas)
        self._live = [state[name].view(replicas, -1) for name in self._names]
        device = pl_module.device
        if self._restored is not None:  # resumed: the best so far comes from last.ckpt
            self._snapshot = [t.to(device) for t in self._restored["snapshot"]]
            self._best_score = self._restored["best_score"].to(device)
            self._best_epoch = self._restored["best_epoch"].to(device)
        else:
            self._snapshot = [live.clone() for live in self._live]
            self._best_score = torch.full((replicas,), math.inf, device=device)
            self._best_epoch = torch.zeros(replicas, dtype=torch.long, device=device)
        self._next_write = time.monotonic() + self.every_n_seconds

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self._best_score is not None and self._best_epoch is not None
        assert self._record is not None
        record = self._record
        epoch = trainer.current_epoch + 1
        current = record.epoch_log.latest(self.monitor)  # (R,) on the device
        ended = _ended(trainer, epoch, len(record.replicas))
        if ended is not None:  # a replica that converged stopped there: later epochs never count
            current = current.masked_fill(torch.tensor(ended, device=current.device), math.inf)
        if current.device.type == "cpu":  # reading it costs no synchronisation here
            self._track_on_host(current, epoch)
        else:
            self._track_on_device(current, epoch)

        due = time.monotonic() >= self._next_write
        if trainer.world_size > 1:
            due = trainer.strategy.broadcast(due)
        if due:
            record.publish_epoch_log()  # raises on NaN before anything is written
            self._write(trainer, last=True)

    def _track_on_device(self, current: Tensor, epoch: int) -> None:
        """Keep each improved replica's weights, decided on the device: never waited for."""
        assert self._snapshot is not None and self._best_score is not None
        assert self._best_epoch is not None
        better = current < self._best_score  # NaN is never better
        torch.where(better, current, self._best_score, out=self._best_score)
        # A Python int as `where` operand travels as a kernel argument: no host-to-device copy.
        self._best_epoch = torch.where(better, epoch, self._best_epoch)
        mask = better[:, None]
        for best, live in zip(self._snapshot, self._live, strict=True):
            torch.where(mask, live, best, out=best)

    def _track_on_host(self, current: Tensor, epoch: int) -> None:
        """The same on a CPU, deciding in Python: one fused copy, and only when it improved."""
        assert self._snapshot is not None and self._best_score is not None
        assert self._best_epoch is not None
        values, bests = current.tolist(), self._best_score.tolist()
        better = [value < best for value, best in zip(values, bests, strict=True)]
        if not any(better):
            return
        if all(better):
            torch._foreach_copy_(self._snapshot, self._live)
            self._best_score.copy_(current)
            self._best_epoch.fill_(epoch)
            return
        improved = [replica for replica, is_better in enumerate(better) if is_better]
        targets = [best[r] for r in improved for best in self._snapshot]
        torch._foreach_copy_(targets, [live[r] for r in improved for live in self._live])
        rows = torch.tensor(improved, device=current.device)
        self._best_score.index_copy_(0, rows, current[rows])
        self._best_epoch.index_fill_(0, rows, epoch)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._snapshot is not None:
            self._write(trainer, last=True)

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # The live weights may be broken (NaN) or mid-epoch: keep last.ckpt as last written and
        # save only the best weights, which are always those of a complete, finite epoch.
        if self._best_epoch is not None and bool((self._best_epoch > 0).any()):
            self._write(trainer, last=False)
            rank_zero_info(f"{type(exception).__name__}: best checkpoint kept at {self.best_path}")

    def best_weights(self, pl_module: L.LightningModule) -> dict[str, Tensor] | None:
        """The module's state with each replica's weights and statistics of its best epoch
        (None before the first epoch)."""
        if self._snapshot is None:
            return None
        state = dict(pl_module.state_dict())
        for name, best in zip(self._names, self._snapshot, strict=True):
            state[name] = best.reshape(state[name].shape)
        return state

    def best_epochs(self) -> list[int]:
        """Epoch (1-based) of each replica's best weights."""
        assert self._best_epoch is not None
        return self._best_epoch.tolist()

    def _write(self, trainer: L.Trainer, last: bool) -> None:
        start = time.monotonic()
        if last:
            self._check_finite(trainer)
            _save_replacing(trainer, self.last_path, weights_only=False)
            self.last_model_path = self.last_path
        self._write_best(trainer)
        self.num_writes += 1
        took = self.last_write_s = time.monotonic() - start
        self._next_write = time.monotonic() + max(
            self.every_n_seconds, took / self.max_write_fraction
        )

    def _check_finite(self, trainer: L.Trainer) -> None:
        # Weights or BatchNorm statistics can overflow while the loss still looks finite
        # (saturated sigmoids); such a state must not replace the last good last.ckpt.
        finite = torch.stack([live.isfinite().all() for live in self._live]).all()
        if not bool(finite):
            raise NonFiniteLossError(
                f"the model's weights or BatchNorm statistics became non-finite by epoch "
                f"{trainer.current_epoch + 1}: training stopped. Lower the learning rate; the "
                "best checkpoint and summary of the epochs before are kept."
            )

    def _write_best(self, trainer: L.Trainer) -> None:
        assert self._snapshot is not None and self._best_score is not None
        # weights_only: model state, loops and hyperparameters, no optimizer or callback state
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=True)
        state = checkpoint["state_dict"]
        for name, best in zip(self._names, self._snapshot, strict=True):
            state[name] = best.reshape(state[name].shape).clone()
        checkpoint["mtfilter"]["best"] = {
            "monitor": self.monitor,
            "value": self._best_score.tolist(),
            "epoch": self.best_epochs(),
        }
        temporary = self.best_path + ".partial"
        trainer.strategy.save_checkpoint(checkpoint, temporary)
        _replace(trainer, temporary, self.best_path)
        self.best_model_path = self.best_path
        self.best_model_score = self._best_score.mean().cpu()

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._snapshot is not None:
            assert self._best_score is not None and self._best_epoch is not None
            state["mtfilter_best"] = {
                "snapshot": [t.cpu() for t in self._snapshot],
                "best_score": self._best_score.cpu(),
                "best_epoch": self._best_epoch.cpu(),
            }
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict.get("mtfilter_best")
        # A resumed run writes into its own folder; the old paths are only for reference.
        base = {k: v for k, v in state_dict.items() if k != "mtfilter_best"}
        super().load_state_dict({**base, "dirpath": self.dirpath})

    # Saving is driven by the hooks above only: ModelCheckpoint's own would save at every
    # improvement, which here is almost every epoch.
    @override
    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass


def _save_replacing(trainer: L.Trainer, path: str, weights_only: bool) -> None:
    """`trainer.save_checkpoint` into a new file that then replaces `path`: a process killed
    while writing (a scheduler's SIGKILL) leaves the previous checkpoint whole."""
    temporary = path + ".partial"
    trainer.save_checkpoint(temporary, weights_only=weights_only)
    _replace(trainer, temporary, path)


def _replace(trainer: L.Trainer, temporary: str, path: str) -> None:
    if trainer.is_global_zero:  # the one process that wrote it
        os.replace(temporary, path)


def _ended(trainer: L.Trainer, epoch: int, replicas: int) -> list[bool] | None:
    """Per replica, whether it ended before `epoch` (converged with a stop, see
    `ConvergenceSchedule.end_epochs`); None while none has."""
    from mtfilter.train.callbacks._convergence import schedule_of  # a sibling: no cycle

    stop = schedule_of(trainer)
    if stop is None or len(stop.end_epochs) != replicas:
        return None
    ended = [end is not None and epoch > end for end in stop.end_epochs]
    return ended if any(ended) else None
