"""Gradients averaged over DDP processes by one all-reduce per optimizer step."""

from collections.abc import Callable

import torch
from torch import Tensor, nn


def average_gradients(parameters: list[nn.Parameter], reduce: Callable[[Tensor], Tensor]) -> None:
    """Average the gradients over DDP processes: one all-reduce of all of them (`reduce`: the
    strategy's mean). DDP's own hooks expect one backward per `training_step`, and here a
    training step is a whole epoch of optimizer steps, so they are off (see the module)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = reduce(torch.cat([g.reshape(-1) for g in grads]))
    parts = flat.split([g.numel() for g in grads])
    torch._foreach_copy_(grads, [part.view_as(g) for part, g in zip(parts, grads, strict=True)])
