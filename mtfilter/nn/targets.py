"""The bit-mapping task: a fixed random map from sample indices to `num_bits`-bit strings, built on
the CPU as a pure function of its arguments, and its fingerprint."""

import hashlib
from typing import Literal

import numpy as np
import torch
from torch import Tensor

TargetKind = Literal["permutation", "random", "numpy_permutation"]

# randperm over all 2**num_bits codes must stay affordable.
MAX_PERMUTATION_BITS = 30


def make_targets(num_bits: int, num_samples: int, kind: TargetKind, data_seed: int) -> Tensor:
    """(num_samples, num_bits) float32 bits: a pure function of its arguments, built on the CPU so
    it is the same on every machine and device.

    `permutation` maps the samples one-to-one onto distinct codes of a random permutation of all
    2**num_bits codes (the original experiment); `random` draws independent fair bits;
    `numpy_permutation` is `permutation` drawn as research code of the original's kind did,
    `np.random.seed(data_seed); np.random.permutation(2**num_bits)` (NumPy's legacy Mersenne
    Twister, the same on every platform), bits written most significant first.
    """
    generator = torch.Generator().manual_seed(data_seed)
    if kind == "random":
        return torch.randint(0, 2, (num_samples, num_bits), generator=generator).float()
    if kind == "numpy_permutation":
        permutation = np.random.RandomState(data_seed).permutation(2**num_bits)
        codes = torch.from_numpy(permutation[:num_samples].astype(np.int64))
    else:
        codes = torch.randperm(2**num_bits, generator=generator)[:num_samples]
    shifts = torch.arange(num_bits - 1, -1, -1)  # bit 0 is the leftmost (most significant)
    return ((codes[:, None] >> shifts) & 1).float()


def fingerprint(targets: Tensor) -> str:
    """A short hash of the dataset: equal fingerprints mean identical inputs and targets."""
    bits = targets.to(torch.uint8).contiguous()
    digest = hashlib.sha256(str(tuple(bits.shape)).encode() + bits.numpy().tobytes())
    return digest.hexdigest()[:12]
