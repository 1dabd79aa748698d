"""The convergence check: its rule, the stop it makes, and its record in the summary."""

import numpy as np
import pytest

from mtfilter.callbacks import ConvergenceStop
from mtfilter.callbacks._convergence import converged
from tests.conftest import log_dir, read_summary, tiny_fit

CHECK = ["--convergence.patience", "50", "--convergence.check_every", "10",
         "--trainer.max_epochs", "3000"]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0] * 50 + [0.5] * 50 + [0.499] * 101, True),  # 0.2% better over the last 100
        ([1.0] * 100 + list(np.linspace(1.0, 0.9, 101)), False),  # 10% better: still learning
        ([1e-3] * 100 + [0.95e-3] * 101, True),  # 5% better, but by less than abs_tol
        ([np.nan] * 201, False),  # nothing to compare
    ],
    ids=["flat", "falling", "tiny-absolute", "nan"],
)
def test_the_rule_compares_the_best_now_with_the_best_patience_epochs_ago(values, expected):
    rule = ConvergenceStop(patience=100, rel_tol=0.01, abs_tol=1e-4)
    epochs = np.arange(1, len(values) + 1)
    assert converged(np.array(values), epochs, epoch=len(values), rule=rule) == expected


def test_a_fit_stops_once_converged_and_says_when(run_dir):
    folder = log_dir(tiny_fit(*CHECK))
    summary = read_summary(folder)
    assert summary["status"] == "completed"
    convergence = summary["convergence"]
    assert convergence["converged"] is True and convergence["epoch"] == summary["epochs"] < 3000
    assert summary["epochs"] % 10 == 0  # on a check


def test_without_stop_it_trains_on_and_still_records_convergence(run_dir):
    summary = read_summary(log_dir(tiny_fit(*CHECK, "--convergence.stop", "false",
                                            "--trainer.max_epochs", "400")))  # fmt: skip
    assert summary["epochs"] == 400
    assert summary["convergence"]["converged"] is True and summary["convergence"]["epoch"] < 400


def test_a_resumed_fit_stops_where_an_uninterrupted_one_does(run_dir):
    straight = read_summary(log_dir(tiny_fit(*CHECK)))
    half = straight["epochs"] // 2
    first = tiny_fit(*CHECK[:-2], "--trainer.max_epochs", str(half))
    resumed = tiny_fit(*CHECK, "--ckpt_path", str(log_dir(first) / "checkpoints/last.ckpt"))
    summary = read_summary(log_dir(resumed))
    assert summary["epochs"] == straight["epochs"]
    assert summary["convergence"] == straight["convergence"]


def test_off_records_nothing(run_dir):
    summary = read_summary(log_dir(tiny_fit("--convergence.patience", "0")))
    assert summary["convergence"]["converged"] is None and summary["epochs"] == 50
