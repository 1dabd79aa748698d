"""Checkpoints written by earlier versions (tests/data/checkpoints_2026_11_29, from before the
modules moved into subpackages) still load, evaluate and resume exactly."""

from pathlib import Path

import pytest
import torch

from mtfilter import BitMappingModule
from tests.conftest import cli, log_dir, read_summary, state_dict_of, tiny_fit

EARLIER = Path(__file__).parent / "data" / "checkpoints_2026_11_29"
# the settings the earlier run was made with (its README)
SETTINGS = ["--data.seeds", "[0, 1]", "--model.loss", "bce", "--convergence.patience", "10",
            "--convergence.check_every", "5", "--convergence.lr_drops", "2",
            "--convergence.rel_tol", "0.3"]  # fmt: skip


def test_an_earlier_best_checkpoint_loads_and_evaluates(run_dir):
    model = BitMappingModule.load_from_checkpoint(EARLIER / "best.ckpt")
    model.eval()
    assert model(torch.arange(16)[None].expand(2, -1)).shape == (2, 16, 4)
    run = cli(["validate", *SETTINGS, "--ckpt_path", str(EARLIER / "best.ckpt")])
    assert 0 <= float(run.trainer.callback_metrics["seed_1/val/loss"]) < 1


@pytest.mark.slow
def test_an_earlier_last_checkpoint_resumes_as_the_uninterrupted_run(run_dir):
    straight = tiny_fit(*SETTINGS, "--trainer.max_epochs", "60")
    resumed = tiny_fit(
        *SETTINGS, "--trainer.max_epochs", "60", "--ckpt_path", str(EARLIER / "last.ckpt")
    )
    a = state_dict_of(log_dir(straight) / "checkpoints/last.ckpt")
    b = state_dict_of(log_dir(resumed) / "checkpoints/last.ckpt")
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
    for seed in (0, 1):
        summary = read_summary(log_dir(resumed) / f"seed_{seed}")
        reference = read_summary(log_dir(straight) / f"seed_{seed}")
        assert summary["epochs"] == reference["epochs"]
        assert summary["val"]["loss_best"] == pytest.approx(reference["val"]["loss_best"], rel=1e-6)
        assert summary["val"]["loss_best_epoch"] == reference["val"]["loss_best_epoch"]
        # the convergence schedule's state (its learning-rate drops) came back too
        assert summary["convergence"] == reference["convergence"]
        assert summary["convergence"]["lr_drop_epochs"] == [15, 25]
