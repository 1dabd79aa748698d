"""Saving `predict`'s output next to the run's logs."""

import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override


class PredictionWriter(Callback):
    """Saves `predict`'s output as `predictions.pt` in the run's log folder: sample indices (N,),
    per-replica probabilities (R, N, T) and the targets (N, T); for real data (features, a
    split per seed), the probabilities and each replica's targets (R, N, T) of its test split.

    A plain callback rather than Lightning's BasePredictionWriter, which asks the loader for
    DataLoader batch indices that the on-device loader does not have (predictions carry theirs).

    Args:
        filename: Name of the predictions file.
    """

    def __init__(self, filename: str = "predictions.pt") -> None:
        self.filename = filename
        self._batches: list[dict[str, Tensor]] = []
        self.path: str | None = None  # where the last predictions went

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
        # batches joined on their sample axis: (N,) indices, (..., N, T) the rest
        merged = {
            key: torch.cat([b[key] for b in self._batches], dim=0 if key == "indices" else -2)
            for key in self._batches[0]
        }
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, self.filename)
        torch.save(merged, path)
        self.path = path
