"""The representational floor: the pattern count against arrangements of hyperplanes counted two
other ways, its exactness labels, the layouts it applies to, and training against it."""

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import linprog

from mtfilter.nn.floor import (
    EXACT,
    LOWER_BOUND,
    model_floor,
    realisable_patterns,
    representational_floor,
    shared_output_width,
)
from tests.helpers import log_dir, read_summary, tiny_fit


def _sign_patterns_by_linear_programs(normals: np.ndarray, offsets: np.ndarray) -> int:
    """How many sign patterns of `normals @ x + offsets` some x in R^d gives: each pattern s is
    checked for a point with s_i (a_i x + b_i) >= t > 0 (maximise t, capped at 1)."""
    count = 0
    num, dim = normals.shape
    for signs in itertools.product((-1.0, 1.0), repeat=num):
        s = np.array(signs)[:, None]
        # variables (x, t): maximise t subject to t - s_i (a_i x + b_i) <= 0, t <= 1
        a_ub = np.hstack([-s * normals, np.ones((num, 1))])
        b_ub = (s[:, 0] * offsets).astype(float)
        result = linprog(
            c=[0.0] * dim + [-1.0], A_ub=a_ub, b_ub=b_ub,
            bounds=[(None, None)] * dim + [(None, 1.0)], method="highs",
        )  # fmt: skip
        count += bool(result.status == 0 and -result.fun > 1e-9)
    return count


def _regions_by_whitney(normals: np.ndarray, offsets: np.ndarray) -> int:
    """Regions of an arrangement by Zaslavsky's theorem in Whitney's form: the sum over subsets
    S of hyperplanes that meet of (-1)^(|S| - rank S), ranks computed numerically."""
    num = len(normals)
    masks = np.array(list(itertools.product((0.0, 1.0), repeat=num)))  # (2^T, T)
    linear = masks[:, :, None] * normals[None]  # (2^T, T, d): the subset's rows, others zero
    affine = np.concatenate([linear, (masks * offsets)[:, :, None]], axis=2)
    rank = np.linalg.matrix_rank(linear, tol=1e-8)
    meets = rank == np.linalg.matrix_rank(affine, tol=1e-8)
    sizes = masks.sum(1).astype(int)
    return int(np.sum(np.where(meets, (-1.0) ** (sizes - rank), 0.0)))


@pytest.mark.parametrize("num_bits", range(2, 7))
def test_the_pattern_count_is_what_linear_programs_find_in_a_generic_arrangement(num_bits):
    rng = np.random.default_rng(num_bits)
    for width in range(1, num_bits + 1):
        normals, offsets = rng.normal(size=(num_bits, width)), rng.normal(size=num_bits)
        found = _sign_patterns_by_linear_programs(normals, offsets)
        assert realisable_patterns(width, num_bits) == found, (num_bits, width)


@pytest.mark.parametrize("num_bits", range(2, 15))
def test_the_pattern_count_is_the_region_count_of_a_generic_arrangement(num_bits):
    rng = np.random.default_rng(100 + num_bits)
    for width in range(1, num_bits + 1):
        normals, offsets = rng.normal(size=(num_bits, width)), rng.normal(size=num_bits)
        assert realisable_patterns(width, num_bits) == _regions_by_whitney(normals, offsets)


def test_no_arrangement_gives_more_patterns_than_the_count():
    # parallel and concurrent hyperplanes cut fewer regions
    normals = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    offsets = np.array([0.0, 1.0, 0.0, 0.0])
    assert _sign_patterns_by_linear_programs(normals, offsets) < realisable_patterns(2, 4)


# capacity.md's table at T = 10: R(d) for d = 1..10
REALISABLE_AT_10_BITS = [11, 56, 176, 386, 638, 848, 968, 1013, 1023, 1024]


@pytest.mark.parametrize("width", range(1, 12))
def test_the_permutation_maps_floor_is_exact_in_strings_and_at_least_a_bit_per_wrong_string(width):
    floor = representational_floor(width, 10, [1] * 1024)
    realised = REALISABLE_AT_10_BITS[min(width, 10) - 1]
    missing = 1024 - realised
    assert floor.realisable == realised and floor.needed == 1024
    assert floor.exact_match_error == missing / 1024
    assert floor.exact_match_error_kind == EXACT
    assert floor.bit_error >= missing / 10240
    # exact where no string or one string is missing (its neighbours are all realised)
    assert (floor.bit_error_kind == EXACT) == (missing <= 1)
    if missing <= 1:
        assert floor.bit_error == missing / 10240


def test_few_realisable_strings_cost_more_than_a_bit_each():
    # width 1: 11 strings, at most 11 * 11 within one bit of them: most strings are 2+ bits off
    floor = representational_floor(1, 10, [1] * 1024)
    assert floor.bit_error == pytest.approx((1013 + (1024 - 121) + (1024 - 11 * 56)) / 10240)
    assert floor.bit_error > 1013 / 10240


def test_targets_that_do_not_need_every_string_get_a_bound_labelled_as_one():
    # 256 distinct strings of 10 bits (a permutation onto part of the codes): R(2) = 56 < 256
    part = representational_floor(2, 10, [1] * 256)
    assert part.exact_match_error == (256 - 56) / 256
    assert part.exact_match_error_kind == LOWER_BOUND and part.bit_error_kind == LOWER_BOUND
    # repeated strings: the most frequent ones are the ones kept
    repeated = representational_floor(1, 3, [5, 3, 1, 1, 1, 1, 1, 1])
    assert realisable_patterns(1, 3) == 4
    assert repeated.exact_match_error == pytest.approx(4 / 14)
    assert "lower bound" in (repeated.exact_match_error_kind, repeated.bit_error_kind)
    assert ">=" in repeated.describe()
    # enough width: nothing is wrong, exactly
    wide = representational_floor(10, 10, [2] * 300)
    assert (wide.bit_error, wide.exact_match_error, wide.exact_match_error_kind) == (0, 0, EXACT)
    # fewer strings than R(d) below d = T: 0 is only a bound (not every set is realisable)
    few = representational_floor(4, 10, [1] * 256)
    assert realisable_patterns(4, 10) == 386 and few.exact_match_error == 0
    assert few.exact_match_error_kind == LOWER_BOUND and few.bit_error_kind == LOWER_BOUND


@pytest.mark.parametrize(
    ("layout", "extra", "width"),
    [
        ("mt", {}, 8),
        ("mt", {"task_filter": True}, None),  # each bit reads its own filtered copy
        ("st", {}, None),
        ("split", {"num_shared_layers": 2}, 8),  # every hidden layer shared: mt
        ("split", {"num_shared_layers": 1}, None),  # per-bit heads
        ("mt", {"num_layers": 1, "hidden_dim": None}, 16),  # no hidden layer: the input encoding
    ],
    ids=["mt", "mt-task-filter", "st", "split-all-shared", "split-per-bit", "mt-no-hidden"],
)
def test_the_limiting_width_follows_the_layout(layout, extra, width):
    settings = {"num_layers": 3, "in_dim": 16, "hidden_dim": 8, **extra}
    assert shared_output_width(layout, **settings) == width
    floor = model_floor({"layout": layout, "num_bits": 10, **settings}, [1] * 1024)
    assert (floor.bit_error == 0) == (width is None or width >= 10)


def test_fixed_binary_inputs_make_even_the_string_count_a_bound():
    settings = {"layout": "mt", "num_bits": 10, "num_layers": 1, "in_dim": 10, "hidden_dim": None}
    free = model_floor({**settings, "encoding": "embedding", "in_dim": 6}, [1] * 1024)
    fixed = model_floor({**settings, "encoding": "binary", "in_dim": 6}, [1] * 1024)
    assert free.exact_match_error_kind == EXACT and fixed.exact_match_error_kind == LOWER_BOUND
    assert free.exact_match_error == fixed.exact_match_error > 0


BCE = ["--model.loss", "bce", "--model.optimizer.init_args.lr", "0.03",
       "--trainer.max_epochs", "1000", "--data.seeds", "[0, 1]"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("hidden", [2, 4])
def test_training_never_beats_the_floor_and_reaches_it_where_it_is_zero(run_dir, hidden, capsys):
    # 4 bits: hidden 2 realises 11 of the 16 strings (5 wrong at best), hidden 4 all of them
    folder = log_dir(tiny_fit(*BCE, "--model.hidden_dim", str(hidden)))
    for seed in (0, 1):
        summary = read_summary(folder / f"seed_{seed}")
        floor = summary["floor"]
        assert floor["realisable"] == (11 if hidden == 2 else 16)
        assert summary["val"]["exact_match_error_best"] >= floor["exact_match_error"] - 1e-9
        assert summary["val"]["bit_error_best"] >= floor["bit_error"] - 1e-9
        if hidden == 4:
            assert floor["bit_error"] == 0 and summary["val"]["bit_error_best"] == 0
    assert "floor: bit error" in capsys.readouterr().out


def test_the_errors_are_recorded_at_the_best_loss_and_as_their_own_minimum(run_dir):
    folder = log_dir(tiny_fit("--trainer.max_epochs", "30"))
    val = read_summary(folder)["val"]
    assert 0 <= val["bit_error_best"] <= val["bit_error_at_best"] <= 1
    assert val["exact_match_error_best"] <= val["exact_match_error_at_best"]
    assert val["bit_error_final"] == pytest.approx(1 - val["acc_final"], abs=1e-6)
    assert val["exact_match_error_final"] == pytest.approx(1 - val["exact_match_final"], abs=1e-6)
    assert math.isclose(sum(val["bit_error_final_per_bit"]) / 4, val["bit_error_final"],
                        rel_tol=1e-6)  # fmt: skip
