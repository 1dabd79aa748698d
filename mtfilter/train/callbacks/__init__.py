"""Callbacks for what Lightning's own cannot do at this workload's cost: an exact best-epoch
checkpoint with bounded writes, a convergence check per replica, a time-refreshed progress line,
the run summary, a clean stop on Ctrl-C or a scheduler's signal, and saving predictions."""

from mtfilter.train.callbacks._checkpoint import BestEpochCheckpoint
from mtfilter.train.callbacks._convergence import ConvergenceSchedule
from mtfilter.train.callbacks._interrupt import StopOnInterrupt
from mtfilter.train.callbacks._predictions import PredictionWriter
from mtfilter.train.callbacks._progress import EpochProgressBar
from mtfilter.train.callbacks._summary import RunSummary, run_summary


def fit_callbacks(convergence: ConvergenceSchedule | None = None) -> list:
    """The callbacks `mtfilter fit` gives its Trainer, at their defaults, for a plain
    `lightning.Trainer(callbacks=fit_callbacks())`: the epoch progress bar, the best-epoch
    checkpoint, `convergence` (default: `ConvergenceSchedule()`), `summary.json` per replica and a
    clean stop on Ctrl-C or a scheduler's SIGTERM."""
    return [EpochProgressBar(), BestEpochCheckpoint(), convergence or ConvergenceSchedule(),
            RunSummary(), StopOnInterrupt()]  # fmt: skip


__all__ = [
    "BestEpochCheckpoint",
    "ConvergenceSchedule",
    "EpochProgressBar",
    "PredictionWriter",
    "RunSummary",
    "StopOnInterrupt",
    "fit_callbacks",
    "run_summary",
]
