"""TrainingConfig: how a `BitMLP` trains (its objective, its multitask method, its stacked
learning rates), one typed, frozen object checked once at construction, as `BitMLPConfig` is
for the network."""

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torchjd.aggregation import Aggregator
from torchjd.scalarization import Scalarizer

from mtfilter.errors import ConfigError
from mtfilter.nn import replicas
from mtfilter.nn.losses import LossName, Reduction


@dataclass(frozen=True)
class TrainingConfig:
    """The training settings of `BitMappingModule`, each a `model.*` key of the CLI: the
    module's arguments of the same names, documented there once (the CLI's `--help` shows
    them). `num_bits` is the number of tasks; `learning_rates` a tuple, so that nothing in a
    frozen config can change under a running fit."""

    num_bits: int
    loss: LossName = "l1"
    loss_dropout: float = 0.0
    loss_reduction: Reduction = "sum"
    accumulate_gradients: bool = False
    learning_rates: tuple[float, ...] | None = None
    aggregator: Aggregator | None = None
    scalarizer: Scalarizer | None = None
    telemetry_interval: int = 500
    gradients: Literal["auto", "explicit", "autograd"] = "auto"

    def __post_init__(self) -> None:
        if self.gradients not in ("auto", "explicit", "autograd"):
            raise ConfigError(
                f"model.gradients must be 'auto', 'explicit' or 'autograd', got {self.gradients!r}"
            )
        if self.loss not in ("l1", "bce", "mse"):
            raise ConfigError(f"model.loss must be 'l1', 'bce' or 'mse', got {self.loss!r}")
        if not 0 <= self.loss_dropout < 1:
            raise ConfigError(f"model.loss_dropout must be in [0, 1), got {self.loss_dropout}")
        if self.telemetry_interval < 0:
            raise ConfigError(
                f"model.telemetry_interval must be >= 0, got {self.telemetry_interval}"
            )
        if self.loss_reduction not in ("sum", "mean"):
            raise ConfigError(
                f"model.loss_reduction must be 'sum' or 'mean', got {self.loss_reduction!r}"
            )
        if self.accumulate_gradients and self.aggregator is not None:
            raise ConfigError(
                "model.accumulate_gradients (the original's never-zeroed gradients) cannot be "
                "combined with model.aggregator, which sets the shared gradients each step"
            )
        self._check_aggregator()
        self._check_scalarizer()
        replicas.check_learning_rates(
            None if self.learning_rates is None else list(self.learning_rates)
        )

    def _check_aggregator(self) -> None:
        if self.aggregator is not None and not isinstance(self.aggregator, Aggregator):
            raise ConfigError(
                f"model.aggregator must be a torchjd.aggregation.Aggregator (e.g. class_path: "
                f"torchjd.aggregation.UPGrad), got {type(self.aggregator).__qualname__}"
            )

    def _check_scalarizer(self) -> None:
        scalarizer = self.scalarizer
        if scalarizer is None:
            return
        if not isinstance(scalarizer, Scalarizer):
            raise ConfigError(
                f"model.scalarizer must be a torchjd.scalarization.Scalarizer (e.g. class_path: "
                f"torchjd.scalarization.UW), got {type(scalarizer).__qualname__}"
            )
        shapes = {tuple(p.shape) for p in scalarizer.parameters()}
        if shapes - {(self.num_bits,)}:
            raise ConfigError(
                f"model.scalarizer {type(scalarizer).__name__} has one weight per value of shape "
                f"{sorted(shapes)[0]}, but there are {self.num_bits} bits: give it "
                f"init_args.shape: {self.num_bits}"
            )
        if self.aggregator is not None:
            raise ConfigError(
                "model.scalarizer and model.aggregator both decide how the tasks combine: "
                "choose one"
            )
        if self.loss_dropout > 0:
            raise ConfigError(
                "model.scalarizer cannot be combined with model.loss_dropout: a dropped loss "
                "term would reach it as a loss of zero (FAMO takes its logarithm, DWA its ratio)"
            )


def check_optimizer(factory: Any) -> None:
    """Build the optimizer once on a stand-in parameter, so that a bad argument (a negative
    rate, say) is refused in one line at construction, before a run folder exists."""
    if factory is None:
        return
    try:
        factory([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model.optimizer: {error}") from None


def check_targets(targets: torch.Tensor, num_bits: int, num_samples: int) -> None:
    """Refuse a data module's (N, T) targets of another shape than the model was built for."""
    samples, bits = targets.shape
    if (bits, samples) != (num_bits, num_samples):
        raise ConfigError(
            f"the model was built for {num_bits} bits and {num_samples} samples, but the data "
            f"module has {bits} bits and {samples} samples: build the model with "
            "num_bits=data.num_bits and num_samples=data.num_samples"
        )
