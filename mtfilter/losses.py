"""Per-bit losses and the evaluation pass's figures."""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtfilter.metrics import Evaluation

LossName = Literal["l1", "bce", "mse"]
Reduction = Literal["sum", "mean"]


def per_bit_loss(logits: Tensor, targets: Tensor, loss: LossName) -> Tensor:
    """Batch-mean loss of each bit: logits and targets (..., B, T) -> (..., T).

    `l1` and `mse` compare sigmoid outputs with the bits (`l1` is the original's); `bce` is binary
    cross-entropy on the logits.
    """
    if loss == "bce":
        per_sample = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    elif loss == "l1":
        per_sample = (torch.sigmoid(logits) - targets).abs()
    else:
        per_sample = (torch.sigmoid(logits) - targets).square()
    return per_sample.mean(dim=-2)


@torch.no_grad()
def evaluate(net: nn.Module, indices: Tensor, targets: Tensor, loss: LossName) -> Evaluation:
    """Loss, bit accuracy and exact match of `indices` in the network's current mode:
    (1, N) indices shared by the replicas, (1, N, T) targets."""
    logits = net(indices)  # (R, N, T)
    targets = targets.expand_as(logits)
    # torchmetrics' multilabel_accuracy (average=None) and multilabel_exact_match at
    # threshold 0.5, written out: through torchmetrics they cost ~0.35 ms an epoch here
    # (input checks and formatting), a tenth of a hidden-8 epoch. Tests compare the two.
    correct = (logits > 0) == (targets > 0.5)  # sigmoid(logit) > 0.5 <=> logit > 0
    accuracy = correct.float().mean(1)  # (R, T)
    exact_match = correct.all(2).float().mean(1)  # (R,)
    return Evaluation(per_bit_loss(logits, targets, loss), accuracy, exact_match)
