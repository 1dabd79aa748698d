"""An epoch's optimizer steps beyond `optimizer.step()`: the running totals of the epoch,
gradients averaged over DDP processes, and each stacked replica's learning-rate factor."""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


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


def average_gradients(parameters: list[nn.Parameter], reduce: Callable[[Tensor], Tensor]) -> None:
    """Average the gradients over DDP processes: one all-reduce of all of them (`reduce`: the
    strategy's mean). DDP's own hooks expect one backward per `training_step`, and here a
    training step is a whole epoch of optimizer steps, so they are off (see the module)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = reduce(torch.cat([g.reshape(-1) for g in grads]))
    parts = flat.split([g.numel() for g in grads])
    torch._foreach_copy_(grads, [part.view_as(g) for part, g in zip(parts, grads, strict=True)])


class ReplicaLearningRates:
    """A learning-rate factor per stacked replica.

    Replicas share the optimizer's parameter groups, so the step itself is scaled: after it,
    each replica's parameters move `factor` times as far, `p = before + factor * (p - before)`.
    For optimizers whose step is proportional to the learning rate given their state (SGD with
    momentum, Adam, AdamW, RMSprop) that is exactly a learning rate of `factor * lr`.
    """

    def __init__(self, num_replicas: int) -> None:
        self.factors = [1.0] * num_replicas
        self._weights: list[Tensor] | None = None  # per parameter; None while every factor is 1

    @property
    def scaled(self) -> bool:
        return self._weights is not None

    def scale(self, replica: int, factor: float, module: nn.Module) -> None:
        """Multiply `replica`'s factor by `factor`. `module`'s parameters are stacked
        replica-major on their leading axis, but for `scalarizers.{r}.*`, one per replica."""
        self.factors[replica] *= factor
        if all(f == 1.0 for f in self.factors):
            self._weights = None
            return
        device = next(module.parameters()).device
        factors = torch.tensor(self.factors, device=device)
        replicas, weights = len(self.factors), []
        for name, parameter in module.named_parameters():
            if name.startswith("scalarizers."):
                weights.append(factors[int(name.split(".")[1])].reshape([1] * parameter.dim()))
            else:
                per_row = factors.repeat_interleave(parameter.shape[0] // replicas)
                weights.append(per_row.view(-1, *[1] * (parameter.dim() - 1)))
        self._weights = weights

    def step(self, optimizer: Any, module: nn.Module) -> None:
        """`optimizer.step()`, then each replica's move scaled by its factor."""
        if self._weights is None:
            optimizer.step()
            return
        parameters = [p.data for p in module.parameters()]
        before = [p.clone() for p in parameters]
        optimizer.step()
        torch._foreach_lerp_(before, parameters, self._weights)  # before + w (p - before)
        torch._foreach_copy_(parameters, before)
