"""The run summary: `summary.json` and TensorBoard's HPARAMS tab when fit ends."""

import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from typing_extensions import override

from mtfilter.errors import NonFiniteLossError, RunAborted, RunStopped
from mtfilter.record import metrics, summaries, tensorboard
from mtfilter.record.publishing import RecordsEpochs, recording
from mtfilter.record.summaries import Summary
from mtfilter.train.callbacks._checkpoint import BestEpochCheckpoint
from mtfilter.train.callbacks._convergence import schedule_of
from mtfilter.train.callbacks._interrupt import StopOnInterrupt


class RunSummary(Callback):
    """The run summary: `summary.json` in the run's folder and TensorBoard's HPARAMS tab.

    Written when fit ends, also when it stops on an error or interrupt. Its fields are
    `summaries.Summary`; its figures follow `metrics.FIGURES`.

    With stacked replicas, each replica gets its own `seed_<s>/summary.json` (`seed_<s>-lr_<rate>/`
    with stacked learning rates; a complete run summary) and the top-level file lists them.

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
        record = recording(pl_module)
        record.publish_epoch_log()
        # stopped: by a stop signal before the last epoch. Ending on convergence is completing.
        reached_end = trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs
        interrupted = any(isinstance(c, StopOnInterrupt) and c.requested for c in trainer.callbacks)
        status = "stopped" if interrupted and not reached_end else "completed"
        self._write(trainer, record, status, None)

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resuming a checkpoint taken after the last epoch skips training and its hooks; the
        # figures are all in the checkpoint, so the summary is written from them.
        if not self._written:
            self._write(trainer, recording(pl_module), "completed", None)

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        record = recording(pl_module)
        record.publish_epoch_log(check_finite=False)
        aborted = isinstance(exception, KeyboardInterrupt | RunAborted)
        status = "interrupted" if aborted else "failed"
        if isinstance(exception, NonFiniteLossError):
            status = "diverged"
        elif isinstance(exception, RunStopped):  # inside an epoch; resumable from last.ckpt
            status = "stopped"
        self._write(trainer, record, status, f"{type(exception).__name__}: {exception}")

    def _write(
        self, trainer: L.Trainer, record: RecordsEpochs, status: str, error: str | None
    ) -> None:
        self._written = True
        folder = trainer.log_dir  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero or folder is None:
            return
        wall = self.wall_time_s
        runs = [
            run_summary(trainer, record, replica, status, error, wall)
            for replica in range(len(record.replicas))
        ]
        if status == "completed":  # held-out data: its test split, read once, at the end
            checkpoint = trainer.checkpoint_callback
            tracks_best = isinstance(checkpoint, BestEpochCheckpoint)
            # without the best-epoch checkpoint: the weights as training left them
            best = checkpoint.best_weights(trainer.lightning_module) if tracks_best else None
            splits = record.split_sections(best)
            epochs = checkpoint.best_epochs() if tracks_best and splits else None
            for replica, (summary, section) in enumerate(zip(runs, splits or [], strict=False)):
                # the epoch whose weights these are (the checkpoint's monitor chose it)
                summary.splits = {**section, "epoch": epochs[replica] if epochs else None}
        for summary, writer in zip(runs, _hparams_writers(trainer, record), strict=True):
            if writer is not None and summary.epochs > 0:
                tensorboard.write_hparams(
                    writer, _flat_hparams(summary), _headline(summary, record.figures),
                    summary.epochs,
                )  # fmt: skip
        summaries.write(Path(folder), runs, [r.name for r in record.replicas], self.filename)


def run_summary(
    trainer: L.Trainer,
    record: RecordsEpochs,
    replica: int,
    status: str,
    error: str | None,
    wall_time_s: float,
) -> Summary:
    """The summary of one replica: best and final figures, sizes, seeds and provenance. A
    stacked replica that converged before its stack-mates ended there (see `ConvergenceSchedule`):
    its figures count the epochs up to that one, as its separate run's do."""
    log = record.epoch_log
    convergence = schedule_of(trainer)
    until = convergence.end_epochs if convergence is not None else None
    end = until[replica] if until and replica < len(until) else None

    def best(key: str) -> tuple[float | None, int | None]:
        values, epochs = log.best(key, until if until and len(until) == len(record.replicas)
                                  else None)  # fmt: skip
        value = _finite(values[replica])
        return value, (int(epochs[replica]) if value is not None else None)

    def final(key: str) -> float | None:
        if not log.num_epochs:
            return None
        if end is None:
            return _finite(log.last(key)[replica])
        return _finite(log.at(key, [end] * len(record.replicas))[replica])

    best_epoch = best(metrics.BEST_EPOCH_OF)[1]

    def at_best(key: str) -> float | None:  # at the epoch of the lowest val/loss
        if best_epoch is None:
            return None
        epochs, values = log.history(key)
        return _finite(values[np.searchsorted(epochs, best_epoch), replica])

    sections = summaries.figure_sections(best, final, record.num_bits, at_best, record.figures)
    checkpoint = trainer.checkpoint_callback
    paths = isinstance(checkpoint, BestEpochCheckpoint)
    datamodule = trainer.datamodule
    description = record.run_description(replica, best_epoch)
    data = _public(datamodule.hparams) if datamodule is not None else {}
    return Summary(
        status=status,
        error=error,
        seed=record.replicas[replica].seed,
        learning_rate=record.replicas[replica].learning_rate,
        data_seed=data.get("data_seed"),
        data_fingerprint=description["hparams"].get("data_fingerprint"),
        epochs=log.num_epochs if end is None else min(end, log.last_epoch),
        convergence=convergence.summary(replica) if convergence is not None else None,
        wall_time_s=round(wall_time_s, 3),
        parameters=description["parameters"],
        train=sections["train"],
        val=sections["val"],
        checkpoints={
            "best": checkpoint.best_path if paths else None,
            "last": checkpoint.last_path if paths else None,
        },
        multitask=description["multitask"],
        floor=description.get("floor"),
        hparams={
            "model": description["hparams"],
            "data": data,
            "optimizer": _optimizer_summary(trainer, record.replicas[replica].learning_rate),
        },
    )


def _public(hparams: Any) -> dict[str, Any]:
    # `seeds` is reported per replica; `_instantiator` is LightningCLI bookkeeping.
    return {k: v for k, v in hparams.items() if k != "seeds" and not k.startswith("_")}


def _optimizer_summary(trainer: L.Trainer, learning_rate: float | None) -> dict[str, Any]:
    """The optimizer's class and settings; a stacked replica's `lr` is its own rate."""
    if not trainer.optimizers:
        return {}
    optimizer = trainer.optimizers[0]
    simple = (int, float, str, bool, type(None))
    settings = {k: v for k, v in optimizer.defaults.items() if isinstance(v, simple)}
    if learning_rate is not None:
        settings["lr"] = learning_rate
    return {"class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}", **settings}


def _headline(summary: Summary, recorded: list[metrics.Figure]) -> dict[str, float]:
    """The figures shown as metrics in TensorBoard's HPARAMS tab: each figure's best (and its
    epoch) or final value, the test split's figures where there is one, and the parameter
    counts."""
    figures: dict[str, Any] = {}
    for figure in recorded:
        if figure.best:
            value, epoch = summary.best(figure)
            figures[f"best/{figure.column}"], figures[f"best/{figure.column}_epoch"] = value, epoch
        if figure.final and not figure.best:
            figures[f"final/{figure.column}"] = summary.final(figure)
    test = (summary.splits or {}).get("test", {})
    figures.update({f"test/{name}": value for name, value in test.items()
                    if not isinstance(value, list)})  # fmt: skip
    figures["parameters/total"] = summary.parameters.get("total")
    figures["parameters/per_task"] = summary.parameters.get("per_task")
    return {k: float(v) for k, v in figures.items() if v is not None}


def _flat_hparams(summary: Summary) -> dict[str, Any]:
    flat: dict[str, Any] = {"seed": summary.seed, "data_fingerprint": summary.data_fingerprint}
    for group, values in summary.hparams.items():
        for key, value in values.items():
            flat[f"{group}/{key}"] = (
                value if isinstance(value, int | float | str | bool) else str(value)
            )
    return flat


def _hparams_writers(trainer: L.Trainer, record: RecordsEpochs) -> list[Any]:
    logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if logger is None:
        return [None] * len(record.replicas)
    return record.publisher.writers(logger)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
