"""The running totals of the current training epoch: the per-bit loss summed over its samples and
each step's batch loss, kept on the device."""

from collections.abc import Callable

import torch
from torch import Tensor

from mtfilter.record.metrics import EpochFigures, Evaluation


class EpochTotals:
    """Running sums of the current training epoch (a plain object: attribute writes on an
    nn.Module cost a few microseconds each, and these happen every step)."""

    def __init__(self) -> None:
        self.loss_sum: Tensor | None = None  # (R, T) summed over the epoch's samples
        self.samples = 0
        self.batch_losses: list[Tensor] = []  # (R,) mean per-bit loss of each step's batch

    def reset(self) -> None:
        self.samples = 0
        self.batch_losses = []
        if self.loss_sum is not None:
            self.loss_sum.zero_()

    def add(self, loss_per_bit: Tensor, batch_size: int) -> None:
        if self.loss_sum is None:
            self.loss_sum = loss_per_bit.float() * batch_size  # float32 under bf16-mixed too
        else:
            self.loss_sum.add_(loss_per_bit, alpha=batch_size)
        self.samples += batch_size
        self.batch_losses.append(loss_per_bit.float().mean(-1))

    def mean(self) -> Tensor:
        assert self.loss_sum is not None, "no training step in this epoch"
        return self.loss_sum / self.samples

    def figures(self, evaluation: Evaluation, reduce: Callable[[Tensor], Tensor]) -> EpochFigures:
        """The epoch's figures' inputs, averaged over processes by `reduce` (DDP): every rank
        holds an equal share of the epoch, so the mean of the means is exact, and a step's
        batch is the global batch."""
        return EpochFigures(
            train_loss=reduce(self.mean()),  # (R, T)
            batch_losses=reduce(torch.stack(self.batch_losses)),  # (S, R)
            evaluation=evaluation,
        )
