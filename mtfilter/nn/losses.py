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
    batch_axis = -2
    if logits.stride(-2) == 1:
        # `BitMLP`'s logits are feature-major in memory (the batch axis innermost), and so are
        # the data module's targets: computed on the (..., T, B) views, every op runs over
        # contiguous rows and the mean reduces the innermost axis. 1.3-1.7x faster on a CPU
        # than on the (..., B, T) views (docs/benchmarks.md); the same gradients.
        logits, targets, batch_axis = logits.mT, targets.mT, -1
    if loss == "bce":
        per_sample = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    elif loss == "l1":
        per_sample = (torch.sigmoid(logits) - targets).abs()
    else:
        per_sample = (torch.sigmoid(logits) - targets).square()
    return per_sample.mean(dim=batch_axis)
