"""What reaches the loggers: every `trainer.log_every_n_steps`-th epoch and the last, while the
summaries read every epoch."""

import pytest

from tests.helpers import log_dir, read_scalars, read_summary, tiny_fit


def test_the_loggers_get_every_nth_epoch_and_the_last_the_summary_every_epoch(run_dir):
    every = log_dir(tiny_fit("--trainer.max_epochs", "12"))  # configs/tiny.yaml: every epoch
    sparse = log_dir(tiny_fit("--trainer.max_epochs", "12", "--trainer.log_every_n_steps", "5"))
    full, shown = read_scalars(every)["val/loss"], read_scalars(sparse)["val/loss"]
    assert [step for step, _ in full] == list(range(1, 13))
    assert [step for step, _ in shown] == [5, 10, 12]
    # the same run, one process: the written epochs are the same figures
    assert [value for _, value in shown] == pytest.approx([full[i][1] for i in (4, 9, 11)])
    # the best epoch is found among all epochs, written or not
    assert read_summary(sparse)["val"] == read_summary(every)["val"]


def test_an_interval_of_zero_writes_no_curves_and_keeps_the_summary(run_dir):
    folder = log_dir(tiny_fit("--trainer.max_epochs", "6", "--trainer.log_every_n_steps", "0"))
    assert "val/loss" not in read_scalars(folder)
    assert read_summary(folder)["val"]["loss_best_epoch"] in range(1, 7)
