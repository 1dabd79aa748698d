"""The C allocator kept from handing freed memory back to the system between training steps.

A fit frees and allocates the same few large tensors every step (gradients, activations, the
optimizer's copies). glibc serves a block above its mmap threshold (128 KiB at first) with fresh
pages from the kernel and returns them when it is freed, so each step pays page faults again:
a fresh process training st at hidden 8 with 8 stacked replicas (5 MiB input tables) spent ~25%
of its time there (docs/benchmarks.md, "The allocator"). Raising the thresholds keeps such
blocks in the heap for reuse. Only glibc is changed; elsewhere this does nothing.
"""

import ctypes
import ctypes.util
import sys

# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 2**30  # free memory kept at the heap's top before any is given back


def keep_freed_memory() -> bool:
    """Blocks up to `MMAP_THRESHOLD` come from the heap and freed memory stays there (up to
    `TRIM_THRESHOLD`); True where the allocator is glibc's and took the settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
