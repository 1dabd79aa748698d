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
from mtfilter.train.live_replicas import LiveReplicas


class EvaluationLoops(L.LightningModule):
    """The evaluation hooks of `BitMappingModule`, which sets `net`, `replicas` and
    `train_config`."""

    net: BitMLP
    replicas: list[Replica]
    train_config: TrainingConfig
    figures: list[metrics.Figure]
    live: LiveReplicas

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._log_evaluation("val", batch)

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._log_evaluation("test", batch)

    def _log_evaluation(self, stage: str, batch: Batch) -> None:
        inputs, targets = self.replica_rows(batch)
        counts = self.hparams.label_figures
        evaluation = evaluate(self.net, inputs, targets, self.train_config.loss, counts)
        for index, replica in enumerate(self.replicas):  # one batch per loop: syncs cost nothing
            prefix = "" if len(self.replicas) == 1 else f"{replica.name}/"
            figures = metrics.evaluation_metrics(stage, evaluation, index, self.figures)
            self.log_dict({prefix + key: value for key, value in figures.items()})

    def replica_rows(self, batch: Batch, live_only: bool = False) -> Batch:
        """A batch for the whole stack (`live_only`: for its live replicas): one row shared by
        every replica, or, where the data has a row per seed (held-out splits), each replica's
        seed's row."""
        inputs, targets = batch
        rows = self.live.step_rows if live_only else self.live.data_rows
        if inputs.shape[0] == 1 or rows is None:
            return inputs, targets
        return inputs[rows], targets[rows]

    @override
    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        inputs, targets = self.replica_rows(batch)
        probabilities: Tensor = torch.sigmoid(self.net(inputs))  # (R, N, T)
        if inputs.is_floating_point():  # features: one split per replica
            return {"probabilities": probabilities, "targets": targets}
        return {"indices": inputs[0], "probabilities": probabilities, "targets": targets[0]}
