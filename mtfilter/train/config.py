"""TrainingConfig: how a `BitMLP` trains (its objective, its multitask method, its stacked
learning rates), one typed, frozen object checked once at construction, as `BitMLPConfig` is
for the network."""

from dataclasses import dataclass
from typing import Any

import torch
from torchjd.aggregation import Aggregator
from torchjd.scalarization import Scalarizer

from mtfilter.errors import ConfigError
from mtfilter.nn import replicas
from mtfilter.nn.losses import LossName, Reduction


@dataclass(frozen=True)
class TrainingConfig:
    """The training settings of `BitMappingModule`, each a `model.*` key of the CLI.

    Args:
        num_bits: Output bits, one task each.
        loss: Per-bit loss: `l1` on sigmoid outputs (the original), `bce` on logits, or `mse`.
        loss_dropout: Cost-Out (the note's authors' own method, docs/original.md): at each
            training step, each bit's loss term is removed from the objective with this
            probability, independently per bit and replica. A dropped bit sends no gradient
            that step; the kept terms are not rescaled; the logged losses always include every
            bit.
        loss_reduction: How the per-bit loss terms make the objective: `sum` (the hypothesis as
            stated) or `mean`, the original code's `nn.L1Loss()` over batch and bits, which gives
            each bit 1/num_bits of the sum's gradient. Logged losses are the same either way.
        accumulate_gradients: The original code's defect, reproduced by choice: gradients are
            never zeroed, so every optimizer step gets the running sum of all gradients since
            training began, `g_1 + ... + g_t`, and momentum SGD then moves by
            `v_t = m v_(t-1) + (g_1 + ... + g_t)`. Exactly a plain PyTorch loop that never calls
            `zero_grad` (tested); the sum is saved in `last.ckpt`, so resuming is exact.
        learning_rates: Stacked learning rates: every seed trains once at each of these rates,
            all in one process, each replica exactly as its separate run with
            `optimizer.init_args.lr` set to its rate (see `ReplicaLearningRates`: exact for SGD,
            Adam, AdamW and RMSprop). None: the optimizer's own rate, one replica per seed.
        aggregator: A TorchJD aggregator (`torchjd.aggregation.UPGrad`, Quinton & Rey 2024,
            "Jacobian Descent for Multi-Objective Optimization"; `MGDA`, Sener & Koltun, NeurIPS
            2018; `PCGrad`, Yu et al., NeurIPS 2020; ...) that turns the per-task gradients of
            the shared parameters into their update, instead of summing them; each replica on
            its own. Task-specific parameters get their own task's gradient. With nothing
            shared (`st`) training is plain.
        scalarizer: A TorchJD scalarizer (`torchjd.scalarization.UW`, Kendall et al., CVPR
            2018; `DWA`, Liu et al., CVPR 2019; `FAMO`, Liu et al., NeurIPS 2023; `IMTLL`, Liu
            et al., ICLR 2021; `Random`, Lin et al., TMLR 2022; ...) that combines the per-task
            losses into the objective instead of their sum; one independent copy per replica.
            Those with one weight per task need `init_args: {shape: NUM_BITS}`. Not with
            `aggregator` or `loss_dropout`.
        telemetry_interval: Every this many optimizer steps (from the first), log the conflict
            between the tasks' gradients on the shared parameters (`conflict/*`: cosines,
            conflicting fraction, gradient norms; the cosine matrix as an image). 0: off. Not
            logged for `st`, which shares nothing. A measurement costs about `num_bits`
            backward passes through the shared layers (docs/benchmarks.md).
    """

    num_bits: int
    loss: LossName = "l1"
    loss_dropout: float = 0.0
    loss_reduction: Reduction = "sum"
    accumulate_gradients: bool = False
    learning_rates: tuple[float, ...] | None = None
    aggregator: Aggregator | None = None
    scalarizer: Scalarizer | None = None
    telemetry_interval: int = 500

    def __post_init__(self) -> None:
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
