"""Two costs of a study, each timed against its yardstick in one run:

- `answer`: a scaled-down select-then-confirm study (`mtfilter sweep`, whole processes, both
  cores) the way studies ran before stopping at the floor and compacting stacks, against the
  way they run now. Both ways pick the same rates and their figures are compared here too.
- `step`: the per-replica cost of an 8-replica `mtfilter fit` stack (steady state: the
  difference of a long and a short fit, so start-up and the final writes cancel) against
  `benchmarks.stacked_reference`, the hand-written stacked step.
"""

import csv
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from benchmarks.stacked_reference import StackedReference

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")

# Before: every replica trained until its loss plateaued, frozen replicas stayed in the stack,
# gradients came from autograd (the allocator setting of the `mtfilter` command is on both ways).
OLD_WAY = {"convergence.stop_at_floor": False, "convergence.compact_stack": False,
           "model.gradients": "autograd"}  # fmt: skip
NEW_WAY: dict[str, bool | str] = {}  # the sweep's defaults


def study_config(
    folder: str, widths: list[int], max_epochs: int, way: dict[str, bool | str]
) -> str:
    """A sweep config of the scaled-down study: st and mt at `widths`, bce, two rates (the
    limits keep the picks inside them), selection seeds 0-1, held-out seeds 2-3."""
    settings = {
        "trainer.max_epochs": max_epochs,
        "model.loss": "bce",
        "model.optimizer.init_args.fused": True,
        "convergence.patience": 200,
        "convergence.check_every": 50,
        "convergence.lr_drops": 1,
        **way,
    }
    lines = [
        f"base: {os.path.abspath(os.path.join(CONFIGS, 'mt.yaml'))}",
        f"folder: {folder}",
        "settings:",
        *[f"  {key}: {str(value).lower()}" for key, value in settings.items()],
        "grid:",
        f"  model.hidden_dim: {widths}",
        "  model.layout: [st, mt]",
        "select:",
        "  candidates:",
        "    model.optimizer.init_args.lr: [0.01, 0.03]",
        "  selection_seeds: [0, 1]",
        "  seeds: [2, 3]",
        "  metric: bit_error",
        "  limits:",
        "    model.optimizer.init_args.lr: [0.01, 0.03]",
    ]
    path = folder + ".yaml"
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def sweep_seconds(config: str) -> float:
    """Wall time of `mtfilter sweep --config CONFIG` as a whole process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mtfilter.cli", "sweep", "--config", config],
                   check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def confirmed_figures(folder: str) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(run, seed) -> (picked rate, best bit error, best exact-match error) of each held-out run
    in the report."""
    with open(os.path.join(folder, "results.csv")) as f:
        return {
            (row["run"], row["seed_everything"]): (
                row["model.optimizer.init_args.lr"], row["val_bit_error_best"],
                row["val_exact_match_error_best"],
            )
            for row in csv.DictReader(f) if row["run"].startswith("confirmation/")
        }  # fmt: skip


def answer(widths: list[int], max_epochs: int) -> tuple[float, float, int, int, int]:
    """(old seconds, new seconds, held-out runs, runs of the same pick, runs whose pick and best
    errors agree exactly). A stack that shrank computes its survivors in other batched shapes,
    so their rounding, and over thousands of epochs their paths, may differ a little."""
    with tempfile.TemporaryDirectory() as home:
        old = os.path.join(home, "old")
        new = os.path.join(home, "new")
        old_seconds = sweep_seconds(study_config(old, widths, max_epochs, OLD_WAY))
        new_seconds = sweep_seconds(study_config(new, widths, max_epochs, NEW_WAY))
        before, after = confirmed_figures(old), confirmed_figures(new)
    picks = sum(key in after and before[key][0] == after[key][0] for key in before)
    same = sum(before[key] == after.get(key) for key in before)
    return old_seconds, new_seconds, len(before), picks, same


def library_epoch_seconds(
    fit_seconds: Callable[[list[str]], float], replicas: int, hidden: int, epochs: int
) -> float:
    """Seconds per epoch of a stacked mt fit at steady state; `fit_seconds(args)` times one
    `mtfilter fit` (benchmarks.run's harness, on one thread as a sweep's process)."""

    def fit(n: int) -> float:
        return fit_seconds([
            "--model.hidden_dim", str(hidden), "--model.loss", "bce", "--trainer.max_epochs",
            str(n), "--model.optimizer.init_args.fused", "true", "--model.optimizer.init_args.lr",
            "0.01", "--data.seeds", str(list(range(replicas))),
        ])  # fmt: skip

    short = max(epochs // 20, 2)
    return (fit(epochs + short) - fit(short)) / epochs


def reference_epoch_seconds(replicas: int, hidden: int, epochs: int) -> float:
    torch.set_num_threads(1)
    reference = StackedReference(replicas, hidden)
    reference.train(5)  # first-call costs
    start = time.perf_counter()
    reference.train(epochs)
    return (time.perf_counter() - start) / epochs
