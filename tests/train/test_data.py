"""The bit-mapping data module: its settings, sample orders per replica and rank, and loaders."""

import pytest
import torch

from mtfilter import BitMappingDataModule, ConfigError, fingerprint, make_targets
from mtfilter.train.data import EpochBatches, EpochShuffle, whole_dataset


def test_data_module_resolves_defaults_and_fingerprint():
    dm = BitMappingDataModule(num_bits=4, data_seed=1, seeds=[7], batch_size=8)
    assert dm.num_samples == 16
    assert dm.fingerprint == fingerprint(make_targets(4, 16, "permutation", 1))
    assert dm.seeds == [7]


def test_fingerprint_differs_between_target_kinds_and_sizes():
    prints = {
        BitMappingDataModule(num_bits=4, batch_size=8).fingerprint,
        BitMappingDataModule(num_bits=4, targets="random", batch_size=8).fingerprint,
        BitMappingDataModule(num_bits=4, num_samples=8, batch_size=8).fingerprint,
    }
    assert len(prints) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_bits": 0}, "num_bits"),
        ({"num_bits": 4, "num_samples": 17}, "num_samples=17"),
        ({"num_bits": 4, "num_samples": 0}, "num_samples"),
        ({"batch_size": 0}, "batch_size"),
        ({"data_seed": -1}, "data_seed"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"num_bits": 31}, "num_bits=31"),
        ({"num_bits": 4, "batch_size": 17}, "batch_size=17 is larger than the dataset's 16"),
        ({"targets": "related", "relatedness": 1.5}, r"relatedness must be in \[0, 1\]"),
        ({"targets": "random", "relatedness": 0.5}, "applies to data.targets=related"),
    ],
    ids=[
        "bits",
        "too-many-samples",
        "no-samples",
        "batch",
        "data-seed",
        "seeds",
        "huge",
        "batch-over-data",
        "relatedness-range",
        "relatedness-without-related",
    ],
)
def test_bad_settings_name_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BitMappingDataModule(**kwargs)


def test_a_batch_larger_than_each_devices_share_is_refused():
    data = BitMappingDataModule(num_bits=4, batch_size=8)  # 16 samples
    data.check_batch_size(world_size=2)  # 8 each: fine
    with pytest.raises(ConfigError, match="batch_size=8 is per device.*4 devices' 4"):
        data.check_batch_size(world_size=4)


def test_epoch_shuffle_is_a_fresh_permutation_each_epoch_and_reproducible():
    shuffle = EpochShuffle(100, seeds=[0, 1], device=torch.device("cpu"))
    orders = []
    for epoch in range(3):
        shuffle.set_epoch(epoch)
        order = shuffle.order()
        assert order.shape == (2, 100)
        for row in order:
            assert sorted(row.tolist()) == list(range(100))
        orders.append(order)
    assert not torch.equal(orders[0], orders[1])
    assert not torch.equal(orders[0][0], orders[0][1])  # replicas differ
    shuffle.set_epoch(1)
    assert torch.equal(shuffle.order(), orders[1])


@pytest.mark.parametrize("path", ["_randperms", "_sorted_keys"], ids=["cpu", "gpu"])
def test_a_replica_sees_the_order_of_the_separate_run_with_its_seed(path):
    stacked = EpochShuffle(50, seeds=[3, 8], device=torch.device("cpu"))
    alone = EpochShuffle(50, seeds=[8], device=torch.device("cpu"))
    for epoch in (0, 4):
        stacked.set_epoch(epoch)
        alone.set_epoch(epoch)
        a, b = getattr(stacked, path)(), getattr(alone, path)()
        assert torch.equal(a[1], b[0])
        assert not torch.equal(a[0], a[1])
        assert sorted(a[0].tolist()) == list(range(50))


def test_ranks_split_each_epoch_into_equal_disjoint_shares():
    shares = []
    for rank in range(3):
        shuffle = EpochShuffle(10, seeds=[0], device=torch.device("cpu"), rank=rank, world_size=3)
        shuffle.set_epoch(2)
        shares.append(shuffle.order()[0].tolist())
    assert all(len(share) == 4 for share in shares)  # padded by wrap-around
    assert set(sum(shares, [])) == set(range(10))


def test_each_loader_item_is_one_epoch_of_minibatches_sliced_on_the_device():
    targets = make_targets(3, 8, "permutation", 0)
    loader = EpochBatches(targets, batch_size=3, sampler=EpochShuffle(8, [0], targets.device))
    assert len(loader) == 1
    (epoch,) = list(loader)
    assert [indices.shape for indices, _ in epoch] == [(1, 3), (1, 3), (1, 2)]
    seen = []
    for indices, batch_targets in epoch:
        assert torch.equal(batch_targets, targets[indices])
        seen += indices[0].tolist()
    assert sorted(seen) == list(range(8))
    full_indices, full_targets = whole_dataset(targets)
    assert full_indices.tolist() == [list(range(8))] and torch.equal(full_targets[0], targets)
