"""Counter-based random numbers: pure functions of (seed, stream, counter), batched over replicas.

torch's generators are stateful, per device and per process, and cannot draw for many independent
seeds in one op. Hashing (seed, counter) instead gives each stacked replica its own stream in one
tensor op, identical on CPU and GPU and after a resume, so replica r of a stacked run reproduces the
separate run with seed r exactly (data order and loss dropout included).
"""

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF  # uint32 arithmetic on Python ints

# Stream ids: each use of randomness hashes with its own constant so the streams are independent.
SHUFFLE_STREAM = 0x5EED0001
LOSS_DROPOUT_STREAM = 0x5EED0002
SPLIT_STREAM = 0x5EED0003  # a seed's train / validation / test split of a real dataset


def mix32(x):
    """A bijective 32-bit hash (C. Wellons' hash-prospector, constants 0x21f0aaad, 0x735a2d97).

    Works on Python ints and int64 tensors alike. Both multipliers are below 2**31, so for
    x < 2**32 every product stays inside int64: no signed overflow, same result on every device.
    """
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & MASK32
    return x ^ (x >> 15)


def seed_keys(seeds: list[int]) -> Tensor:
    """(R,) int64 32-bit keys, one per seed (seeds may be any non-negative 64-bit integer)."""
    return torch.tensor([mix32((s & MASK32) ^ mix32(s >> 32 & MASK32)) for s in seeds])


def counter_key(stream: int, counter: int) -> int:
    """A 32-bit key for step or epoch `counter` of `stream` (a Python int: no device work)."""
    return mix32(mix32(stream & MASK32) ^ (counter & MASK32) ^ mix32(counter >> 32 & MASK32))


def element_keys(keys: Tensor, n: int) -> Tensor:
    """(R, n) distinct 32-bit keys per replica: element i of replica r is mix(key_r ^ mix(i))."""
    return mix32(keys[:, None] ^ mix32(torch.arange(n, device=keys.device)))


def draw(element_keys: Tensor, stream: int, counter: int) -> Tensor:
    """Fresh (R, n) 32-bit random integers for `counter` of `stream`, as int64."""
    return mix32(element_keys ^ counter_key(stream, counter))


def uniform(element_keys: Tensor, stream: int, counter: int) -> Tensor:
    """(R, n) float32 in [0, 1) for `counter` of `stream`: the top 24 bits, exact in float32."""
    return (draw(element_keys, stream, counter) >> 8).float().mul_(2.0**-24)
