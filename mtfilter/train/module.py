"""The LightningModule: one experiment's hooks. An epoch is one `training_step` (an optimizer step
per minibatch, then the whole dataset evaluated); what each piece does lives beside it: the
model in `mtfilter.nn.model`, the training settings in `config.py`, a step's gradients (sum,
Cost-Out, TorchJD) in `objective.py`, each replica's learning rate in `replica_rates.py`, the
replicas still training in `live_replicas.py`, the figures in `mtfilter.record.metrics` and
their publishing in `mtfilter.record.publishing`, checkpoints in `checkpoint_state.py`,
`validate`, `test` and `predict` in `evaluation_loops.py`."""

from dataclasses import asdict
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchjd.aggregation import Aggregator
from torchjd.scalarization import Scalarizer
from typing_extensions import override

import mtfilter.train.lightning_notices  # noqa: F401 (silences notices that do not apply)
from mtfilter.nn import replicas
from mtfilter.nn.config import BitMLPConfig
from mtfilter.nn.floor import Floor, model_floor, pattern_counts
from mtfilter.nn.losses import LossName, Reduction
from mtfilter.nn.model import BitMLP
from mtfilter.record import metrics, tensorboard
from mtfilter.record.conflicts import conflict_keys
from mtfilter.record.epoch_log import EpochLog
from mtfilter.record.evaluation import evaluate
from mtfilter.record.publishing import EpochPublisher
from mtfilter.train import split_figures
from mtfilter.train.checkpoint_state import (
    check_and_upgrade,
    restore_gradients,
    restore_training_state,
    save_training_state,
)
from mtfilter.train.config import TrainingConfig, check_optimizer, check_targets
from mtfilter.train.data import Epoch
from mtfilter.train.distributed import average_gradients, disable_ddp_gradient_hooks
from mtfilter.train.epoch_totals import EpochTotals
from mtfilter.train.evaluation_loops import EvaluationLoops
from mtfilter.train.fit_report import describe_model, describe_run
from mtfilter.train.live_replicas import LiveReplicas
from mtfilter.train.objective import Objective, replica_scalarizers
from mtfilter.train.replica_rates import ReplicaLearningRates

# The converged mode's optimiser (configs/mt.yaml); the original's is in configs/original/.
DEFAULT_OPTIMIZER: dict[str, Any] = {"class_path": "torch.optim.Adam", "init_args": {"lr": 3e-4}}


class BitMappingModule(EvaluationLoops):
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
        num_bits: Output bits, the tasks (linked from the data module by the CLI).
        num_samples: Distinct inputs (linked from the data module by the CLI).
        data_fingerprint: The dataset's fingerprint (linked from the data module by the CLI);
            checkpoints from another dataset are refused.
        seeds: Seeds of the stacked replicas, one each (linked from the data module by the CLI).
            Default: the seed set by `seed_everything`.
        loss: Per-bit loss: `l1` on sigmoid outputs (the original), `bce` on logits, or `mse`.
        loss_dropout: Cost-Out (the note's authors' own method, docs/original.md): each step,
            each bit's loss term leaves the objective with this probability, independently per
            bit and replica; kept terms are not rescaled; logged losses include every bit.
        loss_reduction: `sum` of the per-bit terms (the hypothesis as stated) or `mean` (the
            original code's `nn.L1Loss()`: each bit gets 1/num_bits of the sum's gradient).
        accumulate_gradients: The original code's defect, by choice: gradients are never
            zeroed, so each step gets the sum of all gradients since training began (exactly a
            loop that never calls `zero_grad`, tested; saved in `last.ckpt` for exact resumes).
        optimizer: Optimizer factory. Default: Adam, lr 3e-4 (configs/mt.yaml's; the original's
            was SGD, lr 1e-3, momentum 0.9: configs/original/).
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
        learning_rates: Stacked learning rates: every seed trains once at each rate in one
            process, each replica exactly as its separate run at that
            `optimizer.init_args.lr` (SGD, Adam, AdamW, RMSprop; see `ReplicaLearningRates`).
            Default: the optimizer's own rate, one replica per seed.
        aggregator: A TorchJD aggregator (`torchjd.aggregation.UPGrad`, `MGDA`, `PCGrad`, ...;
            README, "Multitask methods") that turns each replica's per-task gradients of the
            shared parameters into their update instead of summing them; task-specific
            parameters get their own task's gradient. Plain training for `st`.
        scalarizer: A TorchJD scalarizer (`torchjd.scalarization.UW`, `DWA`, `FAMO`, `IMTLL`,
            `Random`, ...) that combines the per-task losses instead of summing them, one copy
            per replica; those with a weight per task need `init_args: {shape: NUM_BITS}`. Not
            with `aggregator` or `loss_dropout`.
        telemetry_interval: Every this many optimizer steps (from the first), log the conflict
            between the tasks' gradients on the shared parameters (`conflict/*`); 0: off; not
            for `st`. A measurement costs about `num_bits` backward passes through the shared
            layers (docs/benchmarks.md).
        gradients: `explicit`: the step's forward and backward pass written out
            (`mtfilter.nn.explicit_gradients`), each task's gradient of the shared parameters
            in one batched pass, autograd's gradients to float32 rounding. `autograd`: through
            autograd, the per-task Jacobian by TorchJD. `auto`: written out where an aggregator
            needs the per-task Jacobian (1.29x faster there on a CPU), else autograd (7-10%
            faster for a plain step). Where the written-out pass does not cover the run
            (dropout, task filters, residual layers, chunked BatchNorm, a scalarizer,
            accumulated gradients, mixed precision), autograd, and the fit says why.
        label_figures: Also record the multi-label field's F1 figures (`metrics.LABEL_FIGURES`:
            per label, macro- and micro-averaged); linked from `MultiLabelDataModule`.
        architecture: The network's settings, the fields of `BitMLPConfig` (`layout`,
            `hidden_dim`, `num_layers`, ...), each a `model.*` key of the CLI.
    """

    def __init__(
        self,
        num_bits: int = 10,
        num_samples: int | None = None,
        data_fingerprint: str | None = None,
        seeds: list[int] | None = None,
        loss: LossName = "l1",
        loss_dropout: float = 0.0,
        loss_reduction: Reduction = "sum",
        accumulate_gradients: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        learning_rates: list[float] | None = None,
        aggregator: Aggregator | None = None,
        scalarizer: Scalarizer | None = None,
        telemetry_interval: int = 500,
        gradients: Literal["auto", "explicit", "autograd"] = "auto",
        label_figures: bool = False,
        **architecture: Any,
    ) -> None:
        super().__init__()
        # Lightning's own entries in saved hyperparameters, passed back by load_from_checkpoint
        architecture = {k: v for k, v in architecture.items() if not k.startswith("_")}
        self.train_config = TrainingConfig(
            num_bits=num_bits, loss=loss, loss_dropout=loss_dropout,
            loss_reduction=loss_reduction, accumulate_gradients=accumulate_gradients,
            learning_rates=None if learning_rates is None else tuple(learning_rates),
            aggregator=aggregator, scalarizer=scalarizer, telemetry_interval=telemetry_interval,
            gradients=gradients,
        )  # fmt: skip
        num_samples = 2**num_bits if num_samples is None else num_samples
        seeds = [torch.initial_seed()] if seeds is None else list(seeds)
        replicas.check_seeds(seeds, "seeds")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "aggregator", "scalarizer"])
        self.hparams.num_samples, self.hparams.seeds = num_samples, seeds
        # One replica per (seed, learning rate); the data module serves one sample order per seed.
        self.replicas = replicas.stack(seeds, learning_rates)
        replica_seeds = [replica.seed for replica in self.replicas]
        self.automatic_optimization = False  # one explicit step per batch (and room for TorchJD)
        check_optimizer(optimizer)
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        # A submodule: learned task weights (UW, IMTL-L) train with the model and are saved.
        n = len(self.replicas)
        self.scalarizers = None if scalarizer is None else replica_scalarizers(scalarizer, n)
        config = BitMLPConfig(
            num_bits=num_bits, num_samples=num_samples, num_replicas=len(self.replicas),
            init_seeds=replica_seeds, **architecture,
        )  # fmt: skip
        # every setting in the hyperparameters (checkpoints, summaries), defaults included
        self.hparams.update({k: v for k, v in asdict(config).items()
                             if k not in ("num_replicas", "init_seeds")})  # fmt: skip
        self.net = BitMLP(config)
        # What trains: the whole stack, then only the replicas whose runs have not ended
        rows = [seeds.index(seed) for seed in replica_seeds] if learning_rates else None
        self.live = LiveReplicas(self.net, data_rows=rows)
        self.num_bits, self.seeds = num_bits, replica_seeds  # seeds: one per replica
        self._last_row: Tensor | None = None  # the last epoch's (R, K) figures
        self.objective = Objective(self.net, self.train_config, replica_seeds, self.scalarizers)
        self.figures = metrics.figures(label_figures)  # what every epoch records
        self.epoch_log = EpochLog(metrics.epoch_keys(num_bits, self.figures), len(self.replicas))
        self.publisher = EpochPublisher(self.epoch_log, self.objective.conflicts, self.replicas)
        self.publisher.conflict_keys = conflict_keys(num_bits)
        self.learning_rates = ReplicaLearningRates.for_replicas(self.replicas, learning_rates)
        # set at fit start, from the data module's targets: one floor, or one per replica
        # where each seed has its own training split
        self.floor: Floor | None = None
        self.replica_floors: list[Floor] | None = None
        self._epoch = EpochTotals()
        # last.ckpt's accumulated gradients (the faithful mode), set at train start
        self.restored_gradients: dict[str, Tensor] | None = None

    @override
    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook call, ~40 times an epoch here, and
        # nn.Module.__setattr__ first checks the value against parameters, buffers and modules.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @override
    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(inputs)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of one replica: total, shared, per task, task-specific (see `BitMLP`)."""
        return self.net.parameter_counts()

    @override
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(self.parameters())
        else:
            optimizer = torch.optim.Adam(self.parameters(), **DEFAULT_OPTIMIZER["init_args"])
        self.learning_rates.configure(optimizer)  # before any scheduler reads the rate
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}

    # -- training ----------------------------------------------------------------------------

    @override
    def on_fit_start(self) -> None:
        # Fit evaluates the whole dataset itself every epoch (`_finish_epoch`): Lightning's
        # validation loop would add ~0.3 ms of bookkeeping an epoch (back for `validate` after).
        self._limit_val_batches, self.trainer.limit_val_batches = self.trainer.limit_val_batches, 0
        disable_ddp_gradient_hooks(self.trainer)
        # A training step here is an epoch: Lightning's logging interval counts epochs.
        self.publisher.every_epochs = self.trainer.log_every_n_steps
        tensorboard.use_fast_record_checksum()
        self.objective.setup(str(self.trainer.precision), self.device)
        self.live.rows_to(self.device)
        counts = self.parameter_counts()
        layout, noun = self.hparams.layout, "labels" if self.hparams.label_figures else "bits"
        rank_zero_info(describe_model(layout, self.num_bits, self.replicas, counts, noun))
        self._set_floors(self.trainer.datamodule)

    def _set_floors(self, data: Any) -> None:
        """The representational floor on the training data: of the bit-mapping task's targets,
        or of each replica's own training split (`MultiLabelDataModule.training_labels`)."""
        per_seed = getattr(data, "training_labels", None)
        if per_seed is not None:
            labels = per_seed()
            check_targets(labels[0], self.num_bits, self.hparams.num_samples)
            floors = [model_floor(self.hparams, pattern_counts(t)) for t in labels]
            self.replica_floors = [floors[data.seeds.index(r.seed)] for r in self.replicas]
            return
        targets = getattr(data, "targets", None)
        if targets is not None:
            check_targets(targets, self.num_bits, self.hparams.num_samples)
            self.floor = model_floor(self.hparams, pattern_counts(targets))

    def floor_of(self, replica: int) -> Floor | None:
        """The floor of one stacked replica on its training data."""
        return self.floor if self.replica_floors is None else self.replica_floors[replica]

    @override
    def on_train_start(self) -> None:
        restore_gradients(self)  # after the Trainer's own zero_grad, which follows the restore

    @override
    def on_train_epoch_start(self) -> None:
        self._epoch.reset()

    @override
    def training_step(self, epoch: Epoch, batch_idx: int) -> None:
        """One whole epoch: an optimizer step per minibatch, then the evaluation pass."""
        optimizer = self.optimizers()
        reduce = None if self.trainer.world_size == 1 else self._mean_over_processes
        rows = self.live.step_rows
        stepped = self.live.net if self.live.compacted else self  # what the optimizer steps
        for indices, targets in epoch:  # (S, B), (S, B, T): one row per seed
            if rows is not None:  # one per live replica: (R, B), (R, B, T)
                indices, targets = indices[rows], targets[rows]
            if not self.train_config.accumulate_gradients:
                optimizer.zero_grad(set_to_none=True)
            # forward, per-bit losses (R, T), every gradient in `.grad`
            loss_per_bit = self.objective.step(indices, targets, self.global_step,
                                               self.current_epoch + 1, self.manual_backward,
                                               reduce)  # fmt: skip
            if reduce is not None:
                average_gradients(list(self.parameters()), reduce)
            self.learning_rates.step(optimizer, stepped)
            self.objective.after_step(indices, targets, self.train_config.loss)
            self._epoch.add(loss_per_bit.detach(), indices.shape[1])
        self.live.sync()  # every replica's weights in `self.net`, for the callbacks
        # The epoch's figures are complete here, before any epoch-end hook of the callbacks runs.
        self._finish_epoch()

    def _mean_over_processes(self, tensor: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(tensor, reduce_op="mean")

    def _finish_epoch(self) -> None:
        reduce = self._mean_over_processes
        inputs, targets = self.replica_rows(self.trainer.datamodule.full_batch(), live_only=True)
        net = self.live.net
        was_training = net.training
        net.eval()
        counts = self.hparams.label_figures
        evaluation = evaluate(net, inputs, targets, self.train_config.loss, counts)
        net.train(was_training)
        figures = self._epoch.figures(evaluation, reduce)
        # the stopped replicas' figures as they ended
        row = metrics.epoch_row(figures, self.figures)
        self._last_row = self.live.expand(row, self._last_row)
        self.epoch_log.record(self.current_epoch + 1, self._last_row)
        self.objective.end_epoch()
        for scheduler in self._schedulers():
            scheduler.step()
        due = self.publisher.due()
        if self.trainer.world_size > 1:  # every rank must stop at the same epoch on NaN
            due = self.trainer.strategy.broadcast(due)
        if due:
            self.publish_epoch_log()

    def _schedulers(self) -> list[Any]:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return schedulers if isinstance(schedulers, list) else [schedulers]

    def scale_learning_rate(self, replica: int, factor: float) -> None:
        """Multiply one stacked replica's learning rate by `factor` (the convergence check's
        drops on a plateau); a stacked replica still trains as its separate run would (see
        `ReplicaLearningRates`)."""
        self.learning_rates.scale(replica, factor)

    def stop_training(self, replicas: list[int]) -> None:
        """These stacked replicas' separate runs have ended (their learning rate is 0 already):
        they leave the batched computation, their weights kept (`LiveReplicas`), so the rest
        train at the cost of their own number. Not under DDP, with a scalarizer (one module per
        replica) or with accumulated gradients: there they stay frozen in the stack."""
        if (self.trainer.world_size > 1 or self.scalarizers is not None
                or self.train_config.accumulate_gradients):  # fmt: skip
            return
        self.live.stop(replicas, self.trainer.optimizers[0])
        if not self.live.compacted:
            return
        live = self.live.live
        self.objective.use(self.live.net, live)
        self.learning_rates.keep(live)
        self._epoch = EpochTotals()  # sums of the live replicas from the next epoch on
        if self._last_row is None:  # resumed: the stopped replicas' figures as they ended
            self._last_row = self.epoch_log.last_row().to(self.device)

    @override
    def on_train_end(self) -> None:
        self.publisher.publish(self.loggers, self.trainer.is_global_zero, final=True)
        self.publisher.flush()
        # as `validate` would leave them: training never calls `self.log`, which would cost a
        # host sync every epoch
        for name, value in self.publisher.last_epoch_metrics().items():
            self.trainer.callback_metrics[name] = torch.tensor(value)

    @override
    def on_fit_end(self) -> None:
        self.trainer.limit_val_batches = self._limit_val_batches

    # -- what the callbacks read (publishing.RecordsEpochs) -----------------------------------

    def publish_epoch_log(self, check_finite: bool = True) -> None:
        """Pull recorded epochs to the host, write them to the loggers and stop on NaN/inf (see
        `EpochPublisher.publish`); callbacks call it before they read the log."""
        self.publisher.publish(self.loggers, self.trainer.is_global_zero, check_finite)

    def split_sections(
        self, weights: dict[str, Tensor] | None
    ) -> list[dict[str, dict[str, Any]]] | None:
        """Per replica, the test and training splits' figures with these weights (data with
        held-out splits only; see `split_figures`)."""
        return split_figures.split_sections(self, weights)

    def run_description(self, replica: int, best_epoch: int | None = None) -> dict[str, Any]:
        """What the run is, for its summary (see `describe_run`)."""
        return describe_run(self, replica, best_epoch)

    # -- checkpoints -------------------------------------------------------------------------

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_training_state(self, checkpoint)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = self._trainer  # None when loaded outside a Trainer
        data = getattr(getattr(trainer, "datamodule", None), "hparams", None)
        check_and_upgrade(self, checkpoint, data)
        if trainer is not None and trainer.state.fn == "fit":
            restore_training_state(self, checkpoint)
