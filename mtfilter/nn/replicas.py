"""Stacked replicas: independent copies of one run trained side by side on the model's group axis,
each named by its seed and, when learning rates are stacked too, its learning rate."""

import math
from dataclasses import dataclass

from mtfilter.errors import ConfigError


@dataclass(frozen=True)
class Replica:
    """One stacked replica: its seed (initial weights, sample order, Cost-Out draws) and its
    learning rate (None: the optimizer's own)."""

    seed: int
    learning_rate: float | None = None

    @property
    def name(self) -> str:
        """Its folder and TensorBoard run: `seed_3`, or `seed_3-lr_0.01` (the rate's shortest
        exact text, so two rates never share a folder)."""
        if self.learning_rate is None:
            return f"seed_{self.seed}"
        return f"seed_{self.seed}-lr_{self.learning_rate!r}"

    def describe(self) -> str:
        rate = "" if self.learning_rate is None else f", lr {self.learning_rate:g}"
        return f"seed {self.seed}{rate}"


def stack(seeds: list[int], learning_rates: list[float] | None) -> list[Replica]:
    """Every seed at every learning rate, rate-major: replica `l * len(seeds) + s` is seed `s`
    at rate `l`. Without learning rates, one replica per seed."""
    if not learning_rates:
        return [Replica(seed) for seed in seeds]
    return [Replica(seed, float(rate)) for rate in learning_rates for seed in seeds]


def check_seeds(seeds: list[int], key: str) -> None:
    """Replicas need distinct seeds (each its own weights and sample order), none negative."""
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"{key} must be distinct non-negative integers, got {seeds}")


def check_learning_rates(learning_rates: list[float] | None) -> None:
    if learning_rates is None:
        return
    if not learning_rates:
        raise ConfigError(
            "model.learning_rates is empty: give at least one rate, or leave it unset"
        )
    bad = [rate for rate in learning_rates if not (math.isfinite(rate) and rate > 0)]
    if bad:
        raise ConfigError(f"model.learning_rates must be positive and finite, got {bad}")
    if len(set(learning_rates)) != len(learning_rates):
        raise ConfigError(f"model.learning_rates repeats a rate: {learning_rates}")
