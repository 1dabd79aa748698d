"""Multi-process training: a 2-process DDP fit on the CPU (gloo), launched as a user would."""

import subprocess
import sys

import pytest

from tests.conftest import TINY, read_scalars, read_summary


@pytest.mark.slow
def test_two_process_ddp_fit_trains(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtfilter.cli",
            "fit",
            "--config",
            str(TINY),
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--trainer.accelerator",
            "cpu",
            "--trainer.max_epochs",
            "30",
            "--trainer.enable_model_summary",
            "false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    folder = tmp_path / "lightning_logs/version_0"
    summary = read_summary(folder)
    assert summary["status"] == "completed" and summary["epochs"] == 30
    curve = [value for _, value in read_scalars(folder)["train/loss"]]
    assert len(curve) == 30 and curve[-1] < 0.9 * curve[0]
    assert (folder / "checkpoints/best.ckpt").is_file()
