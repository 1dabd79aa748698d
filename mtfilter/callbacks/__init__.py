"""Callbacks for what Lightning's own cannot do at this workload's cost: an exact best-epoch
checkpoint with bounded writes, a convergence check per replica, a time-refreshed progress line,
the run summary, a graceful stop on Ctrl-C, and saving predictions."""

from mtfilter.callbacks._checkpoint import BestEpochCheckpoint
from mtfilter.callbacks._convergence import ConvergenceStop
from mtfilter.callbacks._interrupt import StopOnInterrupt
from mtfilter.callbacks._predictions import PredictionWriter
from mtfilter.callbacks._progress import EpochProgressBar
from mtfilter.callbacks._summary import RunSummary, run_summary

__all__ = [
    "BestEpochCheckpoint",
    "ConvergenceStop",
    "EpochProgressBar",
    "PredictionWriter",
    "RunSummary",
    "StopOnInterrupt",
    "run_summary",
]
