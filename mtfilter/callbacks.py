"""Callbacks for what Lightning's own cannot do at this workload's cost: an exact best-epoch
checkpoint with bounded writes, a time-refreshed progress display, the run summary, and a
graceful stop on Ctrl-C."""

import json
import math
import os
import signal
import sys
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from tqdm import tqdm
from typing_extensions import override

from mtfilter import tensorboard
from mtfilter.errors import NonFiniteLossError
from mtfilter.module import BitMappingModule


class BestEpochCheckpoint(ModelCheckpoint):
    """Keeps `best.ckpt` (the weights of the epoch with the lowest `monitor`, per replica) and
    `last.ckpt` (everything needed to resume) without saving on every improving epoch.

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
        super().__init__(
            dirpath=dirpath,
            filename="best",
            monitor=monitor,
            mode="min",
            save_last=True,
            save_top_k=1,
            enable_version_counter=False,
        )
        self.every_n_seconds = every_n_seconds
        self.max_write_fraction = max_write_fraction
        self.num_writes = 0
        self._next_write = math.inf
        self._names: list[str] = []  # state_dict entries tracked per replica
        self._live: list[Tensor] = []  # their (R, n) views of the live tensors
        self._snapshot: list[Tensor] | None = None  # best weights, (R, n) per tracked entry
        self._best_score: Tensor | None = None  # (R,)
        self._best_epoch: Tensor | None = None  # (R,)
        self._restored: dict[str, Any] | None = None
        self._cached_state_key: str | None = None

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
        assert isinstance(pl_module, BitMappingModule)
        replicas = len(pl_module.seeds)
        state = pl_module.state_dict()  # detached tensors sharing the live storage
        self._names = [
            name
            for name, t in state.items()
            if t.is_floating_point() and t.dim() > 0 and t.shape[0] % replicas == 0
        ]
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
        assert isinstance(pl_module, BitMappingModule)
        assert self._best_score is not None and self._best_epoch is not None
        current = pl_module.epoch_log.latest(self.monitor)  # (R,) on the device
        if current.device.type == "cpu":  # reading it costs no synchronisation here
            self._track_on_host(current, trainer.current_epoch + 1)
        else:
            self._track_on_device(current, trainer.current_epoch + 1)

        due = time.monotonic() >= self._next_write
        if trainer.world_size > 1:
            due = trainer.strategy.broadcast(due)
        if due:
            pl_module.publish_epoch_log()  # raises on NaN before anything is written
            self._write(trainer, last=True)

    def _track_on_device(self, current: Tensor, epoch: int) -> None:
        """Keep each improved replica's weights, decided on the device: never waited for."""
        assert self._snapshot is not None and self._best_score is not None
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
        for replica, improved in enumerate(better):
            if improved:
                for best, live in zip(self._snapshot, self._live, strict=True):
                    best[replica].copy_(live[replica])
                self._best_score[replica] = values[replica]
                self._best_epoch[replica] = epoch

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

    def best_epochs(self) -> list[int]:
        """Epoch (1-based) of each replica's best weights."""
        assert self._best_epoch is not None
        return self._best_epoch.tolist()

    def _write(self, trainer: L.Trainer, last: bool) -> None:
        start = time.monotonic()
        if last:
            self._check_finite(trainer)
            trainer.save_checkpoint(self.last_path, weights_only=False)
            self.last_model_path = self.last_path
        self._write_best(trainer)
        self.num_writes += 1
        took = time.monotonic() - start
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
        trainer.strategy.save_checkpoint(checkpoint, self.best_path)
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

    # Saving is driven by the hooks above only.
    @override
    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass


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
        assert self._bar is not None and isinstance(pl_module, BitMappingModule)
        self._last_refresh = time.monotonic()
        pl_module.publish_epoch_log(check_finite=False)  # rank 0 only: the ranks stop together
        values, epochs = pl_module.epoch_log.best(self.monitor)
        if len(values) == 1:
            postfix = f"best {self.monitor} {values[0]:.4f} @ {epochs[0]}"
        else:
            postfix = f"best {self.monitor} {np.mean(values):.4f} (mean of {len(values)} seeds)"
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.update(pl_module.epoch_log.num_epochs - self._bar.n)

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


class RunSummary(Callback):
    """Writes `summary.json` into the run's log folder when fit ends (also when it stops on an
    error or interrupt), and the headline figures to TensorBoard's HPARAMS tab.

    With stacked replicas, each replica gets its own `seed_<s>/summary.json` (a complete run
    summary) and the top-level file lists them.

    Args:
        filename: Name of the summary file.
    """

    def __init__(self, filename: str = "summary.json") -> None:
        self.filename = filename
        self._start = 0.0

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, BitMappingModule)
        pl_module.publish_epoch_log()
        status = "stopped" if trainer.should_stop else "completed"
        self._write(trainer, pl_module, status, None)

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        assert isinstance(pl_module, BitMappingModule)
        pl_module.publish_epoch_log(check_finite=False)
        status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
        if isinstance(exception, NonFiniteLossError):
            status = "diverged"
        self._write(trainer, pl_module, status, f"{type(exception).__name__}: {exception}")

    def _write(
        self, trainer: L.Trainer, module: BitMappingModule, status: str, error: str | None
    ) -> None:
        folder = trainer.log_dir  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero or folder is None:
            return
        wall = time.monotonic() - self._start
        summaries = [
            run_summary(trainer, module, replica, status, error, wall)
            for replica in range(len(module.seeds))
        ]
        writers = _hparams_writers(trainer, module)
        for summary, writer in zip(summaries, writers, strict=True):
            if writer is not None and summary["epochs"] > 0:
                tensorboard.write_hparams(writer, _flat_hparams(summary), _headline(summary))
        if len(summaries) == 1:
            _write_json(os.path.join(folder, self.filename), summaries[0])
            return
        paths = []
        for seed, summary in zip(module.seeds, summaries, strict=True):
            path = os.path.join(folder, f"seed_{seed}", self.filename)
            _write_json(path, summary)
            paths.append(os.path.relpath(path, folder))
        _write_json(
            os.path.join(folder, self.filename),
            {"status": status, "error": error, "seeds": module.seeds, "replicas": paths},
        )


def run_summary(
    trainer: L.Trainer,
    module: BitMappingModule,
    replica: int,
    status: str,
    error: str | None,
    wall_time_s: float,
) -> dict[str, Any]:
    """The summary of one replica: best and final figures, sizes, seeds and provenance."""
    log = module.epoch_log
    bits = range(module.num_bits)

    def best(key: str) -> tuple[float | None, int | None]:
        values, epochs = log.best(key)
        value = _finite(values[replica])
        return value, (int(epochs[replica]) if value is not None else None)

    def last(key: str) -> float | None:
        return _finite(log.last(key)[replica]) if log.num_epochs else None

    def stage(name: str) -> dict[str, Any]:
        loss, epoch = best(f"{name}/loss")
        per_bit = [best(f"{name}/loss/bit_{i}") for i in bits]
        return {
            "loss_best": loss,
            "loss_best_epoch": epoch,
            "loss_final": last(f"{name}/loss"),
            "loss_best_per_bit": [value for value, _ in per_bit],
            "loss_best_epoch_per_bit": [e for _, e in per_bit],
        }

    val = stage("val")
    val.update(
        acc_final=last("val/acc"),
        acc_final_per_bit=[last(f"val/acc/bit_{i}") for i in bits],
        exact_match_final=last("val/exact_match"),
    )
    checkpoint = trainer.checkpoint_callback
    datamodule = trainer.datamodule
    return {
        "status": status,
        "error": error,
        "seed": module.seeds[replica],
        "data_seed": datamodule.hparams.data_seed if datamodule is not None else None,
        "data_fingerprint": module.hparams.data_fingerprint,
        "epochs": log.num_epochs,
        "wall_time_s": round(wall_time_s, 3),
        "parameters": module.parameter_counts(),
        "train": stage("train"),
        "val": val,
        "checkpoints": {
            "best": checkpoint.best_path if isinstance(checkpoint, BestEpochCheckpoint) else None,
            "last": checkpoint.last_path if isinstance(checkpoint, BestEpochCheckpoint) else None,
        },
        "hparams": {
            "model": _public(module.hparams),
            "data": _public(datamodule.hparams) if datamodule is not None else {},
            "optimizer": _optimizer_summary(trainer),
        },
    }


def _public(hparams: Any) -> dict[str, Any]:
    # `seeds` is reported per replica; `_instantiator` is LightningCLI bookkeeping.
    return {k: v for k, v in hparams.items() if k != "seeds" and not k.startswith("_")}


def _optimizer_summary(trainer: L.Trainer) -> dict[str, Any]:
    if not trainer.optimizers:
        return {}
    optimizer = trainer.optimizers[0]
    simple = (int, float, str, bool, type(None))
    return {
        "class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        **{k: v for k, v in optimizer.defaults.items() if isinstance(v, simple)},
    }


def _headline(summary: dict[str, Any]) -> dict[str, float]:
    """The figures shown as metrics in TensorBoard's HPARAMS tab."""
    figures = {
        "best/val_loss": summary["val"]["loss_best"],
        "best/val_loss_epoch": summary["val"]["loss_best_epoch"],
        "best/train_loss": summary["train"]["loss_best"],
        "best/train_loss_epoch": summary["train"]["loss_best_epoch"],
        "final/val_acc": summary["val"]["acc_final"],
        "final/val_exact_match": summary["val"]["exact_match_final"],
        "parameters/total": summary["parameters"]["total"],
        "parameters/per_task": summary["parameters"]["per_task"],
    }
    return {k: float(v) for k, v in figures.items() if v is not None}


def _flat_hparams(summary: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {
        "seed": summary["seed"],
        "data_fingerprint": summary["data_fingerprint"],
    }
    for group, values in summary["hparams"].items():
        for key, value in values.items():
            flat[f"{group}/{key}"] = (
                value if isinstance(value, int | float | str | bool) else str(value)
            )
    return flat


def _hparams_writers(trainer: L.Trainer, module: BitMappingModule) -> list[Any]:
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if logger is None:
        return [None] * len(module.seeds)
    return module.tensorboard_writers(logger)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _write_json(path: str, content: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=2)
    os.replace(tmp, path)  # never leave a half-written summary


class PredictionWriter(Callback):
    """Saves `predict`'s output as `predictions.pt` in the run's log folder: sample indices (N,),
    per-replica probabilities (R, N, T) and the targets (N, T).

    A plain callback rather than Lightning's BasePredictionWriter, which asks the loader for
    DataLoader batch indices that the on-device loader does not have (predictions carry theirs).

    Args:
        filename: Name of the predictions file.
    """

    def __init__(self, filename: str = "predictions.pt") -> None:
        self.filename = filename
        self._batches: list[dict[str, Tensor]] = []

    @override
    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches = []

    @override
    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batches.append({k: v.cpu() for k, v in outputs.items()})

    @override
    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = trainer.log_dir  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero or folder is None:
            return
        merged = {
            "indices": torch.cat([b["indices"] for b in self._batches]),
            "probabilities": torch.cat([b["probabilities"] for b in self._batches], dim=1),
            "targets": torch.cat([b["targets"] for b in self._batches]),
        }
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, self.filename)
        torch.save(merged, path)
        rank_zero_info(f"predictions written to {path}")


class StopOnInterrupt(Callback):
    """The first Ctrl-C finishes the current epoch, then ends training normally (checkpoints and
    summary written as at the end); a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self._requested = False
        self._previous: Any = None

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if sys.platform == "win32" or not _in_main_thread():
            return
        self._previous = signal.getsignal(signal.SIGINT)

        def request_stop(signum: int, frame: Any) -> None:
            if self._requested:
                raise KeyboardInterrupt
            self._requested = True
            rank_zero_info("stopping after this epoch (press Ctrl-C again to abort now)")

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
    import threading

    return threading.current_thread() is threading.main_thread()
