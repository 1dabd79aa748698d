"""The conflict figures read off each replica's per-task gradients: known cosines, exact at any
scale, zero gradients, rounding."""

import math

import pytest
import torch

from mtfilter.record.conflicts import conflict_figures


def test_conflict_figures_on_gradients_with_known_cosines():
    # task 0 and 1 point opposite ways (cos -1), task 2 is orthogonal to both, norms 1, 2, 3
    matrix = torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    row, cosines = conflict_figures(matrix[None])
    expected_cosines = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(cosines[0], expected_cosines)
    mean_cosine, min_cosine, fraction, norm_mean, spread, zero, *norms = row[0].tolist()
    assert zero == 0
    assert mean_cosine == pytest.approx(-1 / 3)
    assert min_cosine == pytest.approx(-1.0)
    assert fraction == pytest.approx(1 / 3)  # one conflicting pair of three
    assert norm_mean == pytest.approx(2.0)
    assert spread == pytest.approx(math.sqrt(2 / 3) / 2)  # population std / mean
    assert norms == pytest.approx([1.0, 2.0, 3.0])


def reference_figures(matrix: torch.Tensor) -> tuple[list[float], list[float]]:
    """Cosines of the pairs i < j with a defined cosine, and the norms, in float64."""
    rows = matrix.double()
    norms = rows.norm(dim=1)
    cosines = [
        float(rows[i] @ rows[j] / (norms[i] * norms[j]))
        for i in range(len(rows))
        for j in range(i + 1, len(rows))
        if norms[i] > 0 and norms[j] > 0
    ]
    return cosines, norms.tolist()


@pytest.mark.parametrize("scale", [1e-30, 1e-25, 1.0, 1e25, 1e30], ids=lambda s: f"{s:g}")
def test_conflict_figures_are_exact_at_any_gradient_scale(scale):
    base = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    base[1] = -base[0] + 0.1 * base[1]  # a clear conflict
    matrix = (base.double() * scale).float()  # what a float32 Jacobian at that scale holds
    row, cosines = conflict_figures(matrix[None])
    pairs, norms = reference_figures(matrix)
    mean_cosine, min_cosine, fraction, norm_mean, spread, zero, *bit_norms = row[0].tolist()
    assert mean_cosine == pytest.approx(sum(pairs) / len(pairs), abs=1e-6)
    assert min_cosine == pytest.approx(min(pairs), abs=1e-6)
    assert fraction == pytest.approx(sum(c < 0 for c in pairs) / len(pairs))
    assert bit_norms == pytest.approx(norms, rel=1e-6)
    assert norm_mean == pytest.approx(sum(norms) / len(norms), rel=1e-6)
    relative = torch.tensor(norms) / max(norms)
    assert spread == pytest.approx(float(relative.std(correction=0) / relative.mean()), rel=1e-5)
    assert zero == 0
    assert bool(((cosines >= -1) & (cosines <= 1)).all())


def test_a_task_with_a_zero_gradient_has_no_cosine_and_is_counted():
    matrix = torch.randn(4, 50, generator=torch.Generator().manual_seed(1)) * 1e-30
    matrix[2] = 0.0
    row, cosines = conflict_figures(matrix[None])
    pairs, norms = reference_figures(matrix)  # the 3 pairs without task 2
    mean_cosine, min_cosine, fraction, _, _, zero, *bit_norms = row[0].tolist()
    assert zero == 1 and bit_norms[2] == 0.0
    assert cosines[0, 2].isnan().all() and cosines[0, :, 2].isnan().all()
    assert mean_cosine == pytest.approx(sum(pairs) / 3, abs=1e-6)
    assert min_cosine == pytest.approx(min(pairs), abs=1e-6)
    everything_zero, _ = conflict_figures(torch.zeros(1, 3, 10))
    assert math.isnan(everything_zero[0, 0]) and everything_zero[0, 5] == 3  # no pair, 3 zero


def test_cosines_stay_within_one_however_rounding_falls():
    # nearly parallel rows: float32 rounding puts a naive cosine a hair above 1
    base = torch.randn(1, 4096, generator=torch.Generator().manual_seed(2))
    matrix = torch.cat([base, base * 3.0, base * 1e-20, -base * 7e20])[None]
    row, cosines = conflict_figures(matrix)
    assert bool(((cosines >= -1) & (cosines <= 1)).all())
    assert -1 <= row[0, 0] <= 1 and -1 <= row[0, 1] <= 1
