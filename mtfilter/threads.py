"""How many CPU threads a fit should use, from the work of one optimizer step.

torch's default (one intra-op thread per core) pays only when each op has enough work to split:
for the small models this study is about, the threads spend their time waiting on each other,
and on a machine busy with other work they can be 30-60x slower than one thread. Measured on a
2-core CPU (docs/benchmarks.md): one thread is as fast or faster up to about 3 million
multiply-adds per step (mt at hidden 64, st at hidden 8); two threads are 1.4-1.8x faster from
about 10 million (mt at hidden 128, st at hidden 32 and up) on an idle machine.
"""

from typing import Any

# Multiply-adds per optimizer step from which a fit uses every available thread.
MIN_WORK_FOR_THREADS = 5_000_000


def multiply_adds_per_step(net: Any, batch_size: int) -> int:
    """Forward multiply-adds of one step of a `BitMLP` (all stacked replicas): every weight
    outside the input tables is used once per sample; a table lookup is no arithmetic."""
    tables = 0 if net.embedding is None else net.embedding.weight.numel()
    weights = sum(p.numel() for p in net.parameters()) - tables
    return weights * batch_size


def choose(work: int, available: int) -> int:
    """One thread for small steps, all `available` ones (torch's default) for large ones."""
    return max(1, available) if work >= MIN_WORK_FOR_THREADS else 1
