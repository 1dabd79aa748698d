"""How many CPU threads a fit should use, from the work of one optimizer step.

torch's default (one intra-op thread per core) pays only when each op has enough work to split,
and costs dearly when other processes want the same cores: the threads then wait on each other.
Whole fits on a 2-core CPU, the speed of 2 threads relative to 1 (docs/benchmarks.md):

| fit | multiply-adds per step | idle machine | two other busy processes |
| --- | --- | --- | --- |
| mt, hidden 8 / 64 / 128 | 0.2 / 3.2 / 10 M | 0.97 / 1.01 / 0.91x | 0.26 / 0.30 / 0.35x |
| st, hidden 8 / 32 | 1.3 / 9.0 M | 1.35 / 1.31x | 0.12 / 0.49x |
| st 128; mt 1024 | 99 / 554 M | 1.5 / 1.8x | 0.48 / 0.54x |

So small fits get one thread: at most a third slower on an idle machine, never several times
slower on a busy one. Large fits keep every core; on a busy machine pass `--num_threads 1`
(a sweep's workers already run single-threaded).
"""

from typing import Any

# Multiply-adds per optimizer step from which a fit uses every available thread.
MIN_WORK_FOR_THREADS = 20_000_000


def multiply_adds_per_step(net: Any, batch_size: int) -> int:
    """Forward multiply-adds of one step of a `BitMLP` (all stacked replicas): every weight
    outside the input tables is used once per sample; a table lookup is no arithmetic."""
    tables = 0 if net.embedding is None else net.embedding.weight.numel()
    weights = sum(p.numel() for p in net.parameters()) - tables
    return weights * batch_size


def choose(work: int, available: int) -> int:
    """One thread for small steps, all `available` ones (torch's default) for large ones."""
    return max(1, available) if work >= MIN_WORK_FOR_THREADS else 1
