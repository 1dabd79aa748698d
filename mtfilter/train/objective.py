"""How one step's per-bit losses become gradients: the objective (their sum or mean, Cost-Out,
or a TorchJD scalarizer), or a TorchJD aggregator on the shared parameters' per-task Jacobian,
each stacked replica on its own; and the conflict telemetry read off that same Jacobian (its
figures in `mtfilter.record.conflicts`). The gradients are written out
(`mtfilter.nn.explicit_gradients`) where that covers the run, by autograd (the Jacobian by
TorchJD's autojac) where not."""

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchjd.aggregation import Aggregator, GramianWeightedAggregator
from torchjd.autojac import jac
from torchjd.scalarization import DWA, FAMO, Scalarizer

from mtfilter.errors import ConfigError
from mtfilter.nn import counter_rng
from mtfilter.nn.explicit_gradients import ExplicitGradients, unsupported
from mtfilter.nn.losses import LossName, per_bit_loss, per_bit_loss_and_gradient
from mtfilter.nn.model import BitMLP
from mtfilter.record.conflicts import ConflictRecord, conflict_figures, conflict_keys
from mtfilter.train import upgrad
from mtfilter.train.config import TrainingConfig


class Objective:
    """The multitask side of a training step, for a `BitMLP` and its stacked replicas.

    Args:
        net: The model.
        config: The training settings (reduction, Cost-Out, aggregator, telemetry).
        seeds: One per stacked replica (Cost-Out draws per replica and step).
        scalarizers: One TorchJD scalarizer per replica (`replica_scalarizers`), or None.
    """

    def __init__(
        self, net: BitMLP, config: TrainingConfig, seeds: list[int],
        scalarizers: nn.ModuleList | None,
    ) -> None:  # fmt: skip
        self.net, self.num_replicas = net, len(seeds)
        self.num_bits = net.num_bits
        self.loss, self.config = config.loss, config
        self.term_scale = 1.0 if config.loss_reduction == "sum" else 1.0 / net.num_bits
        self.loss_dropout = config.loss_dropout
        self.aggregator, self.scalarizers = config.aggregator, scalarizers
        self.telemetry_interval = config.telemetry_interval
        self.conflicts = ConflictRecord()
        # (R, T) per-bit keys of the loss-dropout stream
        self.dropout_keys = counter_rng.element_keys(counter_rng.seed_keys(seeds), net.num_bits)
        self._all_dropout_keys = self.dropout_keys
        self.live: Tensor | None = None  # (R',) the replicas `net` holds; None: every one
        self.total_replicas = len(seeds)
        self.shared = net.shared_parameters()
        self.task_params = net.task_parameters()
        # Decided once by `setup`, not re-derived every step.
        self.telemetry_every = 0
        self.aggregates = False
        self.updates_after_step = False
        self.explicit: ExplicitGradients | None = None  # the written-out step, where it covers
        # what autograd sees of a written-out step: the objective, one node whose backward is
        # `ExplicitGradients.backward` (Lightning's backward hooks still run around it)
        self._anchor = torch.zeros((), requires_grad=True)

    def setup(self, precision: str, device: torch.device) -> None:
        """Check the methods against the trainer's precision and decide what each step does."""
        self.dropout_keys = self._all_dropout_keys = self.dropout_keys.to(device)
        self._anchor = self._anchor.detach().to(device).requires_grad_()
        self.shared, self.task_params = self.net.shared_parameters(), self.net.task_parameters()
        # The per-task Jacobian is a vmapped backward, which fails on autocast graphs.
        mixed_precision = precision not in ("32-true", "64-true")
        if mixed_precision and self.telemetry_interval > 0 and self.shared:
            rank_zero_info(f"no conflict telemetry under precision {precision}")
        measures = bool(self.shared) and self.num_bits > 1 and not mixed_precision
        self.telemetry_every = self.telemetry_interval if measures else 0
        self.updates_after_step = self.scalarizers is not None and (
            _needs_update_after_step(self.scalarizers)
        )
        self.aggregates = self._aggregates(precision, mixed_precision, device)
        self.explicit = self._written_out(mixed_precision)

    def _aggregates(self, precision: str, mixed_precision: bool, device: torch.device) -> bool:
        """Whether an aggregator updates the shared parameters (said at start-up)."""
        if self.aggregator is None:
            return False
        if not self.shared:
            rank_zero_info(
                f"layout {self.net.layout} shares no parameter between bits: "
                f"model.aggregator ({self.aggregator}) has nothing to aggregate; plain training"
            )
            return False
        if mixed_precision:
            raise ConfigError(
                f"model.aggregator does not support trainer.precision={precision}: "
                "the per-task Jacobian cannot be taken through autocast; use 32-true"
            )
        self.aggregator.to(device)
        rank_zero_info(f"shared parameters updated by {self.aggregator}, per replica")
        return True

    def _written_out(self, mixed_precision: bool) -> ExplicitGradients | None:
        """The written-out step where `model.gradients` asks for it and it covers the run:
        `auto` where an aggregator needs each step's per-task Jacobian (measured 1.29x faster
        there; autograd is 7-10% faster for a plain step, docs/benchmarks.md)."""
        wanted = self.config.gradients
        if wanted == "autograd" or (wanted == "auto" and not self.aggregates):
            return None
        reason = unsupported(self.net) or next(
            (why for why, applies in [
                ("a scalarizer", self.scalarizers is not None),
                ("accumulated gradients", self.config.accumulate_gradients),
                ("mixed precision", mixed_precision),
            ] if applies), None,
        )  # fmt: skip
        if reason is not None:
            rank_zero_info(f"gradients by autograd: the written-out step does not cover {reason}")
            return None
        return ExplicitGradients(self.net)

    def use(self, net: BitMLP, live: list[int]) -> None:
        """Train `net`, the stack of the replicas `live` only (see `LiveReplicas`)."""
        self.net, self.num_replicas = net, len(live)
        self.live = torch.tensor(live, device=self._all_dropout_keys.device)
        self.dropout_keys = self._all_dropout_keys[self.live]
        self.shared, self.task_params = net.shared_parameters(), net.task_parameters()
        if self.explicit is not None:
            self.explicit = ExplicitGradients(net)

    def step(
        self,
        indices: Tensor,
        targets: Tensor,
        step: int,
        epoch: int,
        backward: Callable[[Tensor], None],
        reduce: Callable[[Tensor], Tensor] | None,
    ) -> Tensor:
        """One optimizer step's forward and backward pass: (R, B) indices and (R, B, T) targets
        -> the per-bit losses (R, T), every parameter's gradient in `.grad` (see `backward`)."""
        if self.explicit is None:
            loss_per_bit = per_bit_loss(self.net(indices), targets, self.loss)
            self.backward(loss_per_bit, step, epoch, backward, reduce)
            return loss_per_bit.detach()
        explicit = self.explicit
        logits = explicit.forward(indices)  # (R, T, B)
        loss_per_bit, logit_grads = per_bit_loss_and_gradient(logits, targets.mT, self.loss)
        kept = self.kept_terms(step)
        if kept is not None:
            logit_grads.mul_(kept[..., None])  # a dropped term sends no gradient
        if self.term_scale != 1.0:
            logit_grads.mul_(self.term_scale)
        due = self.telemetry_every > 0 and step % self.telemetry_every == 0
        matrices = None
        # per sample rather than per table entry where only Gramians and norms are read of it
        # (processes' matrices are averaged entry by entry: DDP takes the table's layout)
        compact = reduce is None and (not self.aggregates or gramian_path(self.aggregator))
        if self.aggregates or due:
            matrices = explicit.task_jacobian(logit_grads, compact=compact)  # (R, T, P)
            if reduce is not None:
                matrices = reduce(matrices)
            if due:
                self.conflicts.add(epoch, *self._all_replicas(*conflict_figures(matrices)))
        objective = self.objective(loss_per_bit * self.term_scale, kept)
        backward(_WrittenOut.apply(self._anchor, objective, lambda: explicit.backward(logit_grads)))
        if self.aggregates:
            assert self.aggregator is not None and matrices is not None
            directions = aggregate(matrices, self.aggregator)  # (R, P)
            if compact:
                explicit.set_shared_gradients(directions)
            else:
                set_shared_gradients(directions, self.shared)
        return loss_per_bit

    def backward(
        self,
        loss_per_bit: Tensor,
        step: int,
        epoch: int,
        backward: Callable[[Tensor], None],
        reduce: Callable[[Tensor], Tensor] | None,
    ) -> None:
        """Gradients of one step: of the objective, or with the shared parameters' update from
        the aggregator; the conflict figures when they are due.

        `backward` is Lightning's `manual_backward`; `reduce` averages over DDP processes (None
        on one process): the aggregator and the telemetry see the whole global batch.
        """
        kept = self.kept_terms(step)  # (R, T) bool, or None
        if self.term_scale != 1.0:  # mean reduction: every term, and its gradient, / num_bits
            loss_per_bit = loss_per_bit * self.term_scale
        objective = self._scalar_objective(loss_per_bit, kept)
        due = self.telemetry_every > 0 and step % self.telemetry_every == 0
        if not (self.aggregates or due):  # the common step: one backward of the objective
            backward(objective)
            return
        matrices = self._task_jacobians(loss_per_bit, kept, reduce)  # (R, T, P)
        if due:
            self.conflicts.add(epoch, *self._all_replicas(*conflict_figures(matrices)))
        if self.aggregates:
            self._aggregated_backward(objective, matrices)
        else:
            backward(objective)

    def _all_replicas(self, row: Tensor, cosines: Tensor) -> tuple[Tensor, Tensor]:
        """Live replicas' figures (R', ...) -> (R, ...), NaN for replicas that stopped (not
        measured: `ConflictRecord` keeps their last measurement)."""
        if self.live is None:
            return row, cosines
        live, replicas = self.live, self.total_replicas

        def widened(values: Tensor) -> Tensor:
            nan = values.new_full((replicas, *values.shape[1:]), math.nan)
            return nan.index_copy(0, live, values)

        return widened(row), widened(cosines)

    def _scalar_objective(self, loss_per_bit: Tensor, kept: Tensor | None) -> Tensor:
        """The scalarizer's (TorchJD) objective, else the sum of the kept terms."""
        if self.scalarizers is not None:
            return scalarize(self.scalarizers, loss_per_bit)
        return self.objective(loss_per_bit, kept)

    def _task_jacobians(
        self, loss_per_bit: Tensor, kept: Tensor | None, reduce: Callable[[Tensor], Tensor] | None
    ) -> Tensor:
        """(R, T, P): each replica's per-task gradients of the shared parameters, over the global
        batch under DDP, zero for a task Cost-Out dropped."""
        matrices = per_replica_jacobian(loss_per_bit, self.shared, self.num_replicas)
        if reduce is not None:
            matrices = reduce(matrices)
        if kept is not None:
            matrices = matrices * kept[..., None]  # a dropped task sends no gradient
        return matrices

    def _aggregated_backward(self, objective: Tensor, matrices: Tensor) -> None:
        """The task-specific parameters' gradients from the objective; the shared ones' from
        the aggregator of the per-task gradients."""
        assert self.aggregator is not None
        torch.autograd.backward(objective, inputs=self.task_params)
        directions = aggregate(matrices, self.aggregator)  # (R, P)
        set_shared_gradients(directions, self.shared)

    @staticmethod
    def objective(loss_per_bit: Tensor, kept: Tensor | None) -> Tensor:
        """The training objective: the sum of the kept per-bit loss terms (R, T)."""
        return loss_per_bit.sum() if kept is None else (loss_per_bit * kept).sum()

    def kept_terms(self, step: int) -> Tensor | None:
        """Cost-Out's draw for `step`: (R, T), True where a bit's loss term is kept."""
        if self.loss_dropout == 0:
            return None
        draws = counter_rng.uniform(self.dropout_keys, counter_rng.LOSS_DROPOUT_STREAM, step)
        return draws >= self.loss_dropout  # dropped terms multiply by 0

    @torch.no_grad()
    def after_step(self, indices: Tensor, targets: Tensor, loss: LossName) -> None:
        """FAMO's weight update, from the step's batch re-evaluated after the step."""
        if not self.updates_after_step:
            return
        assert self.scalarizers is not None
        with frozen_batch_norm_statistics(self.net):
            after = per_bit_loss(self.net(indices), targets, loss)  # (R, T)
        for scalarizer, row in zip(self.scalarizers, after, strict=True):
            scalarizer.update(row)  # type: ignore[operator]  # FAMO's, a method

    def end_epoch(self) -> None:
        if self.scalarizers is not None:
            for scalarizer in self.scalarizers:  # DWA weighs tasks by epoch-mean loss trends
                if isinstance(scalarizer, DWA):
                    scalarizer.step()

    def summary(self, replica: int, best_epoch: int | None = None) -> dict[str, Any]:
        """What the run did about the tasks' shared gradients, for its summary; with
        `best_epoch`, also the last measurement at or before it (`conflict_at_best`)."""
        keys = conflict_keys(self.num_bits)

        def figures(rows: Tensor | None) -> dict[str, float]:
            return {} if rows is None else dict(zip(keys, rows[replica].tolist(), strict=True))

        return {
            "aggregated": self.aggregator is not None and bool(self.shared),
            "shared_parameters": sum(p.numel() for p in self.shared) // self.num_replicas,
            "telemetry_interval": self.telemetry_every,
            "conflict_mean": figures(self.conflicts.mean()),
            "conflict_last": figures(self.conflicts.latest_row),
            "conflict_at_best": figures(
                None if best_epoch is None else self.conflicts.at_or_before(best_epoch)
            ),
        }


class _WrittenOut(torch.autograd.Function):
    """The objective's value as autograd sees it, its backward pass the written-out one."""

    @staticmethod
    def forward(ctx: Any, anchor: Tensor, objective: Tensor, run_backward: Callable[[], None]):
        ctx.run_backward = run_backward
        return objective.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, None]:
        # the objective is the loss Lightning backpropagates, so `grad` is 1 (mixed precision's
        # loss scaling takes the autograd path)
        ctx.run_backward()
        return None, None, None


def per_replica_jacobian(
    losses: Tensor, shared: list[nn.Parameter], num_replicas: int, sequential: bool | None = None
) -> Tensor:
    """Each replica's Jacobian of its per-task losses over its own shared parameters.

    losses (R, T) -> (R, T, P), P the shared parameters of one replica. Replicas share no
    parameter, so the Jacobian of the replica-summed losses (T,) holds replica r's rows in r's
    slices: one Jacobian of T rows, not R * T. Replica r owns rows r*k .. (r+1)*k - 1 of every
    stacked parameter's leading axis (see `BitMLP`).

    `sequential`: one backward pass per task instead of TorchJD's default, all T at once through
    `vmap`. None: sequential on a CPU, where it was measured faster (one thread, mt, 10 tasks,
    one Jacobian: 8 replicas at hidden 8 7.7 -> 5.3 ms, 2 at hidden 512 185 -> 94 ms, one at
    hidden 1024 209 -> 168 ms; vmap's batched kernels do not pay there), vmapped elsewhere.
    """
    if sequential is None:
        sequential = losses.device.type == "cpu"
    jacobians = jac(  # (T, *p.shape) per parameter
        losses.sum(0), shared, retain_graph=True, parallel_chunk_size=1 if sequential else None
    )
    tasks = losses.shape[1]
    return torch.cat([j.reshape(tasks, num_replicas, -1).transpose(0, 1) for j in jacobians], dim=2)


def aggregate(matrices: Tensor, aggregator: Aggregator) -> Tensor:
    """One update direction per replica: (R, T, P) -> (R, P).

    TorchJD's aggregators take one matrix, so replicas are a loop here, the only one; for
    Gramian-based aggregators (UPGrad, MGDA, DualProj, ...) only the (T, T) Gramians go
    through it, computed for all replicas in one batched matmul.
    """
    if gramian_path(aggregator):
        assert isinstance(aggregator, GramianWeightedAggregator)
        gramians = matrices @ matrices.transpose(1, 2)  # (R, T, T)
        if upgrad.covers(aggregator):  # TorchJD's computation, its overheads taken out
            weights = upgrad.upgrad_weights(gramians, aggregator)  # (R, T)
        else:
            weights = torch.stack([aggregator.gramian_weighting(g) for g in gramians])
        return (weights[:, None, :] @ matrices).squeeze(1)
    return torch.stack([aggregator(matrix) for matrix in matrices])


def gramian_path(aggregator: Aggregator | None) -> bool:
    """Whether `aggregate` reads only the Gramians of the rows (a hooked aggregator takes its
    own path, hooks included)."""
    hooked = aggregator is not None and (aggregator._forward_hooks or aggregator._forward_pre_hooks)
    return isinstance(aggregator, GramianWeightedAggregator) and not hooked


def set_shared_gradients(directions: Tensor, shared: list[nn.Parameter]) -> None:
    """Write (R, P) update directions into the shared parameters' `.grad`, each contiguous.

    A parameter's slice of every replica's row is a strided view of `directions` when R > 1;
    torch's fused Adam on the CPU (2.13) reads a `.grad` as if it were contiguous, so a view would
    step each parameter along a scramble of the others' directions."""
    replicas = directions.shape[0]
    parts = directions.split([p.numel() // replicas for p in shared], dim=1)
    for parameter, part in zip(shared, parts, strict=True):
        parameter.grad = part.reshape(parameter.shape).contiguous()


def replica_scalarizers(scalarizer: Scalarizer, num_replicas: int) -> nn.ModuleList:
    """One independent copy per stacked replica: a scalarizer weighs all the values it is given
    together, and learned weights (UW, IMTL-L, FAMO) or loss histories (DWA) are per run."""
    return nn.ModuleList(copy.deepcopy(scalarizer) for _ in range(num_replicas))


def scalarize(scalarizers: nn.ModuleList, losses: Tensor) -> Tensor:
    """The objective: each replica's per-task losses (R, T) through its own scalarizer, summed.
    TorchJD's scalarizers take one replica's values, so this loops over replicas."""
    return sum(s(row) for s, row in zip(scalarizers, losses, strict=True))


@contextlib.contextmanager
def frozen_batch_norm_statistics(module: nn.Module) -> Iterator[None]:
    """A training-mode forward that leaves BatchNorm's running statistics as they are (FAMO
    re-evaluates the step's batch after the update)."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm1d | nn.SyncBatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def _needs_update_after_step(scalarizers: nn.ModuleList) -> bool:
    """FAMO learns its weights from the losses of the same batch after the update."""
    return isinstance(scalarizers[0], FAMO)


def describe(method: object) -> str | None:
    """`torchjd.aggregation.UPGrad(...)` for a TorchJD object, None for none."""
    if method is None:
        return None
    public = type(method).__module__.split("._")[0]  # torchjd.aggregation._upgrad -> its package
    return f"{public}.{method!r}"
