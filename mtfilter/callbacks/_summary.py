"""The run summary: `summary.json` and TensorBoard's HPARAMS tab when fit ends."""

import os
import time
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from typing_extensions import override

from mtfilter import tensorboard
from mtfilter.callbacks._checkpoint import BestEpochCheckpoint
from mtfilter.callbacks._convergence import ConvergenceStop
from mtfilter.callbacks._interrupt import StopOnInterrupt
from mtfilter.errors import NonFiniteLossError, RunAborted
from mtfilter.folders import write_json
from mtfilter.module import BitMappingModule


class RunSummary(Callback):
    """The run summary: `summary.json` in the run's folder and TensorBoard's HPARAMS tab.

    Written when fit ends, also when it stops on an error or interrupt.

    With stacked replicas, each replica gets its own `seed_<s>/summary.json` (a complete run
    summary) and the top-level file lists them.

    Args:
        filename: Name of the summary file.
    """

    def __init__(self, filename: str = "summary.json") -> None:
        self.filename = filename
        self._start: float | None = None
        self._earlier_wall = 0.0  # training time of the fits this one resumes
        self._written = False

    @property
    def wall_time_s(self) -> float:
        """Training time so far, over every fit of this run (resumes included)."""
        running = 0.0 if self._start is None else time.monotonic() - self._start
        return self._earlier_wall + running

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.wall_time_s}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._earlier_wall = float(state_dict.get("wall_time_s", 0.0))

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._written = None, False

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, BitMappingModule)
        pl_module.publish_epoch_log()
        # stopped: by a Ctrl-C before the last epoch. Ending on convergence is completing.
        reached_end = trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs
        interrupted = any(isinstance(c, StopOnInterrupt) and c.requested for c in trainer.callbacks)
        status = "stopped" if interrupted and not reached_end else "completed"
        self._write(trainer, pl_module, status, None)

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resuming a checkpoint taken after the last epoch skips training and its hooks; the
        # figures are all in the checkpoint, so the summary is written from them.
        if not self._written:
            assert isinstance(pl_module, BitMappingModule)
            self._write(trainer, pl_module, "completed", None)

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        assert isinstance(pl_module, BitMappingModule)
        pl_module.publish_epoch_log(check_finite=False)
        aborted = isinstance(exception, KeyboardInterrupt | RunAborted)
        status = "interrupted" if aborted else "failed"
        if isinstance(exception, NonFiniteLossError):
            status = "diverged"
        self._write(trainer, pl_module, status, f"{type(exception).__name__}: {exception}")

    def _write(
        self, trainer: L.Trainer, module: BitMappingModule, status: str, error: str | None
    ) -> None:
        self._written = True
        folder = trainer.log_dir  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero or folder is None:
            return
        wall = self.wall_time_s
        summaries = [
            run_summary(trainer, module, replica, status, error, wall)
            for replica in range(len(module.seeds))
        ]
        writers = _hparams_writers(trainer, module)
        for summary, writer in zip(summaries, writers, strict=True):
            if writer is not None and summary["epochs"] > 0:
                tensorboard.write_hparams(
                    writer, _flat_hparams(summary), _headline(summary), summary["epochs"]
                )
        if len(summaries) == 1:
            write_json(os.path.join(folder, self.filename), summaries[0])
            return
        paths = []
        for seed, summary in zip(module.seeds, summaries, strict=True):
            path = os.path.join(folder, f"seed_{seed}", self.filename)
            write_json(path, summary)
            paths.append(os.path.relpath(path, folder))
        write_json(
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

    train = stage("train")
    # the original experiment's figure: the lowest loss of a single training batch
    train["batch_loss_best"], train["batch_loss_best_epoch"] = best("train/batch_loss_min")
    val = stage("val")
    val.update(
        acc_final=last("val/acc"),
        acc_final_per_bit=[last(f"val/acc/bit_{i}") for i in bits],
        exact_match_final=last("val/exact_match"),
    )
    checkpoint = trainer.checkpoint_callback
    datamodule = trainer.datamodule
    convergence = next((c for c in trainer.callbacks if isinstance(c, ConvergenceStop)), None)
    return {
        "status": status,
        "error": error,
        "seed": module.seeds[replica],
        "data_seed": datamodule.hparams.data_seed if datamodule is not None else None,
        "data_fingerprint": module.hparams.data_fingerprint,
        "epochs": log.num_epochs,
        "convergence": convergence.summary(replica) if convergence is not None else None,
        "wall_time_s": round(wall_time_s, 3),
        "parameters": module.parameter_counts(),
        "train": train,
        "val": val,
        "checkpoints": {
            "best": checkpoint.best_path if isinstance(checkpoint, BestEpochCheckpoint) else None,
            "last": checkpoint.last_path if isinstance(checkpoint, BestEpochCheckpoint) else None,
        },
        "multitask": module.multitask_summary(replica),
        "hparams": {
            "model": {
                **_public(module.hparams),
                "aggregator": _describe(module.aggregator),
                "scalarizer": _describe(module.scalarizers[0] if module.scalarizers else None),
            },
            "data": _public(datamodule.hparams) if datamodule is not None else {},
            "optimizer": _optimizer_summary(trainer),
        },
    }


def _describe(aggregator: Any) -> str | None:
    if aggregator is None:
        return None
    public = type(aggregator).__module__.split("._")[
        0
    ]  # torchjd.aggregation._upgrad -> its package
    return f"{public}.{aggregator!r}"


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
        "best/train_batch_loss": summary["train"]["batch_loss_best"],
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
    logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if logger is None:
        return [None] * len(module.seeds)
    return module.tensorboard_writers(logger)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
