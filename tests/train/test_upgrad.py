"""UPGrad's weights for stacked replicas (`mtfilter.train.upgrad`) against TorchJD's own, one
replica at a time."""

import pytest
import torch
from torchjd.aggregation import UPGrad
from torchjd.linalg import QuadprogProjector

from mtfilter.train.upgrad import covers, upgrad_weights


def _gramians(replicas: int, tasks: int, columns: int, scale: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    matrices = torch.randn(replicas, tasks, columns, generator=generator) * scale
    matrices[0, 1] = -matrices[0, 0]  # two tasks in direct conflict
    return matrices @ matrices.transpose(1, 2)


@pytest.mark.parametrize(
    ("tasks", "columns", "scale"),
    [(10, 50, 1.0), (10, 6, 1.0), (4, 100, 1e-3), (10, 50, 1e-4), (3, 3, 1e3)],
    ids=["full-rank", "rank-deficient", "small", "below-norm-eps", "large"],
)
@pytest.mark.parametrize(
    "aggregator",
    [UPGrad(), UPGrad(projector=QuadprogProjector(norm_eps=1e-6, reg_eps=1e-3))],
    ids=["default", "own-eps"],
)
def test_weights_equal_torchjds_per_replica(tasks, columns, scale, aggregator):
    gramians = _gramians(5, tasks, columns, scale, seed=tasks + columns)
    expected = torch.stack([aggregator.gramian_weighting(g) for g in gramians])
    torch.testing.assert_close(upgrad_weights(gramians, aggregator), expected, rtol=1e-5,
                               atol=1e-7)  # fmt: skip


def test_a_preference_vector_is_kept():
    aggregator = UPGrad(pref_vector=torch.tensor([0.7, 0.2, 0.1]))
    gramians = _gramians(3, 3, 8, 1.0, seed=0)
    expected = torch.stack([aggregator.gramian_weighting(g) for g in gramians])
    torch.testing.assert_close(upgrad_weights(gramians, aggregator), expected, rtol=1e-5,
                               atol=1e-7)  # fmt: skip


def test_only_torchjds_default_projector_is_taken_over():
    class OwnProjector(QuadprogProjector):
        pass

    assert covers(UPGrad())
    assert not covers(UPGrad(projector=OwnProjector()))
