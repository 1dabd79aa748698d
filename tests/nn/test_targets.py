"""The bit-mapping targets: a pure function of their arguments, and their fingerprint."""

import math

import torch

from mtfilter import fingerprint, make_targets


def test_targets_are_a_pure_function_of_their_arguments():
    a = make_targets(6, 64, "permutation", data_seed=3)
    assert torch.equal(a, make_targets(6, 64, "permutation", data_seed=3))
    assert not torch.equal(a, make_targets(6, 64, "permutation", data_seed=4))
    assert fingerprint(a) == fingerprint(a.clone())
    assert fingerprint(a) != fingerprint(make_targets(6, 64, "permutation", data_seed=4))


def test_permutation_maps_onto_distinct_bit_strings():
    targets = make_targets(5, 32, "permutation", data_seed=0)
    assert targets.shape == (32, 5)
    assert set(targets.unique().tolist()) == {0.0, 1.0}
    codes = {tuple(row) for row in targets.int().tolist()}
    assert len(codes) == 32  # all 2**5 strings, each once


def test_random_targets_are_fair_independent_bits():
    """Each bit fair, no two bits correlated, and as many distinct strings as independent
    draws give (a permutation would give every string once). Bounds: 4 standard deviations."""
    bits, samples = 12, 4096
    targets = make_targets(bits, samples, "random", data_seed=0)
    assert (targets.mean(0) - 0.5).abs().max() < 4 * (0.25 / samples) ** 0.5  # fair
    correlations = torch.corrcoef(targets.T)[~torch.eye(bits, dtype=torch.bool)]
    assert correlations.abs().max() < 4 / samples**0.5  # pairwise independent
    distinct = len({tuple(row) for row in targets.int().tolist()})
    # occupancy of 4096 strings by 4096 draws: mean 4096 (1 - 1/e) ~ 2589, sd ~ 20
    assert abs(distinct - samples * (1 - math.exp(-1))) < 4 * 20


def test_related_targets_go_from_the_random_map_to_shared_structure():
    """At relatedness 0 exactly `random`'s bits; at 1 every bit a threshold of one latent
    plane (2 T sectors at most); between, the tasks grow correlated with the share."""
    bits, samples = 10, 2048
    random = make_targets(bits, samples, "random", data_seed=3)
    assert torch.equal(make_targets(bits, samples, "related", 3, relatedness=0.0), random)
    shared = make_targets(bits, samples, "related", 3, relatedness=1.0)
    assert len(shared.unique(dim=0)) <= 2 * bits
    correlation = []
    for share in (0.0, 0.5, 1.0):
        targets = make_targets(bits, samples, "related", 3, relatedness=share)
        assert (targets.mean(0) - 0.5).abs().max() < 0.1  # still about fair
        off = torch.corrcoef(targets.T)[~torch.eye(bits, dtype=torch.bool)]
        correlation.append(float(off.abs().mean()))
    assert correlation[0] < 0.05 < correlation[1] < correlation[2]
    assert torch.equal(shared, make_targets(bits, samples, "related", 3, relatedness=1.0))
