"""The LightningModule: per-bit losses, Cost-Out loss dropout, optimisation, bit accuracies and
the per-epoch record of every figure."""

import os
import time
from typing import Any, Literal, NamedTuple

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from torchjd.aggregation import Aggregator
from torchjd.scalarization import Scalarizer
from typing_extensions import override

import mtfilter.lightning_notices  # noqa: F401 (silences notices that do not apply)
from mtfilter import counter_rng, multitask, tensorboard
from mtfilter.data import Batch, Epoch
from mtfilter.epoch_log import EpochLog
from mtfilter.errors import CheckpointMismatchError, ConfigError, NonFiniteLossError
from mtfilter.model import BitMLP, Encoding, Layout

LossName = Literal["l1", "bce", "mse"]
Reduction = Literal["sum", "mean"]

# The original experiment's optimiser; YAML configs spell it out, library users get it by default.
DEFAULT_OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 1e-3, "momentum": 0.9}}

# Architecture hyperparameters: a checkpoint must agree on all of them to be loaded.
ARCHITECTURE_KEYS = (
    "num_bits",
    "num_samples",
    "layout",
    "num_shared_layers",
    "num_layers",
    "in_dim",
    "hidden_dim",
    "batch_norm",
    "encoding",
    "task_filter",
    "residual",
    "shared_embedding",
)
# What an architecture key meant in checkpoints written before it existed.
ARCHITECTURE_DEFAULTS = {"task_filter": False, "residual": False, "shared_embedding": False}


def per_bit_loss(logits: Tensor, targets: Tensor, loss: LossName) -> Tensor:
    """Batch-mean loss of each bit: logits and targets (..., B, T) -> (..., T).

    `l1` and `mse` compare sigmoid outputs with the bits (`l1` is the original's); `bce` is binary
    cross-entropy on the logits.
    """
    if loss == "bce":
        per_sample = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    elif loss == "l1":
        per_sample = (torch.sigmoid(logits) - targets).abs()
    else:
        per_sample = (torch.sigmoid(logits) - targets).square()
    return per_sample.mean(dim=-2)


class Evaluation(NamedTuple):
    """Figures of one evaluation pass, per replica: loss and accuracy (R, T), exact match (R,)."""

    loss: Tensor
    accuracy: Tensor
    exact_match: Tensor


class _EpochTotals:
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


class BitMappingModule(L.LightningModule):
    """Trains `BitMLP` on the bit-mapping task and records every figure of every epoch.

    The training objective is the sum over bits of each bit's batch-mean loss (and over stacked
    replicas, which are independent). What every log and summary calls "loss" is the mean per-bit
    loss, the figure of the original experiment's table.

    At the end of every training epoch the whole dataset is evaluated once in eval mode (no
    dropout, BatchNorm running statistics): `val/loss`, its per-bit values, per-bit accuracy,
    mean bit accuracy (`val/acc`) and exact match (`val/exact_match`, the whole string right).
    That pass needs `trainer.datamodule` to be a `BitMappingDataModule` (it takes
    `full_batch()`); `validate` and `test` compute the same figures through Lightning's loops.

    Args:
        num_bits: Output bits (linked from the data module by the CLI).
        num_samples: Distinct inputs (linked from the data module by the CLI).
        data_fingerprint: The dataset's fingerprint (linked from the data module by the CLI);
            checkpoints from another dataset are refused.
        seeds: Seeds of the stacked replicas, one each (linked from the data module by the CLI).
            Default: the seed set by `seed_everything`.
        layout: `mt`, `st` or `split` (see `BitMLP`).
        num_shared_layers: For `split`: how many leading hidden layers are shared.
        num_layers: Linear layers, output layer included.
        in_dim: Width of the input encoding.
        hidden_dim: Width of every hidden layer (per bit in `st`).
        batch_norm: BatchNorm after each hidden linear layer.
        dropout: Dropout after each hidden ReLU.
        encoding: `embedding` (learned table) or `binary` (the index's bits).
        task_filter: `mt` only: a per-bit scale and shift of every hidden unit (see `BitMLP`).
        residual: Skip connections around the `hidden -> hidden` layers (see `BitMLP`).
        shared_embedding: `st` only: every tower reads one input table, as the original code's
            st (see `BitMLP`).
        batch_norm_chunks: BatchNorm's training statistics per chunk of each batch, as
            `nn.DataParallel` on this many devices gave them (the original's 4; see `BitMLP`).
        loss: Per-bit loss: `l1` on sigmoid outputs (the original), `bce` on logits, or `mse`.
        loss_dropout: Cost-Out: at each training step, each bit's loss term is removed from the
            objective with this probability, independently per bit and replica. A dropped bit
            sends no gradient that step; the kept terms are not rescaled; the logged losses
            always include every bit.
        loss_reduction: How the per-bit loss terms make the objective: `sum` (the hypothesis as
            stated) or `mean`, the original code's `nn.L1Loss()` over batch and bits, which gives
            each bit 1/num_bits of the sum's gradient. Logged losses are the same either way.
        accumulate_gradients: The original code's defect, reproduced by choice: gradients are
            never zeroed, so every optimizer step gets the running sum of all gradients since
            training began, `g_1 + ... + g_t`, and momentum SGD then moves by
            `v_t = m v_(t-1) + (g_1 + ... + g_t)`. Exactly a plain PyTorch loop that never calls
            `zero_grad` (tested); the sum is saved in `last.ckpt`, so resuming is exact.
        optimizer: Optimizer factory. Default: SGD, lr 1e-3, momentum 0.9 (the original's).
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
        aggregator: A TorchJD aggregator (`torchjd.aggregation.UPGrad`, `MGDA`, `PCGrad`, ...)
            that turns the per-task gradients of the shared parameters into their update,
            instead of summing them; each replica on its own. Task-specific parameters get
            their own task's gradient. With nothing shared (`st`) training is plain.
        scalarizer: A TorchJD scalarizer (`torchjd.scalarization.UW`, `DWA`, `FAMO`, `IMTLL`,
            `Random`, ...) that combines the per-task losses into the objective instead of
            their sum; one independent copy per replica. Those with one weight per task need
            `init_args: {shape: NUM_BITS}`. Not with `aggregator` or `loss_dropout`.
        telemetry_interval: Every this many optimizer steps (from the first), log the conflict
            between the tasks' gradients on the shared parameters (`conflict/*`: cosines,
            conflicting fraction, gradient norms; the cosine matrix as an image). 0: off. Not
            logged for `st`, which shares nothing. A measurement costs about `num_bits`
            backward passes through the shared layers (docs/benchmarks.md).
    """

    def __init__(
        self,
        num_bits: int = 10,
        num_samples: int | None = None,
        data_fingerprint: str | None = None,
        seeds: list[int] | None = None,
        layout: Layout = "mt",
        num_shared_layers: int | None = None,
        num_layers: int = 3,
        in_dim: int = 16,
        hidden_dim: int = 1024,
        batch_norm: bool = True,
        dropout: float = 0.0,
        encoding: Encoding = "embedding",
        task_filter: bool = False,
        residual: bool = False,
        shared_embedding: bool = False,
        batch_norm_chunks: int = 1,
        loss: LossName = "l1",
        loss_dropout: float = 0.0,
        loss_reduction: Reduction = "sum",
        accumulate_gradients: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        aggregator: Aggregator | None = None,
        scalarizer: Scalarizer | None = None,
        telemetry_interval: int = 500,
    ) -> None:
        super().__init__()
        if loss not in ("l1", "bce", "mse"):
            raise ConfigError(f"model.loss must be 'l1', 'bce' or 'mse', got {loss!r}")
        if not 0 <= loss_dropout < 1:
            raise ConfigError(f"model.loss_dropout must be in [0, 1), got {loss_dropout}")
        if telemetry_interval < 0:
            raise ConfigError(f"model.telemetry_interval must be >= 0, got {telemetry_interval}")
        if loss_reduction not in ("sum", "mean"):
            raise ConfigError(
                f"model.loss_reduction must be 'sum' or 'mean', got {loss_reduction!r}"
            )
        if accumulate_gradients and aggregator is not None:
            raise ConfigError(
                "model.accumulate_gradients (the original's never-zeroed gradients) cannot be "
                "combined with model.aggregator, which sets the shared gradients each step"
            )
        multitask.check_aggregator(aggregator)
        multitask.check_scalarizer(scalarizer, num_bits, aggregator, loss_dropout)
        num_samples = 2**num_bits if num_samples is None else num_samples
        seeds = [torch.initial_seed()] if seeds is None else list(seeds)
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ConfigError(f"seeds must be distinct non-negative integers, got {seeds}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "aggregator", "scalarizer"])
        self.hparams.num_samples, self.hparams.seeds = num_samples, seeds
        self.automatic_optimization = False  # one explicit step per batch (and room for TorchJD)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        # Not a submodule: its state stays out of the checkpoints, which load without it.
        object.__setattr__(self, "aggregator", aggregator)
        # A submodule: learned task weights (UW, IMTL-L) train with the model and are saved.
        self.scalarizers = (
            None if scalarizer is None else multitask.replica_scalarizers(scalarizer, len(seeds))
        )
        self.net = BitMLP(
            num_bits=num_bits,
            num_samples=num_samples,
            layout=layout,
            num_shared_layers=num_shared_layers,
            num_layers=num_layers,
            in_dim=in_dim,
            hidden_dim=hidden_dim,
            batch_norm=batch_norm,
            dropout=dropout,
            encoding=encoding,
            task_filter=task_filter,
            residual=residual,
            shared_embedding=shared_embedding,
            batch_norm_chunks=batch_norm_chunks,
            num_replicas=len(seeds),
            init_seeds=seeds,
        )
        self.num_bits, self.seeds = num_bits, seeds
        # each bit's loss term in the objective: 1 (sum) or 1 / num_bits (mean)
        self._term_scale = 1.0 if loss_reduction == "sum" else 1.0 / num_bits
        bits = range(num_bits)
        self.epoch_log = EpochLog(
            [
                "train/loss",
                *(f"train/loss/bit_{i}" for i in bits),
                "train/batch_loss_min",
                "val/loss",
                *(f"val/loss/bit_{i}" for i in bits),
                "val/acc",
                *(f"val/acc/bit_{i}" for i in bits),
                "val/exact_match",
            ],
            num_replicas=len(seeds),
        )
        # (R, T) per-bit keys of the loss-dropout stream
        self.register_buffer(
            "_loss_dropout_keys",
            counter_rng.element_keys(counter_rng.seed_keys(seeds), num_bits),
            persistent=False,
        )
        self._epoch = _EpochTotals()
        self._shared = self.net.shared_parameters()
        self._task_params = self.net.task_parameters()
        self._conflicts = multitask.ConflictRecord()
        # Per-step decisions, made once in on_fit_start from the trainer and the layout.
        self._telemetry_every = 0  # steps between conflict measurements; 0: none
        self._aggregates = False  # the aggregator has shared parameters to update
        self._updates_after_step = False  # FAMO re-evaluates the batch after each step
        self._last_publish = 0.0
        self._non_finite: str | None = None  # the first NaN/inf seen, until raised
        self._replica_writers: list[SummaryWriter] = []
        self._purge_from: int | None = None  # epoch from which earlier event files are stale
        self._restored_gradients: dict[str, Tensor] | None = None  # accumulated, from last.ckpt
        self._lr_scale = [1.0] * len(seeds)  # per replica (see scale_learning_rate)
        self._update_weights: list[Tensor] | None = None  # per parameter; None: all scales 1

    @override
    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook call, ~40 times an epoch here, and
        # nn.Module.__setattr__ first checks the value against parameters, buffers and modules.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- the model ---------------------------------------------------------------------------

    @override
    def forward(self, indices: Tensor) -> Tensor:
        return self.net(indices)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of one replica: total, shared, per task, task-specific (see `BitMLP`)."""
        return self.net.parameter_counts()

    @override
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(self.parameters())
        else:
            optimizer = torch.optim.SGD(self.parameters(), **DEFAULT_OPTIMIZER["init_args"])
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}

    # -- training ----------------------------------------------------------------------------

    @override
    def on_train_epoch_start(self) -> None:
        self._epoch.reset()

    @override
    def training_step(self, epoch: Epoch, batch_idx: int) -> None:
        """One whole epoch: an optimizer step per minibatch, then the evaluation pass."""
        optimizer = self.optimizers()
        for indices, targets in epoch:  # (R, B), (R, B, T)
            loss_per_bit = per_bit_loss(self.net(indices), targets, self.hparams.loss)  # (R, T)
            if not self.hparams.accumulate_gradients:
                optimizer.zero_grad(set_to_none=True)
            self._backward(loss_per_bit)
            self._average_gradients()
            if self._update_weights is None:
                optimizer.step()
            else:
                self._scaled_step(optimizer)
            if self._updates_after_step:
                self._update_scalarizers(indices, targets)
            self._epoch.add(loss_per_bit.detach(), indices.shape[1])
        # The epoch's figures are complete here, before any epoch-end hook of the callbacks runs.
        self._finish_epoch()

    def scale_learning_rate(self, replica: int, factor: float) -> None:
        """Multiply one stacked replica's learning rate by `factor` (the convergence check's
        drops on a plateau), leaving the others as they are.

        Replicas share the optimizer's parameter groups, so the step itself is scaled: after
        it, each replica's parameters move `scale` times as far, `p = before + scale * (p -
        before)`. For optimizers whose step is proportional to the learning rate given their
        state (SGD with momentum, Adam, AdamW, RMSprop) that is exactly a learning rate of
        `scale * lr`, and a stacked replica still trains as its separate run would.
        """
        self._lr_scale[replica] *= factor
        if all(scale == 1.0 for scale in self._lr_scale):
            self._update_weights = None
            return
        scale = torch.tensor(self._lr_scale, device=self.device)
        replicas = len(self.seeds)
        weights = []
        for name, parameter in self.named_parameters():
            if name.startswith("scalarizers."):  # one module per replica
                weights.append(scale[int(name.split(".")[1])].reshape([1] * parameter.dim()))
            else:  # stacked replica-major on the leading axis
                per = scale.repeat_interleave(parameter.shape[0] // replicas)
                weights.append(per.view(-1, *[1] * (parameter.dim() - 1)))
        self._update_weights = weights

    @property
    def lr_scale(self) -> list[float]:
        """Each replica's learning-rate factor (1 unless the convergence check dropped it)."""
        return list(self._lr_scale)

    def _scaled_step(self, optimizer: Any) -> None:
        assert self._update_weights is not None
        parameters = [p.data for p in self.parameters()]
        before = [p.clone() for p in parameters]
        optimizer.step()
        torch._foreach_lerp_(before, parameters, self._update_weights)  # before + w (p - before)
        torch._foreach_copy_(parameters, before)

    def _average_gradients(self) -> None:
        """Average gradients over DDP processes after each backward.

        DDP's own synchronisation hooks expect one backward per `training_step`, and here a
        training step is a whole epoch of optimizer steps: it is switched off in `on_fit_start`
        and done here, as one all-reduce of all gradients.
        """
        if self.trainer.world_size == 1:
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = self.trainer.strategy.reduce(flat, reduce_op="mean")
        parts = flat.split([g.numel() for g in grads])
        torch._foreach_copy_(grads, [part.view_as(g) for part, g in zip(parts, grads, strict=True)])

    def _backward(self, loss_per_bit: Tensor) -> None:
        """Gradients of the step: of the summed loss, or with the shared parameters' update
        from the aggregator; the conflict figures when they are due."""
        kept = self._kept_terms()  # (R, T) bool, or None
        if self._term_scale != 1.0:  # mean reduction: every term, and its gradient, / num_bits
            loss_per_bit = loss_per_bit * self._term_scale
        if self.scalarizers is not None:
            objective = multitask.scalarize(self.scalarizers, loss_per_bit)
        else:
            objective = self._objective(loss_per_bit, kept)
        every = self._telemetry_every
        due = every > 0 and self.global_step % every == 0
        if not (self._aggregates or due):
            self.manual_backward(objective)
            return
        matrices = multitask.per_replica_jacobian(loss_per_bit, self._shared, len(self.seeds))
        if self.trainer.world_size > 1:  # the whole global batch's per-task gradients
            matrices = self.trainer.strategy.reduce(matrices, reduce_op="mean")
        if kept is not None:
            matrices = matrices * kept[..., None]  # a dropped task sends no gradient
        if due:
            self._conflicts.add(self.current_epoch + 1, *multitask.conflict_figures(matrices))
        if not self._aggregates:
            self.manual_backward(objective)
            return
        torch.autograd.backward(objective, inputs=self._task_params)
        directions = multitask.aggregate(matrices, self.aggregator)  # (R, P)
        multitask.set_shared_gradients(directions, self._shared)

    @torch.no_grad()
    def _update_scalarizers(self, indices: Tensor, targets: Tensor) -> None:
        """FAMO's weight update, from the step's batch re-evaluated after the step."""
        with multitask.frozen_batch_norm_statistics(self.net):
            after = per_bit_loss(self.net(indices), targets, self.hparams.loss)  # (R, T)
        for scalarizer, row in zip(self.scalarizers, after, strict=True):
            scalarizer.update(row)

    @staticmethod
    def _objective(loss_per_bit: Tensor, kept: Tensor | None) -> Tensor:
        """The training objective: the sum of the kept per-bit loss terms (R, T)."""
        return loss_per_bit.sum() if kept is None else (loss_per_bit * kept).sum()

    def _kept_terms(self) -> Tensor | None:
        """Cost-Out's draw for this step: (R, T), True where a bit's loss term is kept."""
        p = self.hparams.loss_dropout
        if p == 0:
            return None
        draws = counter_rng.uniform(
            self._loss_dropout_keys, counter_rng.LOSS_DROPOUT_STREAM, self.global_step
        )
        return draws >= p  # dropped terms multiply by 0

    def _finish_epoch(self) -> None:
        # Every rank holds an equal share of the epoch, so the mean of the ranks' means is exact.
        train_loss = self.trainer.strategy.reduce(self._epoch.mean(), reduce_op="mean")  # (R, T)
        # the original's "best": a single step's batch, the whole global batch under DDP
        batch_losses = torch.stack(self._epoch.batch_losses)  # (S, R)
        batch_losses = self.trainer.strategy.reduce(batch_losses, reduce_op="mean")
        indices, targets = self.trainer.datamodule.full_batch()
        was_training = self.net.training
        self.net.eval()
        evaluation = self.evaluate(indices, targets)
        self.net.train(was_training)
        row = torch.cat(
            [
                train_loss.mean(1, keepdim=True),
                train_loss,
                batch_losses.amin(0)[:, None],
                evaluation.loss.mean(1, keepdim=True),
                evaluation.loss,
                evaluation.accuracy.mean(1, keepdim=True),
                evaluation.accuracy,
                evaluation.exact_match[:, None],
            ],
            dim=1,
        )  # (R, K) in the order of epoch_log.keys
        self.epoch_log.record(self.current_epoch + 1, row)
        if self.scalarizers is not None:
            multitask.ends_epoch(self.scalarizers)
        for scheduler in self._schedulers():
            scheduler.step()
        due = time.monotonic() - self._last_publish > self.publish_interval_s
        if self.trainer.world_size > 1:  # every rank must stop at the same epoch on NaN
            due = self.trainer.strategy.broadcast(due)
        if due:
            self.publish_epoch_log()

    #: Seconds between pulls of the epoch log to the host and the loggers (one sync each).
    publish_interval_s = 2.0

    def _schedulers(self) -> list[Any]:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return schedulers if isinstance(schedulers, list) else [schedulers]

    @torch.no_grad()
    def evaluate(self, indices: Tensor, targets: Tensor) -> Evaluation:
        """Loss, bit accuracy and exact match of `indices` in the model's current mode."""
        logits = self.net(indices)  # (R, N, T)
        targets = targets.expand_as(logits)
        loss = per_bit_loss(logits, targets, self.hparams.loss)
        # torchmetrics' multilabel_accuracy (average=None) and multilabel_exact_match at
        # threshold 0.5, written out: through torchmetrics they cost ~0.35 ms an epoch here
        # (input checks and formatting), a tenth of a hidden-8 epoch. Tests compare the two.
        correct = (logits > 0) == (targets > 0.5)  # sigmoid(logit) > 0.5 <=> logit > 0
        accuracy = correct.float().mean(1)  # (R, T)
        exact_match = correct.all(2).float().mean(1)  # (R,)
        return Evaluation(loss, accuracy, exact_match)

    # -- publishing the epoch log ------------------------------------------------------------

    def publish_epoch_log(self, check_finite: bool = True) -> None:
        """Pull recorded epochs to the host, write them to the loggers, and stop on NaN/inf.

        Called every `publish_interval_s` seconds during training, and by callbacks before they
        read the log or write a checkpoint. With `check_finite=False` a non-finite value is only
        noted, and raised at the next checked call: under DDP every rank checks at the same
        epochs, so all of them stop together.
        """
        self._last_publish = time.monotonic()
        self.epoch_log.pull()
        epochs, values = self.epoch_log.take_unpublished()  # (E,), (E, R, K)
        if self._purge_from is not None and self.trainer.is_global_zero:
            for writer in self._all_tensorboard_writers():
                tensorboard.purge_from(writer, self._purge_from)
            self._purge_from = None
        if len(epochs) > 0:
            if self.trainer.is_global_zero:
                self._write_rows(self.epoch_log.keys, epochs, values)
            bad = ~np.isfinite(values)
            if bad.any() and self._non_finite is None:
                row, replica, key = np.argwhere(bad)[0]
                self._non_finite = (
                    f"{self.epoch_log.keys[key]} became {values[row, replica, key]} at epoch "
                    f"{epochs[row]} (seed {self.seeds[replica]}): training stopped. Lower the "
                    "learning rate or check the configuration; the best checkpoint and summary "
                    "of the epochs before are kept."
                )
        conflict_epochs, conflicts = self._conflicts.take()  # (E, R, K)
        if conflicts is not None and self.trainer.is_global_zero:
            keys = multitask.conflict_keys(self.num_bits)
            self._write_rows(keys, np.array(conflict_epochs), conflicts.numpy())
            self._write_cosine_images(conflict_epochs[-1])
        if check_finite and self._non_finite is not None:
            raise NonFiniteLossError(self._non_finite)

    def _write_cosine_images(self, epoch: int) -> None:
        cosines = self._conflicts.latest_cosines
        assert cosines is not None
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                writers = self.tensorboard_writers(logger)
                for writer, matrix in zip(writers, cosines.float().cpu().numpy(), strict=True):
                    tensorboard.write_cosine_image(writer, "conflict/cosine", matrix, epoch)

    def _write_rows(self, keys: list[str], epochs: np.ndarray, values: np.ndarray) -> None:
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                for writer, replica_values in zip(
                    self.tensorboard_writers(logger), values.transpose(1, 0, 2), strict=True
                ):
                    tensorboard.write_scalar_rows(writer, keys, epochs, replica_values)
            else:
                for epoch, row in zip(epochs.tolist(), values, strict=True):
                    logger.log_metrics(_replica_metrics(keys, row, self.seeds), step=epoch)

    def _all_tensorboard_writers(self) -> list[SummaryWriter]:
        return [
            writer
            for logger in self.loggers
            if isinstance(logger, TensorBoardLogger)
            for writer in self.tensorboard_writers(logger)
        ]

    def tensorboard_writers(self, logger: TensorBoardLogger) -> list[SummaryWriter]:
        """One writer per replica: the run's own for a single replica, else `seed_<s>/` folders
        so TensorBoard shows each replica as its own run with the same tags."""
        if len(self.seeds) == 1:
            return [logger.experiment]
        if not self._replica_writers:
            self._replica_writers = [
                SummaryWriter(f"{logger.log_dir}/seed_{seed}") for seed in self.seeds
            ]
        return self._replica_writers

    @override
    def on_fit_start(self) -> None:
        # Fit evaluates the whole dataset itself at the end of every epoch (`_finish_epoch`);
        # Lightning's validation loop would add ~0.3 ms of bookkeeping per epoch around it.
        self._limit_val_batches = self.trainer.limit_val_batches
        self.trainer.limit_val_batches = 0
        if isinstance(self.trainer.strategy.model, DistributedDataParallel):
            # Permanent `no_sync`: gradients are averaged in `_average_gradients` instead.
            self.trainer.strategy.model.require_backward_grad_sync = False
        tensorboard.use_fast_record_checksum()
        self._last_publish = time.monotonic()
        self._shared, self._task_params = self.net.shared_parameters(), self.net.task_parameters()
        self._setup_multitask()
        counts = self.parameter_counts()
        replicas = f" x {len(self.seeds)} replicas" if len(self.seeds) > 1 else ""
        rank_zero_info(
            f"{self.hparams.layout} model, {self.num_bits} bits, seed{'s' if replicas else ''} "
            f"{', '.join(map(str, self.seeds))}: {counts['total']:,} parameters"
            f"{replicas} ({counts['shared']:,} shared, {counts['per_task']:,} per task, of which "
            f"{counts['task_specific']:,} task-specific"
            + (f", {counts['filter']:,} in task filters)" if counts["filter"] else ")")
        )

    def _setup_multitask(self) -> None:
        """Check the multitask options against the trainer and decide, once, what each step
        does: measure conflict every so often, aggregate, update FAMO after the step."""
        # The per-task Jacobian is a vmapped backward, which fails on autocast graphs.
        mixed_precision = str(self.trainer.precision) not in ("32-true", "64-true")
        if mixed_precision and self.hparams.telemetry_interval > 0 and self._shared:
            rank_zero_info(f"no conflict telemetry under precision {self.trainer.precision}")
        measures = bool(self._shared) and self.num_bits > 1 and not mixed_precision
        self._telemetry_every = self.hparams.telemetry_interval if measures else 0
        self._updates_after_step = self.scalarizers is not None and (
            multitask.needs_update_after_step(self.scalarizers)
        )
        self._aggregates = False
        if self.aggregator is None:
            return
        if not self._shared:
            rank_zero_info(
                f"layout {self.hparams.layout} shares no parameter between bits: "
                f"model.aggregator ({self.aggregator}) has nothing to aggregate; plain training"
            )
            return
        if mixed_precision:
            raise ConfigError(
                f"model.aggregator does not support trainer.precision={self.trainer.precision}: "
                "the per-task Jacobian cannot be taken through autocast; use 32-true"
            )
        self.aggregator.to(self.device)
        self._aggregates = True
        rank_zero_info(f"shared parameters updated by {self.aggregator}, per replica")

    def multitask_summary(self, replica: int) -> dict[str, Any]:
        """What the run did about the tasks' shared gradients, for its summary."""
        keys = multitask.conflict_keys(self.num_bits)

        def figures(rows: Tensor | None) -> dict[str, float]:
            return {} if rows is None else dict(zip(keys, rows[replica].tolist(), strict=True))

        return {
            "aggregated": self.aggregator is not None and bool(self._shared),
            "shared_parameters": sum(p.numel() for p in self._shared) // len(self.seeds),
            "telemetry_interval": self._telemetry_every,
            "conflict_mean": figures(self._conflicts.mean()),
            "conflict_last": figures(self._conflicts.latest_row),
        }

    @override
    def on_train_start(self) -> None:
        if self._restored_gradients:
            parameters = dict(self.named_parameters())
            for name, gradient in self._restored_gradients.items():
                parameters[name].grad = gradient.to(parameters[name].device)
            self._restored_gradients = None

    @override
    def on_fit_end(self) -> None:
        self.trainer.limit_val_batches = self._limit_val_batches

    @override
    def on_train_end(self) -> None:
        self.publish_epoch_log()
        for writer in self._replica_writers:
            writer.flush()

    # -- evaluation loops (validate / test / predict) ----------------------------------------

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._log_evaluation("val", self.evaluate(*batch))

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._log_evaluation("test", self.evaluate(*batch))

    def _log_evaluation(self, stage: str, evaluation: Evaluation) -> None:
        # One batch per loop: a few host syncs here cost nothing.
        for replica, seed in enumerate(self.seeds):
            prefix = stage if len(self.seeds) == 1 else f"seed_{seed}/{stage}"
            loss, accuracy = evaluation.loss[replica], evaluation.accuracy[replica]
            metrics = {
                f"{prefix}/loss": loss.mean(),
                f"{prefix}/acc": accuracy.mean(),
                f"{prefix}/exact_match": evaluation.exact_match[replica],
            }
            for i in range(self.num_bits):
                metrics[f"{prefix}/loss/bit_{i}"] = loss[i]
                metrics[f"{prefix}/acc/bit_{i}"] = accuracy[i]
            self.log_dict(metrics)

    @override
    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        indices, targets = batch
        probabilities = torch.sigmoid(self.net(indices))  # (R, N, T)
        return {"indices": indices[0], "probabilities": probabilities, "targets": targets[0]}

    # -- checkpoints -------------------------------------------------------------------------

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mtfilter"] = {
            "epoch_log": self.epoch_log.state_dict(),
            "log_dir": self._log_dir(),  # where that history was published
        }
        if self._update_weights is not None:
            checkpoint["mtfilter"]["lr_scale"] = self.lr_scale
        if self.hparams.accumulate_gradients:  # the running sum is training state here
            checkpoint["mtfilter"]["gradients"] = {
                name: p.grad.detach().clone() for name, p in self.named_parameters()
                if p.grad is not None
            }  # fmt: skip

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_compatible(checkpoint, self.hparams)
        saved = checkpoint.get("mtfilter", {})
        state = saved.get("epoch_log")
        trainer = self._trainer  # None when loaded outside a Trainer
        if state is None or trainer is None or trainer.state.fn != "fit":
            return
        # Resumed in the folder that already shows this history (a sweep's run, say): publish
        # only what comes next, and hide what the stopped process wrote after the checkpoint.
        # In a new folder, the whole curve is published again.
        here = saved.get("log_dir") is not None and saved.get("log_dir") == self._log_dir()
        self.epoch_log.load_state_dict(state, published=here)
        # set in on_train_start: the Trainer zeroes gradients between restoring and training
        self._restored_gradients = saved.get("gradients")
        for replica, scale in enumerate(saved.get("lr_scale", [])):
            if scale != 1.0:
                self.scale_learning_rate(replica, scale / self._lr_scale[replica])
        if here and self.epoch_log.num_epochs:
            self._purge_from = int(self.epoch_log.last_epoch) + 1

    def _log_dir(self) -> str | None:
        folder = self.trainer.log_dir  # a collective under DDP: every rank asks
        return None if folder is None else os.path.abspath(folder)


def _replica_metrics(keys: list[str], row: np.ndarray, seeds: list[int]) -> dict[str, float]:
    """Flatten a (R, K) row into logger metrics, prefixed by seed when there are replicas."""
    if len(seeds) == 1:
        return dict(zip(keys, row[0].tolist(), strict=True))
    return {
        f"seed_{seed}/{key}": value
        for seed, replica_row in zip(seeds, row, strict=True)
        for key, value in zip(keys, replica_row.tolist(), strict=True)
    }


def check_checkpoint_compatible(checkpoint: dict[str, Any], hparams: Any) -> None:
    """Refuse a checkpoint from another dataset or model shape, naming the difference."""
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict) or "data_fingerprint" not in saved:
        raise CheckpointMismatchError("not an mtfilter checkpoint (no dataset fingerprint in it)")
    if hparams.get("data_fingerprint") is not None and (
        saved["data_fingerprint"] != hparams["data_fingerprint"]
    ):
        raise CheckpointMismatchError(
            f"the checkpoint was trained on dataset {saved['data_fingerprint']}, but this run's "
            f"data is {hparams['data_fingerprint']} (check data.num_bits, data.num_samples, "
            "data.targets and data.data_seed)"
        )
    differences = [
        f"{key}: checkpoint {saved.get(key, ARCHITECTURE_DEFAULTS.get(key))!r}, "
        f"config {hparams.get(key)!r}"
        for key in (*ARCHITECTURE_KEYS, "seeds")
        if saved.get(key, ARCHITECTURE_DEFAULTS.get(key)) != hparams.get(key)
    ]
    if differences:
        raise CheckpointMismatchError(
            "the checkpoint's model differs from the configured one: " + "; ".join(differences)
        )
