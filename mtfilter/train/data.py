"""The LightningDataModule that serves the bit-mapping task (`mtfilter.nn.targets`) from tensors
already on the training device: per-replica epoch orders, minibatches, the full batch."""

import math
import os
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor

from mtfilter.errors import ConfigError
from mtfilter.nn import counter_rng
from mtfilter.nn.replicas import check_seeds
from mtfilter.nn.targets import MAX_PERMUTATION_BITS, TargetKind, fingerprint, make_targets

Batch = tuple[Tensor, Tensor]  # indices (R, B) int64, targets (R, B, T) float32; R may be 1
Epoch = list[Batch]  # one training epoch's minibatches


class EpochShuffle:
    """Per-replica sample orders for each epoch, drawn on the device from (seed, epoch) alone.

    Lightning calls `set_epoch` before each epoch (as for a DistributedSampler), so a resumed run
    sees the same orders as an uninterrupted one, and replica r of a stacked run the orders of
    the separate run with its seed. Under DDP each rank takes every `world_size`-th sample of the
    order, padded by wrap-around to equal shares.

    On a GPU all replicas' orders come from one batched sort of hashed keys. On a CPU that sort
    is the slow part (~265 us for 8 x 1024 keys against ~8 us per `torch.randperm`), so there
    each replica gets `randperm` from a generator seeded by (seed, epoch): a loop over replicas,
    measured faster. The two paths give different (equally valid) orders.
    """

    def __init__(
        self,
        num_samples: int,
        seeds: list[int],
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.rank, self.world_size = rank, world_size
        self.num_local = math.ceil(num_samples / world_size)
        seed_keys = counter_rng.seed_keys(seeds)
        self._seed_keys = seed_keys.tolist()
        self._keys = counter_rng.element_keys(seed_keys, num_samples).to(device)
        self._generator = torch.Generator(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> Tensor:
        """(R, num_local) sample indices of this rank for the current epoch."""
        order = self._sorted_keys() if self._keys.is_cuda else self._randperms()
        total = self.num_local * self.world_size
        if total > self.num_samples:
            order = torch.cat([order, order[:, : total - self.num_samples]], dim=1)
        return order[:, self.rank :: self.world_size]

    def _sorted_keys(self) -> Tensor:
        keys = counter_rng.draw(self._keys, counter_rng.SHUFFLE_STREAM, self.epoch)
        return keys.argsort(dim=1)

    def _randperms(self) -> Tensor:
        epoch_key = counter_rng.counter_key(counter_rng.SHUFFLE_STREAM, self.epoch)
        orders = [
            torch.randperm(self.num_samples, generator=self._generator.manual_seed(key ^ epoch_key))
            for key in self._seed_keys
        ]
        return torch.stack(orders).to(self._keys.device)


class EpochBatches:
    """The training loader: one item per epoch, the epoch's minibatches, sliced from device
    tensors (no per-sample `__getitem__`, workers or host copies).

    A whole epoch per item keeps Lightning's per-batch machinery (fetching, hooks, progress
    bookkeeping: ~0.4 ms a batch on a 2-core CPU) out of the inner loop; the module steps
    through the minibatches itself.
    """

    def __init__(self, targets: Tensor, batch_size: int, sampler: EpochShuffle) -> None:
        self.targets = targets  # (N, T) on the training device
        # (T, N): batches are gathered feature-major, the batch axis innermost as in the
        # model's logits, so that the loss runs over contiguous rows (`per_bit_loss`)
        self._targets_by_bit = targets.T.contiguous()
        self.batch_size = batch_size
        # DataLoader's attribute names, which Lightning inspects: it calls `sampler.set_epoch`.
        self.sampler = sampler
        self.batch_sampler = None

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[list[Batch]]:
        order = self.sampler.order()  # (R, N / world_size)
        replicas, (tasks, _) = order.shape[0], self._targets_by_bit.shape
        table = self._targets_by_bit.expand(replicas, -1, -1)  # (R, T, N), no copy
        batches = []
        for start in range(0, order.shape[1], self.batch_size):
            indices = order[:, start : start + self.batch_size]  # (R, B)
            picked = table.gather(2, indices[:, None, :].expand(-1, tasks, -1))  # (R, T, B)
            batches.append((indices, picked.mT))  # (R, B, T), feature-major in memory
        yield batches


class OneBatch:
    """An evaluation loader of a single batch (the whole dataset, or a whole split)."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.sampler = self.batch_sampler = None  # inspected by Lightning

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[Batch]:
        yield self.batch


def whole_dataset(targets: Tensor) -> Batch:
    """The whole dataset as one batch, in index order: (1, N) indices, (1, N, T) targets
    (feature-major in memory, as the training batches are: `EpochBatches`)."""
    indices = torch.arange(len(targets), device=targets.device)[None]
    return indices, targets.T.contiguous()[None].mT


class BitMappingDataModule(L.LightningDataModule):
    """Inputs are the sample indices `0 .. num_samples-1`; targets are fixed random bit strings.

    Args:
        num_bits: Bits per target string; every bit is a task.
        num_samples: Number of inputs (default: all `2**num_bits` codes).
        targets: `permutation`, a random one-to-one map onto distinct codes (the original
            experiment), `numpy_permutation`, the same drawn with NumPy as the original's kind
            of code did (see `make_targets`), `random`, independent fair bits, or `related`,
            bits that share structure (see `relatedness`).
        relatedness: `related` only: the share of entries that are thresholds of one shared
            low-dimensional projection of each sample, in [0, 1]; the rest are independent
            fair bits. 0 is exactly `random`; towards 1 the tasks share ever more.
        data_seed: Seed of the dataset alone, separate from the run's seed, so every run, layout
            and device learns exactly the same function.
        batch_size: Samples per training step (per device under DDP).
        seeds: Seeds of the run's stacked replicas, one each: replica r sees the sample order of
            a separate run with seed `seeds[r]`. Default: the seed set by `seed_everything`.
    """

    def __init__(
        self,
        num_bits: int = 10,
        num_samples: int | None = None,
        targets: TargetKind = "permutation",
        relatedness: float = 0.0,
        data_seed: int = 0,
        batch_size: int = 512,
        seeds: list[int] | None = None,
    ) -> None:
        super().__init__()
        if num_bits < 1:
            raise ConfigError(f"data.num_bits must be at least 1, got {num_bits}")
        independent = targets in ("random", "related")
        if targets != "related" and relatedness != 0:
            raise ConfigError(
                f"data.relatedness={relatedness} applies to data.targets=related, not {targets}"
            )
        if not 0 <= relatedness <= 1:
            raise ConfigError(f"data.relatedness must be in [0, 1], got {relatedness}")
        if not independent and num_bits > MAX_PERMUTATION_BITS:
            raise ConfigError(
                f"data.num_bits={num_bits} is too many for permutation targets (at most "
                f"{MAX_PERMUTATION_BITS}); use data.targets=random"
            )
        given = num_samples is not None
        if num_samples is None:
            num_samples = 2**num_bits
        if num_samples < 1:
            raise ConfigError(f"data.num_samples must be at least 1, got {num_samples}")
        _check_fits_in_memory(num_samples, num_bits, given)
        if not independent and num_samples > 2**num_bits:
            raise ConfigError(
                f"data.num_samples={num_samples} exceeds the {2**num_bits} distinct "
                f"{num_bits}-bit strings a permutation can map onto"
            )
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, got {batch_size}")
        if batch_size > num_samples:
            raise ConfigError(
                f"data.batch_size={batch_size} is larger than the dataset's {num_samples} "
                f"samples: at most {num_samples} (every epoch is one pass over the samples)"
            )
        if data_seed < 0:
            raise ConfigError(f"data.data_seed must be non-negative, got {data_seed}")
        if targets == "numpy_permutation" and data_seed >= 2**32:
            raise ConfigError(f"data.data_seed must be below 2**32 for NumPy, got {data_seed}")
        seeds = [torch.initial_seed()] if seeds is None else list(seeds)
        check_seeds(seeds, "data.seeds")
        # The resolved num_samples and seeds reach the model's hyperparameters (linked by the CLI);
        # recording them here too would clash with the CLI's record of the unresolved values.
        self.save_hyperparameters(ignore=["num_samples", "seeds"])
        self.num_bits = num_bits
        self.num_samples = num_samples
        self.batch_size = batch_size
        # Built eagerly: tiny, and the fingerprint must be known before the model is built.
        self.targets = make_targets(num_bits, num_samples, targets, data_seed, relatedness)
        self.fingerprint = fingerprint(self.targets)
        self.seeds = seeds
        self._device_targets: Tensor | None = None
        self._full_batch: Batch | None = None

    def _on_device(self) -> Tensor:
        device = (
            self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        )
        if self._device_targets is None or self._device_targets.device != device:
            self._device_targets = self.targets.to(device)
        return self._device_targets

    def full_batch(self) -> Batch:
        """The whole dataset as one batch on the training device: (1, N) indices and
        (1, N, T) targets."""
        targets = self._on_device()
        if self._full_batch is None or self._full_batch[1].device != targets.device:
            self._full_batch = whole_dataset(targets)
        return self._full_batch

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        # Every batch is built on the training device already; nothing to move or inspect.
        return batch

    def check_batch_size(self, world_size: int, chunks: int = 1) -> None:
        """Refuse a batch larger than one device's share of the samples (DDP splits them), or
        one that does not split into `chunks` equal parts (chunked BatchNorm)."""
        check_batch_size(self.batch_size, self.num_samples, world_size, chunks)

    def train_dataloader(self) -> EpochBatches:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        self.check_batch_size(world_size)
        targets = self._on_device()
        sampler = EpochShuffle(self.num_samples, self.seeds, targets.device, rank, world_size)
        return EpochBatches(targets, self.batch_size, sampler)

    def val_dataloader(self) -> OneBatch:
        return OneBatch(self.full_batch())

    def test_dataloader(self) -> OneBatch:
        # The task is to memorise the map: the test set is the whole dataset.
        return OneBatch(self.full_batch())

    def predict_dataloader(self) -> OneBatch:
        return OneBatch(self.full_batch())


def check_batch_size(batch_size: int, num_samples: int, world_size: int, chunks: int) -> None:
    """Refuse a per-device batch larger than each of `world_size` devices' share of
    `num_samples`, or batches that do not split into `chunks` equal parts."""
    share = math.ceil(num_samples / world_size)
    if world_size > 1 and batch_size > share:
        raise ConfigError(
            f"data.batch_size={batch_size} is per device, larger than each of the "
            f"{world_size} devices' {share} of the {num_samples} samples: at most {share}"
        )
    sizes = {batch_size} | ({share % batch_size} - {0})  # and the last, shorter one
    if any(size % chunks for size in sizes):
        raise ConfigError(
            f"model.batch_norm_chunks={chunks} needs every training batch to split into "
            f"{chunks} equal chunks; the batches here have {sorted(sizes)} samples"
        )


def _check_fits_in_memory(num_samples: int, num_bits: int, given: bool) -> None:
    """Refuse targets that could not be held in this machine's memory, before allocating them
    (float32: 4 bytes a bit; the model's input table and its optimizer state need more)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: left to the allocator
        return
    need = 4 * num_samples * num_bits
    if need <= memory:
        return
    which = (
        f"data.num_samples={num_samples}"
        if given
        else (f"data.num_samples (by default 2**data.num_bits = {num_samples})")
    )
    raise ConfigError(
        f"{which} needs {need / 2**30:,.0f} GiB for its {num_bits}-bit targets alone, more "
        f"than this machine's {memory / 2**30:.0f} GiB of memory: set data.num_samples (the "
        f"targets alone allow at most {memory // (4 * num_bits):,}; the model needs more)"
    )
