"""The per-bit losses: each bit's loss is one task's."""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

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
