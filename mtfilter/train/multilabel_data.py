"""The LightningDataModule for real multi-label data: (N, F) features and (N, T) labels (each
label a task), split per seed into train / validation / test, standardised on the training split,
batched on the training device as `BitMappingDataModule` batches its bit strings."""

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from mtfilter.errors import ConfigError
from mtfilter.nn import counter_rng
from mtfilter.nn.replicas import check_seeds
from mtfilter.train import label_sources
from mtfilter.train.data import EpochShuffle, OneBatch, check_batch_size
from mtfilter.train.label_sources import LabelledData

SPLITS = ("train", "val", "test")
Batch = tuple[Tensor, Tensor]  # features (S, B, F) and labels (S, B, T), one row per seed


class MultiLabelDataModule(L.LightningDataModule):
    """Any multi-label dataset, each label a task: from a file, MULAN's yeast, or arrays in code
    (`from_arrays`). Train `BitMappingModule` on it with `encoding: linear`; the CLI links
    the sizes (`num_bits` = labels, `in_dim` = features).

    Every seed draws its own split (a new split and initialisation per seed), unless
    `split_seed` fixes one for all; stacked seeds each train and are evaluated on their own.
    Fit evaluates the validation split every epoch (what selection and convergence read); the
    test split is evaluated once, with the best epoch's weights, when fit ends.

    The split is not stratified: multi-label sets hold many label strings that occur once or
    twice (yeast: ~200 of them), too few to share out.

    Args:
        dataset: `yeast` (2,417 samples, 103 features, 14 labels, shipped by the `river`
            package: `pip install 'mtfilter[data]'`), or a `.csv` / `.csv.gz` file with a
            header row (name the labels in `label_columns`; every other column is a feature),
            or a `.npz` / `.pt` file holding `inputs` (N, F) and `labels` (N, T) arrays.
        label_columns: CSV: the label columns, by name (yeast: `Class1` .. `Class14`).
        val_fraction: Share of the samples in the validation split.
        test_fraction: Share of the samples in the test split (0: none).
        split_seed: One split, drawn from this seed, for every run seed; None: each run seed
            draws its own split.
        standardize: Scale every feature to mean 0 and variance 1 with the training split's
            statistics (per split, so no validation or test sample informs them).
        drop_constant_labels: Drop a label column that is constant on a training split (it
            teaches nothing); without it such a column is refused.
        batch_size: Samples per training step; None: the whole training split.
        seeds: Seeds of the run's stacked replicas, one each (see `BitMappingDataModule`).
    """

    label_figures = True  # F1 figures beside the bit error (linked into the model)

    def __init__(
        self,
        dataset: str = "yeast",
        label_columns: list[str] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_seed: int | None = None,
        standardize: bool = True,
        drop_constant_labels: bool = False,
        batch_size: int | None = None,
        seeds: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["seeds"])
        _check_fractions(val_fraction, test_fraction)
        seeds = [torch.initial_seed()] if seeds is None else list(seeds)
        check_seeds(seeds, "data.seeds")
        if split_seed is not None and split_seed < 0:
            raise ConfigError(f"data.split_seed must be non-negative, got {split_seed}")
        self.seeds = seeds
        self._data = label_sources.read(dataset, label_columns) if dataset else None
        if self._data is not None:
            self._prepare(self._data)

    @classmethod
    def from_arrays(
        cls,
        inputs: Any,
        labels: Any,
        label_names: list[str] | None = None,
        **settings: Any,
    ) -> "MultiLabelDataModule":
        """The data module of (N, F) `inputs` and (N, T) 0/1 `labels` (tensors, NumPy arrays
        or lists), with the settings of the constructor."""
        module = cls(dataset="", **settings)
        module._data = label_sources.from_arrays(inputs, labels, label_names)
        module.hparams.dataset = "arrays"
        module._prepare(module._data)
        return module

    def _prepare(self, data: LabelledData) -> None:
        """Split per seed, check the labels, standardise, all before any training."""
        h = self.hparams
        total = data.inputs.shape[0]
        sizes = _split_sizes(total, h.val_fraction, h.test_fraction, data.name)
        split_seeds = self.seeds if h.split_seed is None else [h.split_seed] * len(self.seeds)
        orders = torch.stack([_permutation(total, seed) for seed in split_seeds])  # (S, N)
        bounds = [0, sizes[0], sizes[0] + sizes[1], total]
        self.split_indices = {  # (S, n) sample numbers of each split
            name: orders[:, a:b] for name, a, b in zip(SPLITS, bounds, bounds[1:], strict=False)
        }
        labels = self._check_labels(data, self.split_indices["train"], split_seeds)
        inputs = data.inputs[self.split_indices["train"]]  # (S, n, F)
        if h.standardize:
            mean = inputs.mean(1, keepdim=True)
            std = inputs.std(1, correction=0, keepdim=True)
            scale = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature: 0
        self._splits: dict[str, Batch] = {}
        for name, rows in self.split_indices.items():
            x = data.inputs[rows]  # (S, n, F)
            if h.standardize:
                x = (x - mean) / scale
            # feature-major in memory, as the layers read them: (S, F, n) and (S, T, n)
            self._splits[name] = (x.mT.contiguous(), labels[rows].mT.contiguous())
        self.num_bits = labels.shape[1]
        self.num_samples = sizes[0]
        self.num_features = data.inputs.shape[1]
        self.batch_size = sizes[0] if h.batch_size is None else h.batch_size
        if not 1 <= self.batch_size <= sizes[0]:
            raise ConfigError(
                f"data.batch_size={h.batch_size} does not fit the training split of "
                f"{sizes[0]} samples: at least 1, at most {sizes[0]} (null: all of them)"
            )
        self.fingerprint = self._fingerprint(data, labels)
        self._device_splits: dict[str, Batch] = {}

    def _check_labels(self, data: LabelledData, train: Tensor, split_seeds: list[int]) -> Tensor:
        """Refuse (or drop) label columns constant on some seed's training split."""
        on_train = data.labels[train]  # (S, n, T)
        constant = (on_train.amin(1) == on_train.amax(1)).any(0)  # (T,)
        self.label_names = list(data.label_names)
        if not bool(constant.any()):
            return data.labels
        columns = constant.nonzero()[:, 0].tolist()
        names = [data.label_names[c] for c in columns]
        if not self.hparams.drop_constant_labels:
            seed_row = int((on_train[:, :, columns[0]].amin(1) == on_train[:, :, columns[0]].amax(1)
                            ).nonzero()[0])  # fmt: skip
            value = int(on_train[seed_row, 0, columns[0]])
            raise ConfigError(
                f"{data.name}: label {names[0]!r} is {value} on every sample of the training "
                f"split of seed {split_seeds[seed_row]}"
                + (
                    f" (and {len(names) - 1} more label(s): {', '.join(names[1:])})"
                    if len(names) > 1
                    else ""
                )  # fmt: skip
                + ": drop such labels with data.drop_constant_labels=true"
            )
        if len(columns) == len(data.label_names):
            raise ConfigError(f"{data.name}: every label is constant on a training split")
        rank_zero_info(f"data: dropped {len(names)} label(s) constant on a training split: "
                       f"{', '.join(names)}")  # fmt: skip
        keep = (~constant).nonzero()[:, 0]
        self.label_names = [data.label_names[c] for c in keep.tolist()]
        return data.labels[:, keep]

    def _fingerprint(self, data: LabelledData, labels: Tensor) -> str:
        """Equal fingerprints mean the same samples, labels and preparation (split settings,
        standardisation); the split of each seed follows from its seed."""
        h = self.hparams
        settings = [h.val_fraction, h.test_fraction, h.split_seed, h.standardize, self.label_names]
        digest = hashlib.sha256(json.dumps(settings).encode())
        for tensor in (data.inputs, labels):
            digest.update(str(tuple(tensor.shape)).encode() + tensor.numpy().tobytes())
        return digest.hexdigest()[:12]

    # -- what the module and Lightning read ---------------------------------------------------

    def model_settings(self) -> dict[str, Any]:
        """What `BitMappingModule` takes from this data (what the CLI links): its sizes,
        fingerprint and seeds, the features' encoding and the F1 figures."""
        return {
            "num_bits": self.num_bits,
            "num_samples": self.num_samples,
            "data_fingerprint": self.fingerprint,
            "seeds": self.seeds,
            "in_dim": self.num_features,
            "encoding": "linear",
            "label_figures": self.label_figures,
        }

    def split(self, name: str) -> Batch:
        """A whole split on the training device: (S, n, F) features and (S, n, T) labels, one
        row per seed (feature-major in memory)."""
        device = (
            self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        )
        cached = self._device_splits.get(name)
        if cached is None or cached[0].device != device:
            inputs, labels = self._splits[name]
            cached = self._device_splits[name] = (inputs.to(device).mT, labels.to(device).mT)
        return cached

    def full_batch(self) -> Batch:
        """The split fit evaluates every epoch: validation."""
        return self.split("val")

    def training_labels(self) -> list[Tensor]:
        """Each seed's (n, T) training labels (the representational floor counts their
        distinct strings)."""
        return list(self._splits["train"][1].mT)

    def check_batch_size(self, world_size: int, chunks: int = 1) -> None:
        check_batch_size(self.batch_size, self.num_samples, world_size, chunks)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        return batch  # built on the training device already

    def train_dataloader(self) -> "SplitEpochs":
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        self.check_batch_size(world_size)
        inputs, labels = self.split("train")
        sampler = EpochShuffle(self.num_samples, self.seeds, inputs.device, rank, world_size)
        return SplitEpochs(inputs.mT, labels.mT, self.batch_size, sampler)

    def val_dataloader(self) -> OneBatch:
        return OneBatch(self.split("val"))

    def test_dataloader(self) -> OneBatch:
        if self.split_indices["test"].shape[1] == 0:
            raise ConfigError("data.test_fraction is 0: there is no test split to evaluate")
        return OneBatch(self.split("test"))

    def predict_dataloader(self) -> OneBatch:
        return OneBatch(self.split("test" if self.split_indices["test"].shape[1] else "val"))


class SplitEpochs:
    """The training loader: one item per epoch, its minibatches gathered per seed from the
    training split (see `EpochBatches`, the same for the bit-mapping task)."""

    def __init__(self, inputs: Tensor, labels: Tensor, batch_size: int, sampler: EpochShuffle):
        self.inputs, self.labels = inputs, labels  # (S, F, n), (S, T, n)
        self.batch_size = batch_size
        self.sampler = sampler  # Lightning calls `sampler.set_epoch`
        self.batch_sampler = None

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[list[Batch]]:
        order = self.sampler.order()  # (S, n / world_size)
        features, tasks = self.inputs.shape[1], self.labels.shape[1]
        batches = []
        for start in range(0, order.shape[1], self.batch_size):
            rows = order[:, None, start : start + self.batch_size]  # (S, 1, B)
            x = self.inputs.gather(2, rows.expand(-1, features, -1))  # (S, F, B)
            y = self.labels.gather(2, rows.expand(-1, tasks, -1))  # (S, T, B)
            batches.append((x.mT, y.mT))  # (S, B, F), (S, B, T), feature-major in memory
        yield batches


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0 < val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"data.val_fraction {val_fraction} + data.test_fraction {test_fraction} leave no "
            "training split: their sum must be below 1"
        )


def _split_sizes(total: int, val_fraction: float, test_fraction: float, name: str) -> list[int]:
    val, test = round(total * val_fraction), round(total * test_fraction)
    train = total - val - test
    if train < 1 or val < 1:
        raise ConfigError(
            f"{name}: {total} samples split {train} / {val} / {test} (train / validation / "
            "test): each of train and validation needs at least one"
        )
    return [train, val, test]


def _permutation(total: int, seed: int) -> Tensor:
    key = int(counter_rng.seed_keys([seed])[0])
    key ^= counter_rng.counter_key(counter_rng.SPLIT_STREAM, 0)
    return torch.randperm(total, generator=torch.Generator().manual_seed(key))
