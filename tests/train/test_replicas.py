"""Stacked learning rates: one replica per (seed, learning rate) in one process, each training as
its separate run with that rate would, through drops on a plateau and a resume."""

import pytest
import torch

from mtfilter import CheckpointMismatchError
from tests.helpers import log_dir, read_summary, state_dict_of, tiny_fit

# The horizon: 150 epochs of 2 steps (300 optimizer steps); a plateau (< 10% better over 20
# epochs) drops a replica's rate once. Judged on val/loss, the eval-mode figure studies report.
PLATEAUS = ["--trainer.max_epochs", "150", "--convergence.patience", "20",
            "--convergence.check_every", "10", "--convergence.lr_drops", "1",
            "--convergence.rel_tol", "0.1", "--convergence.stop", "false"]  # fmt: skip
OPTIMIZERS = {
    "adam": ["--model.optimizer.class_path", "torch.optim.Adam"],
    "sgd": ["--model.optimizer.class_path", "torch.optim.SGD",
            "--model.optimizer.init_args.momentum", "0.9"],
}  # fmt: skip
# Rates where training is not chaotic over these steps: rounding differences (the step is scaled
# after it is taken) stay at rounding size instead of growing until the runs part ways.
RATES = [0.003, 0.01]
# A stacked replica's step is its separate run's step scaled after it is taken: one rounding
# (~6e-8 relative) more per step. Over 300 steps that stayed below 1e-5 on any weight or
# BatchNorm statistic (order-1 values) and 1e-6 relative on the losses; the tolerances allow
# 10x that, far below what a wrong rate (a different trajectory from the first step) gives.
WEIGHT_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
LOSS_TOLERANCE = 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_each_stacked_rate_trains_as_the_separate_run_at_that_rate(run_dir, optimizer):
    """With BatchNorm on (the default), every parameter and BatchNorm statistic of every
    replica, its losses and its plateau drops, against its separate run."""
    common = [*PLATEAUS, *OPTIMIZERS[optimizer], "--model.optimizer.init_args.lr", "0.5"]
    run = tiny_fit(*common, "--data.seeds", "[0, 1]", "--model.learning_rates", str(RATES))
    folder = log_dir(run)
    stacked = state_dict_of(folder / "checkpoints/last.ckpt")
    replicas = run.model.replicas
    assert [(r.seed, r.learning_rate) for r in replicas] == [
        (0, RATES[0]),
        (1, RATES[0]),
        (0, RATES[1]),
        (1, RATES[1]),
    ]
    drops = 0
    for index, replica in enumerate(replicas):
        alone_run = tiny_fit(
            *common,
            "--seed_everything",
            str(replica.seed),
            "--model.optimizer.init_args.lr",
            str(replica.learning_rate),
        )
        alone_folder = log_dir(alone_run)
        alone = state_dict_of(alone_folder / "checkpoints/last.ckpt")
        assert run.model.hparams.batch_norm and alone.keys() == stacked.keys()
        for name, tensor in alone.items():
            if tensor.is_floating_point():
                torch.testing.assert_close(
                    stacked[name].view(4, -1)[index],
                    tensor.view(-1),
                    **WEIGHT_TOLERANCE,
                    msg=f"{name} of {replica}",
                )
        mine = read_summary(folder / replica.name)
        theirs = read_summary(alone_folder)
        assert mine["learning_rate"] == replica.learning_rate and mine["seed"] == replica.seed
        assert mine["hparams"]["optimizer"]["lr"] == theirs["hparams"]["optimizer"]["lr"]
        assert mine["convergence"]["lr_drop_epochs"] == theirs["convergence"]["lr_drop_epochs"]
        drops += len(mine["convergence"]["lr_drop_epochs"])
        for stage in ("train", "val"):
            assert mine[stage]["loss_best"] == pytest.approx(
                theirs[stage]["loss_best"], rel=LOSS_TOLERANCE
            )
            assert mine[stage]["loss_final"] == pytest.approx(
                theirs[stage]["loss_final"], rel=LOSS_TOLERANCE
            )
    assert drops > 0  # the plateau drops were exercised


@pytest.mark.slow
def test_a_stacked_rate_fit_resumes_exactly(run_dir):
    args = [*PLATEAUS[2:], "--data.seeds", "[0, 1]", "--model.learning_rates", "[0.003, 0.03]"]
    straight = log_dir(tiny_fit(*args, "--trainer.max_epochs", "120"))
    first = tiny_fit(*args, "--trainer.max_epochs", "70")
    resumed = log_dir(tiny_fit(*args, "--trainer.max_epochs", "120", "--ckpt_path",
                               str(log_dir(first) / "checkpoints/last.ckpt")))  # fmt: skip
    for name in ("seed_0-lr_0.003", "seed_1-lr_0.03"):
        again, once = read_summary(resumed / name), read_summary(straight / name)
        assert again["val"] == once["val"] and again["convergence"] == once["convergence"]
    assert (
        state_dict_of(resumed / "checkpoints/last.ckpt").keys()
        == state_dict_of(straight / "checkpoints/last.ckpt").keys()
    )
    for name, tensor in state_dict_of(resumed / "checkpoints/last.ckpt").items():
        assert torch.equal(tensor, state_dict_of(straight / "checkpoints/last.ckpt")[name]), name


def test_a_checkpoint_of_other_stacked_rates_is_refused(run_dir):
    args = ["--trainer.max_epochs", "3", "--data.seeds", "[0]"]
    first = log_dir(tiny_fit(*args, "--model.learning_rates", "[0.01, 0.03]"))
    with pytest.raises(CheckpointMismatchError, match="learning_rates"):
        tiny_fit(*args, "--model.learning_rates", "[0.01, 0.1]", "--ckpt_path",
                 str(first / "checkpoints/last.ckpt"))  # fmt: skip


@pytest.mark.parametrize(
    ("rates", "message"),
    [("[]", "empty"), ("[0.01, 0.01]", "repeats"), ("[0.01, -1]", "positive")],
    ids=["empty", "repeated", "negative"],
)
def test_bad_learning_rates_are_refused(run_dir, rates, message):
    from mtfilter import ConfigError

    with pytest.raises(ConfigError, match=message):
        tiny_fit("--model.learning_rates", rates)
    assert not (run_dir / "lightning_logs").exists() or not any(
        (run_dir / "lightning_logs").iterdir()
    )
