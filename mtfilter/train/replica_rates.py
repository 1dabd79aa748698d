"""Each stacked replica stepped at its own learning rate: one copy and one lerp per step."""

from typing import Any

import torch
from torch import Tensor, nn


class ReplicaLearningRates:
    """A learning-rate factor per stacked replica (stacked learning rates, drops on a plateau).

    Replicas share the optimizer's parameter groups, so the step itself is scaled: after it,
    each replica's parameters move `factor` times as far, `p = before + factor * (p - before)`.
    For optimizers whose step is proportional to the learning rate given their state (SGD with
    momentum, Adam, AdamW, RMSprop) that is exactly a learning rate of `factor * lr`.

    Parameters are stacked replica-major on their leading axis, but for `scalarizers.{r}.*`,
    one module per replica.
    """

    def __init__(self, factors: list[float]) -> None:
        self.factors = list(factors)
        self.live = list(range(len(factors)))  # the replicas the optimizer steps, in stack order
        self._weights: list[Tensor] | None = None  # per parameter, built at the next step

    @property
    def scaled(self) -> bool:
        return any(f != 1.0 for f in self.factors)

    def keep(self, live: list[int]) -> None:
        """From the next step on the optimizer steps the stack of replicas `live` only (see
        `LiveReplicas`)."""
        self.live = list(live)
        self._weights = None

    def scale(self, replica: int, factor: float) -> None:
        """Multiply `replica`'s factor by `factor`, from the next step on."""
        self.factors[replica] *= factor
        self._weights = None

    def step(self, optimizer: Any, module: nn.Module) -> None:
        """`optimizer.step()`, then each replica's move scaled by its factor."""
        if all(self.factors[r] == 1.0 for r in self.live):
            optimizer.step()
            return
        if self._weights is None:
            self._weights = self._per_parameter(module)
        parameters = [p.data for p in module.parameters()]
        before = torch._foreach_mul(parameters, 1.0)  # one fused copy
        optimizer.step()
        # p + (1 - w) (before - p) = before + w (p - before), written into p in one pass
        torch._foreach_lerp_(parameters, before, self._weights)

    def _per_parameter(self, module: nn.Module) -> list[Tensor]:
        """Each parameter's `1 - factor`, shaped to broadcast over it, on its device."""
        live = [self.factors[r] for r in self.live]
        replicas, weights = len(live), []
        for name, parameter in module.named_parameters():
            factors = 1 - torch.tensor(live, device=parameter.device, dtype=parameter.dtype)
            if name.startswith("scalarizers."):
                weights.append(factors[int(name.split(".")[1])].reshape([1] * parameter.dim()))
            else:
                per_row = factors.repeat_interleave(parameter.shape[0] // replicas)
                weights.append(per_row.view(-1, *[1] * (parameter.dim() - 1)))
        return weights
