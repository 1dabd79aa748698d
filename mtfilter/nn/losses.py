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


def per_bit_loss_and_gradient(
    logits: Tensor, targets: Tensor, loss: LossName
) -> tuple[Tensor, Tensor]:
    """The batch-mean loss of each bit and its gradient with respect to every logit, written out
    (`mtfilter.nn.explicit_gradients`): logits and targets (..., T, B), batch innermost ->
    (..., T) losses, as `per_bit_loss` gives them, and (..., T, B) d loss / d logit."""
    batch = logits.shape[-1]
    if loss == "bce":
        per_sample = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        gradient = torch.sigmoid(logits).sub_(targets)
    else:
        outputs = torch.sigmoid(logits)
        error = outputs - targets
        per_sample = error.abs() if loss == "l1" else error.square()
        slope = outputs * (1 - outputs)  # d sigmoid / d logit
        gradient = (error.sign() if loss == "l1" else 2 * error).mul_(slope)
    return per_sample.mean(dim=-1), gradient.div_(batch)
