"""Each stacked replica's learning rate, all of its plumbing: the optimizer set to the first
stacked rate, each replica's step scaled to its own (one copy and one lerp per step), the drops
on a plateau, the replicas that still train, and the factors a checkpoint keeps."""

from typing import Any

import torch
from torch import Tensor, nn

from mtfilter.errors import ConfigError
from mtfilter.nn.replicas import Replica


class ReplicaLearningRates:
    """A learning-rate factor per stacked replica (stacked learning rates, drops on a plateau).

    Replicas share the optimizer's parameter groups, so the step itself is scaled: after it,
    each replica's parameters move `factor` times as far, `p = before + factor * (p - before)`.
    For optimizers whose step is proportional to the learning rate given their state (SGD with
    momentum, Adam, AdamW, RMSprop) that is exactly a learning rate of `factor * lr`.

    Parameters are stacked replica-major on their leading axis, but for `scalarizers.{r}.*`,
    one module per replica.
    """

    def __init__(self, factors: list[float], base_rate: float | None = None) -> None:
        self.factors = list(factors)
        self.base_rate = base_rate  # the optimizer's rate: the first stacked one, if any
        self.live = list(range(len(factors)))  # the replicas the optimizer steps, in stack order
        self._weights: list[Tensor] | None = None  # per parameter, built at the next step

    @classmethod
    def for_replicas(
        cls, replicas: list[Replica], learning_rates: list[float] | None
    ) -> "ReplicaLearningRates":
        """The optimizer runs at the first stacked rate; each replica's step is scaled to its
        own. Without stacked rates every factor is 1 and the optimizer keeps its own rate."""
        if not learning_rates:
            return cls([1.0] * len(replicas))
        base = learning_rates[0]
        return cls([1.0 if r.learning_rate is None else r.learning_rate / base
                    for r in replicas], base_rate=base)  # fmt: skip

    def configure(self, optimizer: torch.optim.Optimizer) -> None:
        """Set a new optimizer to the first stacked rate, before any scheduler reads it."""
        if self.base_rate is None:
            return
        if not isinstance(optimizer.defaults.get("lr"), float | int):
            raise ConfigError(
                f"model.learning_rates needs an optimizer with a plain `lr`, got "
                f"{type(optimizer).__name__}"
            )
        optimizer.defaults["lr"] = self.base_rate
        for group in optimizer.param_groups:
            group["lr"] = self.base_rate

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

    def state_dict(self) -> list[float] | None:
        """Each replica's factor (its stacked rate's and its drops), for a checkpoint; None when
        every one is 1."""
        return list(self.factors) if self.scaled else None

    def load_state_dict(self, factors: list[float] | None) -> None:
        """Restore a checkpoint's factors: the replicas' drops on a plateau come back."""
        for replica, factor in enumerate(factors or []):
            if factor != self.factors[replica]:
                self.scale(replica, factor / self.factors[replica])

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
