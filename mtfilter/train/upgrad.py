"""UPGrad's weights for every stacked replica at once: TorchJD's own computation (its default
quadprog projector), with its per-replica and per-call overheads taken out.

TorchJD weighs one Gramian at a time and solves each of its T quadratic programs through
qpsolvers, which checks and converts every problem before calling quadprog: at T = 10 that is
~20 us a solve against ~13 us for quadprog itself, and ~0.34 ms a replica in all, a large part
of a UPGrad step at small widths (docs/benchmarks.md, "The step written out"). Here the
Gramians are normalised and regularised in one batched operation and quadprog gets the problems
qpsolvers would give it. The weights equal `UPGrad().gramian_weighting(G)`'s to float32
rounding (tests/train/test_upgrad.py).
"""

from typing import TypeGuard

import numpy as np
import quadprog
import torch
from torch import Tensor
from torchjd.aggregation import Aggregator, UPGrad
from torchjd.linalg import QuadprogProjector


def covers(aggregator: Aggregator) -> TypeGuard[UPGrad]:
    """An UPGrad whose projector is TorchJD's default one (any pref_vector, any eps)."""
    return type(aggregator) is UPGrad and type(aggregator.projector) is QuadprogProjector


def upgrad_weights(gramians: Tensor, aggregator: UPGrad) -> Tensor:
    """(R, T, T) Gramians -> (R, T) weights, as `aggregator.gramian_weighting` gives each."""
    projector = aggregator.projector
    assert isinstance(projector, QuadprogProjector)
    replicas, tasks, _ = gramians.shape
    # the preference weights of each replica's rows, U = diag(weights) per replica
    preferences = torch.stack([aggregator.gramian_weighting.weighting(g) for g in gramians])
    # torchjd._linalg's normalize (by the trace, 0 below norm_eps) then regularize (+ eps I)
    traces = gramians.diagonal(dim1=1, dim2=2).sum(1)[:, None, None]  # (R, 1, 1)
    normalised = torch.where(traces < projector.norm_eps, 0.0, gramians / traces)
    eye = torch.eye(tasks, dtype=gramians.dtype, device=gramians.device)
    problems = (normalised + projector.reg_eps * eye).cpu().double().numpy()
    rows = preferences.cpu().double().numpy()  # (R, T): row i of U is preferences[i] e_i
    # min v^T G v subject to v >= u, for each u a row of U; in quadprog's terms (as qpsolvers
    # puts it): G, a = -0, C = I (C^T v >= b), b = u
    zero, constraints = -np.zeros(tasks), np.eye(tasks)
    solutions = np.empty((replicas, tasks, tasks))
    for r in range(replicas):
        for i in range(tasks):
            u = np.zeros(tasks)
            u[i] = rows[r, i]
            solutions[r, i] = quadprog.solve_qp(problems[r], zero, constraints, u, 0)[0]
    # as TorchJD: the projections in the Gramian's dtype, then their sum
    return torch.as_tensor(solutions, device=gramians.device, dtype=gramians.dtype).sum(1)
