"""The running totals of the current training epoch: the per-bit loss summed over its samples and
each step's batch loss, kept on the device."""

from torch import Tensor


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
