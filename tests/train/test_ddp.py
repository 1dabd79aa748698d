"""Multi-process training: 2-process DDP fits on the CPU (gloo), launched as a user would."""

import subprocess
import sys

import pytest
import torch

from tests.helpers import TINY, read_scalars, read_summary, state_dict_of


def _fit(folder, *args: str) -> subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mtfilter.cli",
            "fit",
            "--config",
            str(TINY),
            "--trainer.accelerator",
            "cpu",
            "--trainer.enable_model_summary",
            "false",
            *args,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_two_process_ddp_fit_trains(tmp_path):
    result = _fit(
        tmp_path,
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.max_epochs",
        "30",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    folder = tmp_path / "lightning_logs/version_0"
    summary = read_summary(folder)
    assert summary["status"] == "completed" and summary["epochs"] == 30
    curve = [value for _, value in read_scalars(folder)["train/loss"]]
    assert len(curve) == 30 and curve[-1] < 0.9 * curve[0]
    assert (folder / "checkpoints/best.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [[], ["--model.aggregator.class_path", "torchjd.aggregation.UPGrad"]],
    ids=["summed-loss", "upgrad"],
)
def test_ddp_steps_equal_single_process_steps_on_the_same_global_batch(tmp_path, method):
    # Without BatchNorm (whose batch statistics are per process unless synchronised), two
    # processes with 4 samples each must take exactly the steps of one process with 8. With an
    # aggregator, that holds only if it sees the per-task gradients of the whole global batch.
    common = ["--model.batch_norm", "false", "--trainer.max_epochs", "10", *method]
    ddp = _fit(
        tmp_path / "ddp",
        *common,
        "--data.batch_size",
        "4",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
    )
    single = _fit(tmp_path / "single", *common, "--data.batch_size", "8")
    assert ddp.returncode == 0 and single.returncode == 0, (
        ddp.stderr[-2000:] + single.stderr[-2000:]
    )
    a = state_dict_of(tmp_path / "ddp/lightning_logs/version_0/checkpoints/last.ckpt")
    b = state_dict_of(tmp_path / "single/lightning_logs/version_0/checkpoints/last.ckpt")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(a["net.head.weight"], _initial_head(tmp_path))


def _initial_head(tmp_path):
    result = _fit(
        tmp_path / "zero",
        "--model.batch_norm",
        "false",
        "--trainer.max_epochs",
        "1",
        "--model.optimizer.lr",
        "0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return state_dict_of(tmp_path / "zero/lightning_logs/version_0/checkpoints/last.ckpt")[
        "net.head.weight"
    ]
