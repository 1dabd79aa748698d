"""Multitask methods: TorchJD aggregators on the shared parameters' per-task Jacobian (TorchJD's
autojac), TorchJD scalarizers on the per-task losses, each stacked replica on its own; and the
conflict figures (cosines, norms) read off the same Jacobian."""

import contextlib
import copy
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torchjd.aggregation import Aggregator, GramianWeightedAggregator
from torchjd.autojac import jac
from torchjd.scalarization import DWA, FAMO, Scalarizer

from mtfilter.errors import ConfigError

# Names of the conflict figures, in the order of `conflict_figures`'s columns (then per-bit norms).
CONFLICT_KEYS = (
    "conflict/mean_cosine",
    "conflict/min_cosine",
    "conflict/fraction",
    "conflict/grad_norm_mean",
    "conflict/grad_norm_spread",
    "conflict/zero_gradient_tasks",
)


def check_aggregator(aggregator: object) -> None:
    if aggregator is not None and not isinstance(aggregator, Aggregator):
        raise ConfigError(
            f"model.aggregator must be a torchjd.aggregation.Aggregator (e.g. class_path: "
            f"torchjd.aggregation.UPGrad), got {type(aggregator).__qualname__}"
        )


def per_replica_jacobian(losses: Tensor, shared: list[nn.Parameter], num_replicas: int) -> Tensor:
    """Each replica's Jacobian of its per-task losses over its own shared parameters.

    losses (R, T) -> (R, T, P), P the shared parameters of one replica. Replicas share no
    parameter, so the Jacobian of the replica-summed losses (T,) holds replica r's rows in r's
    slices: one Jacobian of T rows, not R * T. Replica r owns rows r*k .. (r+1)*k - 1 of every
    stacked parameter's leading axis (see `BitMLP`).
    """
    jacobians = jac(losses.sum(0), shared, retain_graph=True)  # (T, *p.shape) per parameter
    tasks = losses.shape[1]
    return torch.cat([j.reshape(tasks, num_replicas, -1).transpose(0, 1) for j in jacobians], dim=2)


def aggregate(matrices: Tensor, aggregator: Aggregator) -> Tensor:
    """One update direction per replica: (R, T, P) -> (R, P).

    TorchJD's aggregators take one matrix, so replicas are a loop here, the only one; for
    Gramian-based aggregators (UPGrad, MGDA, DualProj, ...) only the (T, T) Gramians go
    through it, computed for all replicas in one batched matmul.
    """
    hooked = aggregator._forward_hooks or aggregator._forward_pre_hooks
    if isinstance(aggregator, GramianWeightedAggregator) and not hooked:
        gramians = matrices @ matrices.transpose(1, 2)  # (R, T, T)
        weights = torch.stack([aggregator.gramian_weighting(g) for g in gramians])  # (R, T)
        return (weights[:, None, :] @ matrices).squeeze(1)
    return torch.stack([aggregator(matrix) for matrix in matrices])


def set_shared_gradients(directions: Tensor, shared: list[nn.Parameter]) -> None:
    """Write (R, P) update directions into the shared parameters' `.grad`, each contiguous.

    A parameter's slice of every replica's row is a strided view of `directions` when R > 1;
    torch's fused Adam on the CPU (2.13) reads a `.grad` as if it were contiguous, so a view would
    step each parameter along a scramble of the others' directions."""
    replicas = directions.shape[0]
    parts = directions.split([p.numel() // replicas for p in shared], dim=1)
    for parameter, part in zip(shared, parts, strict=True):
        parameter.grad = part.reshape(parameter.shape).contiguous()


def conflict_figures(matrices: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient-conflict figures of each replica's per-task gradients (R, T, P).

    Returns a (R, 6 + T) row in the order of `CONFLICT_KEYS` then each task's gradient norm,
    and the (R, T, T) cosine matrices. Cosines are over task pairs i < j; a pair conflicts when
    its cosine is negative; the spread is the norms' coefficient of variation (std / mean).

    Exact at any gradient scale float32 holds: each row is divided by its largest entry before
    any square is taken, so nothing underflows (a 1e-25 gradient) or overflows (1e25). A task
    whose gradient is exactly zero has no direction: its cosines are NaN, it is left out of the
    pair figures (NaN when no pair is left) and counted in `zero_gradient_tasks`.
    """
    largest = matrices.abs().amax(dim=2)  # (R, T)
    zero = largest == 0
    scaled = matrices / torch.where(zero, 1.0, largest)[..., None]  # entries in [-1, 1]
    scaled_norms = scaled.norm(dim=2)  # in [1, sqrt(P)] for non-zero rows
    norms = largest * scaled_norms  # (R, T)
    units = scaled / torch.where(zero, 1.0, scaled_norms)[..., None]
    cosines = (units @ units.transpose(1, 2)).clamp(-1.0, 1.0)  # rounding can pass +-1
    undefined = zero[:, :, None] | zero[:, None, :]
    cosines = cosines.masked_fill(undefined, math.nan)  # (R, T, T)
    tasks = matrices.shape[1]
    upper = torch.triu_indices(tasks, tasks, offset=1, device=matrices.device)
    pairs = cosines[:, upper[0], upper[1]]  # (R, T (T-1) / 2), NaN where undefined
    defined = ~pairs.isnan()
    counted = defined.sum(1)  # pairs with a cosine, per replica
    mean_cosine = pairs.nan_to_num(0.0).sum(1) / counted  # NaN when no pair is defined
    min_cosine = pairs.nan_to_num(math.inf).amin(1).masked_fill(counted == 0, math.nan)
    fraction = ((pairs < 0) & defined).sum(1) / counted
    relative = norms / norms.amax(1, keepdim=True)  # the spread is scale-free: no squared 1e30
    spread = relative.std(1, correction=0) / relative.mean(1)
    row = torch.stack(
        [mean_cosine, min_cosine, fraction, norms.mean(1), spread, zero.sum(1).to(norms.dtype)],
        dim=1,
    )
    return torch.cat([row, norms], dim=1), cosines


def conflict_keys(num_tasks: int) -> list[str]:
    """Tags of `conflict_figures`'s columns."""
    return [*CONFLICT_KEYS, *(f"conflict/grad_norm/bit_{i}" for i in range(num_tasks))]


def check_scalarizer(
    scalarizer: object, *, num_tasks: int, aggregator: object, loss_dropout: float
) -> None:
    if scalarizer is None:
        return
    if not isinstance(scalarizer, Scalarizer):
        raise ConfigError(
            f"model.scalarizer must be a torchjd.scalarization.Scalarizer (e.g. class_path: "
            f"torchjd.scalarization.UW), got {type(scalarizer).__qualname__}"
        )
    shapes = {tuple(p.shape) for p in scalarizer.parameters()}
    if shapes - {(num_tasks,)}:
        raise ConfigError(
            f"model.scalarizer {type(scalarizer).__name__} has one weight per value of shape "
            f"{sorted(shapes)[0]}, but there are {num_tasks} bits: give it init_args.shape: "
            f"{num_tasks}"
        )
    if aggregator is not None:
        raise ConfigError(
            "model.scalarizer and model.aggregator both decide how the tasks combine: choose one"
        )
    if loss_dropout > 0:
        raise ConfigError(
            "model.scalarizer cannot be combined with model.loss_dropout: a dropped loss term "
            "would reach it as a loss of zero (FAMO takes its logarithm, DWA its ratio)"
        )


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


def needs_update_after_step(scalarizers: nn.ModuleList) -> bool:
    """FAMO learns its weights from the losses of the same batch after the update."""
    return isinstance(scalarizers[0], FAMO)


def ends_epoch(scalarizers: nn.ModuleList) -> None:
    """DWA weighs tasks by their epoch-mean losses' rate of change: close the epoch."""
    for scalarizer in scalarizers:
        if isinstance(scalarizer, DWA):
            scalarizer.step()


def describe(method: object) -> str | None:
    """`torchjd.aggregation.UPGrad(...)` for a TorchJD object, None for none."""
    if method is None:
        return None
    public = type(method).__module__.split("._")[0]  # torchjd.aggregation._upgrad -> its package
    return f"{public}.{method!r}"
