"""The command line: shipped configs, argument links, and bad input stopped before any work."""

import subprocess
import sys

import pytest
import torch

from mtfilter import CheckpointMismatchError
from mtfilter.cli.main import cli_main
from tests.conftest import CONFIGS, cli, log_dir, tiny_fit

SHIPPED = sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("original/*.yaml"))


@pytest.mark.parametrize("config", SHIPPED, ids=[str(p.relative_to(CONFIGS)) for p in SHIPPED])
def test_every_shipped_config_parses(config, run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed
    assert not (run_dir / "lightning_logs").exists()


@pytest.mark.parametrize("folder", ["", "original/"], ids=["converged", "original"])
def test_mt_and_st_configs_differ_only_in_layout(folder):
    def settings(path):
        return [line for line in path.read_text().splitlines() if not line.startswith("#")]

    mt, st = settings(CONFIGS / f"{folder}mt.yaml"), settings(CONFIGS / f"{folder}st.yaml")
    assert [(a, b) for a, b in zip(mt, st, strict=True) if a != b] == [
        ("  layout: mt", "  layout: st")
    ]


def test_data_settings_reach_the_model_once(run_dir):
    run = cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "tiny.yaml"),
            "--data.num_bits",
            "3",
            "--data.seeds",
            "[4]",
            "--trainer.max_epochs",
            "1",
        ]
    )
    assert run.model.hparams.num_bits == 3 and run.model.hparams.num_samples == 8
    assert run.model.hparams.seeds == [4]
    assert run.model.hparams.data_fingerprint == run.datamodule.fingerprint


def test_checkpoint_of_another_dataset_or_shape_is_refused_before_writing(run_dir):
    trained = tiny_fit("--trainer.max_epochs", "2")
    best = str(log_dir(trained) / "checkpoints/best.ckpt")
    versions = sorted(p.name for p in (run_dir / "lightning_logs").iterdir())
    with pytest.raises(CheckpointMismatchError, match="dataset"):
        tiny_fit("--data.data_seed", "1", "--ckpt_path", best)
    with pytest.raises(CheckpointMismatchError, match="hidden_dim"):
        cli(["validate", "--model.hidden_dim", "16", "--ckpt_path", best])
    foreign = run_dir / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointMismatchError, match="not an mtfilter checkpoint"):
        cli(["test", "--ckpt_path", str(foreign)])
    assert sorted(p.name for p in (run_dir / "lightning_logs").iterdir()) == versions


def test_console_script_prints_one_line_errors(run_dir):
    broken = run_dir / "not-a-checkpoint.ckpt"
    broken.write_text("hello")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtfilter.cli",
            "validate",
            "--config",
            str(CONFIGS / "tiny.yaml"),
            "--ckpt_path",
            str(broken),
        ],
        capture_output=True,
        text=True,
        cwd=run_dir,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-2].startswith("mtfilter: error: --ckpt_path")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("config", ["mt.yaml", "st.yaml", "original/mt.yaml", "original/st.yaml"])
def test_the_shipped_configs_build_their_full_size_models(config):
    """Built as the fit would, on the meta device: hidden 1024, 1024 samples, in milliseconds."""
    from mtfilter.train.preflight import PreflightCLI

    counts = PreflightCLI(["--config", str(CONFIGS / config)]).model.parameter_counts()
    own = counts["task_specific"]
    assert counts["total"] == counts["shared"] + 10 * own
    table = 16 * 1024  # in_dim x samples
    # per hidden layer: weights, BatchNorm's scale and shift, and in the original a bias before it
    per_layer = 3 * 1024 if config.startswith("original/") else 2 * 1024
    tower = 16 * 1024 + per_layer + 1024 * 1024 + per_layer + 1025  # layers, norms, head
    assert counts["per_task"] == table + tower
    if config == "st.yaml":  # ten towers, ten tables
        assert counts["shared"] == 0 and own == table + tower
    if config == "original/st.yaml":  # ten towers on one shared table, as the original
        assert counts["shared"] == table and own == tower
