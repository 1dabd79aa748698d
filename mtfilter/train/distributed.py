"""Gradients averaged over DDP processes by one all-reduce per optimizer step, DDP's own
hooks off."""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


def average_gradients(parameters: list[nn.Parameter], reduce: Callable[[Tensor], Tensor]) -> None:
    """Average the gradients over DDP processes: one all-reduce of all of them (`reduce`: the
    strategy's mean). DDP's own hooks expect one backward per `training_step`, and here a
    training step is a whole epoch of optimizer steps, so they are off (see the module)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = reduce(torch.cat([g.reshape(-1) for g in grads]))
    parts = flat.split([g.numel() for g in grads])
    torch._foreach_copy_(grads, [part.view_as(g) for part, g in zip(parts, grads, strict=True)])


def disable_ddp_gradient_hooks(trainer: Any) -> None:
    """A permanent `no_sync`: DDP's hooks expect one backward per `training_step`, and here a
    training step is an epoch of optimizer steps; gradients are averaged after each backward
    instead (`average_gradients`)."""
    if isinstance(trainer.strategy.model, DistributedDataParallel):
        trainer.strategy.model.require_backward_grad_sync = False
