"""The command line: shipped configs, argument links, and bad input stopped before any work."""

import subprocess
import sys

import pytest
import torch

from mtfilter import CheckpointMismatchError
from mtfilter.cli.main import cli_main
from tests.helpers import CONFIGS, cli, log_dir, tiny_fit

SHIPPED = sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("original/*.yaml"))


@pytest.mark.parametrize("config", SHIPPED, ids=[str(p.relative_to(CONFIGS)) for p in SHIPPED])
def test_every_shipped_config_parses(config, run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed
    assert not (run_dir / "lightning_logs").exists()


SWEEPS = sorted((CONFIGS / "sweep").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("config", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_shipped_sweep_passes_its_preflight(config, run_dir, capsys):
    """Each study's every run resolved and its model built (on the meta device), nothing run."""
    from mtfilter.cli.sweep_report import sweep_or_report

    assert sweep_or_report(["sweep", "--config", str(config), "--dry_run", "true"]) == 0
    assert "mtfilter fit --config" in capsys.readouterr().out
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


def test_fit_help_starts_with_mtfilters_own_options_and_all_adds_the_trainers(capsys):
    from mtfilter.cli.main import run

    assert run(["fit", "--help"]) == 0
    short = capsys.readouterr().out
    assert run(["fit", "--help", "all"]) == 0
    full = capsys.readouterr().out
    lines = short.splitlines()
    assert next(i for i, line in enumerate(lines) if "--model." in line) < 60  # near the top
    own = ["--model.hidden_dim", "--data.num_bits", "--convergence.patience",
           "--checkpoint.every_n_seconds", "--progress.log_every_s", "--ckpt_path"]  # fmt: skip
    for key in own:
        assert key in short and key in full, key
    assert "  --trainer.max_epochs MAX_EPOCHS" not in short
    assert "  --trainer.max_epochs MAX_EPOCHS" in full
    assert "`mtfilter fit --help all`" in short.splitlines()[-1]
    assert len(short.splitlines()) < len(full.splitlines()) / 2


def test_a_fit_prints_no_lightning_banner_or_model_table(run_dir, capsys, caplog):
    tiny_fit("--trainer.max_epochs", "2")
    captured = capsys.readouterr()
    # a logger's filters drop a record before any handler, pytest's capture included
    shown = "\n".join([captured.out, captured.err, *(r.getMessage() for r in caplog.records)])
    assert "TPU available" not in shown and "GPU available: False" not in shown
    assert "Total params" not in shown and "FLOPs" not in shown
    assert "parameters (" in shown  # mtfilter's own count of the model


def test_default_root_dir_holds_the_logs_as_well_as_the_checkpoints(run_dir):
    run = tiny_fit("--trainer.max_epochs", "2", "--trainer.default_root_dir", "elsewhere")
    folder = log_dir(run)
    assert folder.resolve().parent == (run_dir / "elsewhere" / "lightning_logs").resolve()
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "lightning_logs").exists()


def test_a_sweeps_dry_run_can_be_a_bare_flag(run_dir, capsys):
    import yaml

    from mtfilter.cli.main import run
    from tests.helpers import TINY

    sweep = {"base": str(TINY), "folder": "sweep", "grid": {"model.hidden_dim": [4, 8]}}
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    for args in (["--dry_run", "--config", "sweep.yaml"], ["--config", "sweep.yaml", "--dry_run"]):
        assert run(["sweep", *args]) == 0
        assert "2 runs in sweep" in capsys.readouterr().out
    assert not (run_dir / "sweep").exists()
