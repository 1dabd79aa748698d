import torch

from mtfilter.nn import counter_rng


def test_mix32_matches_on_ints_and_tensors_and_is_a_bijection():
    values = torch.randint(0, 2**32, (10_000,), generator=torch.Generator().manual_seed(0))
    hashed = counter_rng.mix32(values)
    assert hashed.tolist() == [counter_rng.mix32(v) for v in values.tolist()]
    assert int(hashed.min()) >= 0 and int(hashed.max()) < 2**32
    assert len(set(hashed.tolist())) == len(set(values.tolist()))  # no collisions


def test_element_keys_are_distinct_per_replica_and_replicas_differ():
    keys = counter_rng.element_keys(counter_rng.seed_keys([0, 1, 2**40 + 7]), 4096)
    assert keys.shape == (3, 4096)
    for row in keys:
        assert len(set(row.tolist())) == 4096
    assert not torch.equal(keys[0], keys[1])


def test_uniform_is_deterministic_in_range_and_fair():
    keys = counter_rng.element_keys(counter_rng.seed_keys([3]), 100_000)
    first = counter_rng.uniform(keys, counter_rng.LOSS_DROPOUT_STREAM, 5)
    assert torch.equal(first, counter_rng.uniform(keys, counter_rng.LOSS_DROPOUT_STREAM, 5))
    assert not torch.equal(first, counter_rng.uniform(keys, counter_rng.LOSS_DROPOUT_STREAM, 6))
    assert not torch.equal(first, counter_rng.uniform(keys, counter_rng.SHUFFLE_STREAM, 5))
    assert float(first.min()) >= 0 and float(first.max()) < 1
    assert abs(float(first.mean()) - 0.5) < 0.01
    assert abs(float((first < 0.1).float().mean()) - 0.1) < 0.01


def test_a_replica_draws_what_a_single_seed_draws():
    stacked = counter_rng.element_keys(counter_rng.seed_keys([5, 9]), 64)
    alone = counter_rng.element_keys(counter_rng.seed_keys([9]), 64)
    assert torch.equal(counter_rng.draw(stacked, 1, 3)[1], counter_rng.draw(alone, 1, 3)[0])
