"""The bit-mapping task: a fixed random map from sample indices to `num_bits`-bit strings, built on
the CPU as a pure function of its arguments, and its fingerprint."""

import hashlib
from typing import Literal

import numpy as np
import torch
from torch import Tensor

TargetKind = Literal["permutation", "random", "numpy_permutation", "related"]

# randperm over all 2**num_bits codes must stay affordable.
MAX_PERMUTATION_BITS = 30
# `related` targets: the dimension of the latent features every structured bit thresholds
RELATED_LATENT_DIM = 2


def make_targets(
    num_bits: int, num_samples: int, kind: TargetKind, data_seed: int, relatedness: float = 0.0
) -> Tensor:
    """(num_samples, num_bits) float32 bits: a pure function of its arguments, built on the CPU so
    it is the same on every machine and device.

    `permutation` maps the samples one-to-one onto distinct codes of a random permutation of all
    2**num_bits codes (the original experiment); `random` draws independent fair bits;
    `numpy_permutation` is `permutation` drawn as research code of the original's kind did,
    `np.random.seed(data_seed); np.random.permutation(2**num_bits)` (NumPy's legacy Mersenne
    Twister, the same on every platform), bits written most significant first.

    `related` makes the bits related tasks: each sample has a latent Gaussian point in
    `RELATED_LATENT_DIM` dimensions, each bit a random direction there, and a structured bit is
    1 where the point lies on that direction's positive side (every bit a threshold of one
    shared low-dimensional projection). Each (sample, bit) entry is structured with
    probability `relatedness`, else an independent fair bit; at 0 the targets are exactly
    `random`'s, at 1 every bit is structured (at most 2 T distinct strings: T lines through
    the origin cut the plane into 2 T sectors).
    """
    generator = torch.Generator().manual_seed(data_seed)
    if kind in ("random", "related"):
        bits = torch.randint(0, 2, (num_samples, num_bits), generator=generator).float()
        return bits if kind == "random" else _relate(bits, relatedness, data_seed)
    if kind == "numpy_permutation":
        permutation = np.random.RandomState(data_seed).permutation(2**num_bits)
        codes = torch.from_numpy(permutation[:num_samples].astype(np.int64))
    else:
        codes = torch.randperm(2**num_bits, generator=generator)[:num_samples]
    shifts = torch.arange(num_bits - 1, -1, -1)  # bit 0 is the leftmost (most significant)
    return ((codes[:, None] >> shifts) & 1).float()


def _relate(independent: Tensor, relatedness: float, data_seed: int) -> Tensor:
    """`independent` (N, T) fair bits with a share `relatedness` of the entries replaced by
    thresholds of a shared latent projection (drawn from its own generator, so that the fair
    bits are `random`'s whatever the share)."""
    samples, bits = independent.shape
    generator = torch.Generator().manual_seed(data_seed ^ 0x5E1A7ED)
    latent = torch.randn(samples, RELATED_LATENT_DIM, generator=generator)
    directions = torch.randn(RELATED_LATENT_DIM, bits, generator=generator)
    structured = (latent @ directions > 0).float()
    keep = torch.rand(samples, bits, generator=generator) < relatedness
    return torch.where(keep, structured, independent)


def fingerprint(targets: Tensor) -> str:
    """A short hash of the dataset: equal fingerprints mean identical inputs and targets."""
    bits = targets.to(torch.uint8).contiguous()
    digest = hashlib.sha256(str(tuple(bits.shape)).encode() + bits.numpy().tobytes())
    return digest.hexdigest()[:12]
