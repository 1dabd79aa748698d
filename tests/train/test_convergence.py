"""The convergence check: its rule, the stop it makes, and its record in the summary."""

import numpy as np
import pytest

from mtfilter.train.callbacks import ConvergenceSchedule
from mtfilter.train.callbacks._convergence import converged
from tests.helpers import log_dir, read_summary, tiny_fit

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
    rule = ConvergenceSchedule(patience=100, rel_tol=0.01, abs_tol=1e-4)
    epochs = np.arange(1, len(values) + 1)
    assert converged(np.array(values), epochs, epoch=len(values), rule=rule) == expected


def test_a_fit_stops_once_converged_and_says_when(run_dir):
    folder = log_dir(tiny_fit(*CHECK))
    summary = read_summary(folder)
    assert summary["status"] == "completed"
    convergence = summary["convergence"]
    assert convergence["converged"] is True and convergence["epoch"] == summary["epochs"] < 3000
    assert convergence["converged_reason"] == "plateau"
    assert summary["epochs"] % 10 == 0  # on a check


def test_without_stop_it_trains_on_and_still_records_convergence(run_dir):
    summary = read_summary(log_dir(tiny_fit(*CHECK, "--convergence.stop", "false",
                                            "--trainer.max_epochs", "400")))  # fmt: skip
    assert summary["epochs"] == 400
    assert summary["convergence"]["converged"] is True and summary["convergence"]["epoch"] < 400


@pytest.mark.slow
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


def test_a_plateau_drops_the_learning_rate_before_it_counts_as_converged(run_dir):
    folder = log_dir(tiny_fit(*CHECK, "--convergence.lr_drops", "2"))
    convergence = read_summary(folder)["convergence"]
    drops = convergence["lr_drop_epochs"]
    assert len(drops) == 2 and drops[0] < drops[1] < convergence["epoch"]
    assert drops[1] - drops[0] >= 50  # a plateau at the new rate: patience epochs after the drop


@pytest.mark.slow
def test_a_resumed_fit_keeps_its_dropped_learning_rate(run_dir):
    args = ["--convergence.lr_drops", "2", *CHECK]  # CHECK ends with --trainer.max_epochs
    straight = read_summary(log_dir(tiny_fit(*args)))
    after_first_drop = straight["convergence"]["lr_drop_epochs"][0] + 20
    first = tiny_fit(*args[:-2], "--trainer.max_epochs", str(after_first_drop))
    resumed = tiny_fit(*args, "--ckpt_path", str(log_dir(first) / "checkpoints/last.ckpt"))
    summary = read_summary(log_dir(resumed))
    assert summary["convergence"] == straight["convergence"]
    assert summary["val"]["loss_best"] == pytest.approx(straight["val"]["loss_best"], rel=1e-6)


def test_a_replicas_scaled_learning_rate_is_that_learning_rate(run_dir):
    """Replica 1 of a stacked run at a tenth of the learning rate trains as a separate run
    with that rate (to rounding: the step is scaled after it is taken)."""
    import torch

    from mtfilter.train.cli import MtfilterCLI
    from tests.helpers import TINY

    def trained(args: list[str], scale_replica: int | None):
        common = ["--config", str(TINY), "--trainer.max_epochs", "30"]
        cli = MtfilterCLI(args=[*common, "--trainer.enable_model_summary", "false", *args],
                          run=False)  # fmt: skip
        if scale_replica is not None:
            cli.model.scale_learning_rate(scale_replica, 0.1)
        cli.trainer.fit(cli.model, cli.datamodule)
        return cli.model.net.eval()

    stacked = trained(["--data.seeds", "[0, 1]"], scale_replica=1)
    alone_1 = trained(["--seed_everything", "1", "--model.optimizer.init_args.lr", "0.001"], None)
    alone_0 = trained(["--seed_everything", "0"], None)
    for name, tensor in stacked.state_dict().items():
        if tensor.dim() == 0:  # num_batches_tracked
            continue
        close = {"rtol": 1e-4, "atol": 1e-5}
        torch.testing.assert_close(tensor.view(2, -1)[1], alone_1.state_dict()[name].view(-1),
                                   msg=name, **close)  # fmt: skip
        torch.testing.assert_close(tensor.view(2, -1)[0], alone_0.state_dict()[name].view(-1))
    indices = torch.arange(16)[None]
    with torch.no_grad():  # in eval mode (running statistics) as in training mode
        for training in (False, True):
            nets = [net.train(training) for net in (stacked, alone_1, alone_0)]
            torch.testing.assert_close(nets[0](indices)[1], nets[1](indices)[0], rtol=1e-4,
                                       atol=1e-4)  # fmt: skip
            torch.testing.assert_close(nets[0](indices)[0], nets[2](indices)[0])


@pytest.mark.slow
def test_a_stacked_replica_that_converges_first_stops_there_as_its_separate_run(run_dir):
    folder = log_dir(tiny_fit(*CHECK, "--data.seeds", "[0, 1, 2]"))
    ends = []
    for seed in (0, 1, 2):
        stacked = read_summary(folder / f"seed_{seed}")
        alone = read_summary(log_dir(tiny_fit(*CHECK, "--seed_everything", str(seed))))
        assert stacked["convergence"] == alone["convergence"]
        assert stacked["epochs"] == alone["epochs"] == stacked["convergence"]["epoch"]
        assert stacked["val"] == alone["val"] and stacked["train"] == alone["train"]
        ends.append(stacked["epochs"])
    assert len(set(ends)) > 1  # they converged at different epochs: the early ones waited
