"""Lightning's `validate`, `test` and `predict` for the module: the whole stack evaluated in
eval mode, each replica's figures under its own name (fit evaluates itself every epoch)."""

from typing import Any

import lightning as L
import torch
from torch import Tensor
from typing_extensions import override

from mtfilter.nn.model import BitMLP
from mtfilter.nn.replicas import Replica
from mtfilter.record import metrics
from mtfilter.record.evaluation import evaluate
from mtfilter.train.config import TrainingConfig
from mtfilter.train.data import Batch


class EvaluationLoops(L.LightningModule):
    """The evaluation hooks of `BitMappingModule`, which sets `net`, `replicas` and
    `train_config`."""

    net: BitMLP
    replicas: list[Replica]
    train_config: TrainingConfig

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._log_evaluation("val", batch)

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._log_evaluation("test", batch)

    def _log_evaluation(self, stage: str, batch: Batch) -> None:
        evaluation = evaluate(self.net, *batch, self.train_config.loss)
        for index, replica in enumerate(self.replicas):  # one batch per loop: syncs cost nothing
            prefix = "" if len(self.replicas) == 1 else f"{replica.name}/"
            figures = metrics.evaluation_metrics(stage, evaluation, index)
            self.log_dict({prefix + key: value for key, value in figures.items()})

    @override
    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        indices, targets = batch
        probabilities: Tensor = torch.sigmoid(self.net(indices))  # (R, N, T)
        return {"indices": indices[0], "probabilities": probabilities, "targets": targets[0]}
