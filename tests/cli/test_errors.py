"""Every user mistake is one short message: the bad key or value, where it was given, the
nearest valid key, where to look next; exit status 2, no traceback, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mtfilter.cli.main import main
from tests.helpers import CONFIGS, TINY

MAX_LINES = 3  # the error, and where to read more


def run_main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def bad_files(folder: Path) -> None:
    (folder / "typo.yaml").write_text("model:\n  hiden_dim: 8\n")
    (folder / "broken.yaml").write_text("model:\n  hidden_dim: 8\n layout: mt\n")
    sweep = {"base": str(TINY), "folder": str(folder / "sweep"), "grid": {"model.hiden_dim": [8]}}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    misspelt = {**sweep, "grid": {"model.hidden_dim": [8]}, "report": {"contrast_kye": "x"}}
    (folder / "report_typo.yaml").write_text(yaml.safe_dump(misspelt))
    (folder / "empty.yaml").write_text("")
    (folder / "configs").mkdir()
    (folder / "a_file").write_text("not a folder, not a checkpoint")
    (folder / "model_is_a_word.yaml").write_text("model: mt\n")
    no_base = {"folder": str(folder / "sweep"), "grid": {"model.hidden_dim": [8]}}
    (folder / "no_base.yaml").write_text(yaml.safe_dump(no_base))
    (folder / "gone_base.yaml").write_text(yaml.safe_dump({**no_base, "base": "gone.yaml"}))
    unwritable = {**no_base, "base": str(TINY), "folder": str(folder / "a_file" / "sweep")}
    (folder / "unwritable_sweep.yaml").write_text(yaml.safe_dump(unwritable))
    # a checkpoint of tiny.yaml's model trained on data_seed 1 (its fingerprint made up)
    other_data = {"num_bits": 4, "num_samples": 16, "data_fingerprint": "0123456789ab"}
    torch.save({"hyper_parameters": other_data,
                "datamodule_hyper_parameters": {"num_bits": 4, "targets": "permutation",
                                                "data_seed": 1}},
               folder / "other_data.ckpt")  # fmt: skip


FIT = ["fit", "--config", str(TINY)]
CASES = {
    # id: (arguments, words the message must hold)
    "unknown-key": (
        [*FIT, "--model.hiden_dim", "8"],
        ["unknown key model.hiden_dim", "command line", "did you mean model.hidden_dim"],
    ),
    "wrong-type": ([*FIT, "--model.hidden_dim", "abc"], ["model.hidden_dim", "integer", "'abc'"]),
    "missing-config": (["fit", "--config", "nope.yaml"], ["nope.yaml", "does not exist"]),
    "layout-typo": ([*FIT, "--model.layout", "mtt"], ["'mtt'", "mt, st, split", "mean mt?"]),
    "yaml-syntax": (["fit", "--config", "broken.yaml"], ["broken.yaml", "line 3", "YAML"]),
    "key-typo-in-file": (
        [*FIT, "--config", "typo.yaml"],
        ["model.hiden_dim", "in typo.yaml", "did you mean model.hidden_dim"],
    ),
    "optimizer-class-typo": (
        [*FIT, "--model.optimizer.class_path", "torch.optim.Adamm"],
        ["model.optimizer", "'Adamm'", "did you mean torch.optim.Adam?"],
    ),
    "scalarizer-without-shape": (
        [*FIT, "--model.scalarizer.class_path", "torchjd.scalarization.UW"],
        ["model.scalarizer", "UW needs shape", "--model.scalarizer.init_args.shape"],
    ),
    "zero-width": ([*FIT, "--model.hidden_dim", "0"], ["model.hidden_dim", "at least 1"]),
    "not-a-bool": ([*FIT, "--model.batch_norm", "maybe"], ["model.batch_norm", "true or false"]),
    "p-one": ([*FIT, "--model.loss_dropout", "1.0"], ["model.loss_dropout", "[0, 1)"]),
    "batch-larger-than-data": ([*FIT, "--data.batch_size", "64"], ["batch_size=64", "16 samples"]),
    "too-many-samples": ([*FIT, "--data.num_samples", "17"], ["num_samples=17"]),
    "missing-checkpoint": ([*FIT, "--ckpt_path", "gone.ckpt"], ["--ckpt_path gone.ckpt"]),
    "unknown-command": (["fitt", "--config", str(TINY)], ["unknown command 'fitt'", "mean fit?"]),
    "sweep-grid-typo": (
        ["sweep", "--config", "sweep.yaml"],
        ["sweep.yaml", "model.hiden_dim", "sweep's grid", "did you mean model.hidden_dim"],
    ),
    "report-not-a-sweep": (["report", "."], ["not a sweep folder"]),
    "negative-patience": (
        [*FIT, "--convergence.patience", "-1"],
        ["convergence.patience", "at least 0", "-1"],
    ),
    "negative-rate": (
        [*FIT, "--model.optimizer.init_args.lr", "-1"],
        ["model.optimizer", "learning rate: -1"],
    ),
    "optimizer-argument-typo": (
        [*FIT, "--model.optimizer", '{"class_path": "torch.optim.SGD", "init_args": {"lrr": 1}}'],
        ["model.optimizer", "lrr"],
    ),
    "no-time-to-write": (
        [*FIT, "--checkpoint.max_write_fraction", "0"],
        ["checkpoint.max_write_fraction", "(0, 1]"],
    ),
    "config-is-a-folder": (["fit", "--config", "configs"], ["configs is a directory"]),
    "empty-config": (["fit", "--config", "empty.yaml"], ["empty.yaml is empty"]),
    "hidden-width-without-hidden-layer": (
        [*FIT, "--model.num_layers", "1"],
        ["num_layers 1 has no hidden layer", "hidden_dim"],
    ),
    "chunked-batch-norm-synchronised": (
        [*FIT, "--model.batch_norm_chunks", "2", "--trainer.sync_batchnorm", "true"],
        ["batch_norm_chunks 2", "sync_batchnorm"],
    ),
    "sweep-report-typo": (
        ["sweep", "--config", "report_typo.yaml"],
        ["report_typo.yaml", "'contrast_kye' is not a report option"],
    ),
    "save-dir-not-writable": (
        [*FIT, "--trainer.logger.init_args.save_dir", "/proc/nope"],
        ["trainer.logger.init_args.save_dir /proc/nope", "cannot write in /proc"],
    ),
    "save-dir-under-a-file": (
        [*FIT, "--trainer.logger.init_args.save_dir", "a_file/logs"],
        ["save_dir a_file/logs", "a_file is a file, not a folder"],
    ),
    "root-dir-under-a-file": (
        [*FIT, "--trainer.default_root_dir", "a_file/runs"],
        ["a_file/runs", "a_file is a file, not a folder"],
    ),
    "targets-too-large-for-memory": (
        [*FIT, "--data.num_bits", "40", "--data.targets", "random"],
        ["data.num_samples (by default 2**data.num_bits", "GiB", "set data.num_samples"],
    ),
    "checkpoint-of-other-data": (
        [*FIT, "--ckpt_path", "other_data.ckpt"],
        ["another dataset", "data.data_seed: checkpoint 1, config 0"],
    ),
    "not-a-checkpoint": (
        ["validate", "--config", str(TINY), "--ckpt_path", "a_file"],
        ["--ckpt_path a_file: not a checkpoint (not a file written by torch.save)"],
    ),
    "model-is-a-word": (
        [*FIT, "--config", "model_is_a_word.yaml"],
        ["model (in model_is_a_word.yaml)", "expected a mapping of model.* settings, got 'mt'"],
    ),
    "sweep-without-base": (["sweep", "--config", "no_base.yaml"], ["base must be set"]),
    "sweep-base-missing": (
        ["sweep", "--config", "gone_base.yaml"],
        ["base (in gone_base.yaml)", "no such file", "gone.yaml"],
    ),
    "sweep-folder-not-writable": (
        ["sweep", "--config", "unwritable_sweep.yaml"],
        ["a_file/sweep", "a_file is a file, not a folder"],
    ),
}
if not torch.cuda.is_available():
    CASES["gpu-without-gpu"] = (
        [*FIT, "--trainer.accelerator", "gpu"],
        ["trainer.accelerator=gpu", "no CUDA GPU", "--trainer.accelerator cpu"],
    )


@pytest.mark.parametrize(("args", "words"), list(CASES.values()), ids=list(CASES))
def test_a_user_mistake_is_one_short_message_and_nothing_is_written(args, words, run_dir, capsys):
    bad_files(run_dir)
    before = sorted(p.name for p in run_dir.iterdir())
    status, out, err = run_main(args, capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= MAX_LINES, err
    assert lines[0].startswith("mtfilter: error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "see `mtfilter" in err and "Traceback" not in err and "usage:" not in err
    assert sorted(p.name for p in run_dir.iterdir()) == before  # no lightning_logs, no sweep


def test_help_lists_every_command_with_a_line_each(capsys):
    status, out, _ = run_main(["--help"], capsys)
    assert status == 0
    for command in ("fit", "validate", "test", "predict", "sweep", "report"):
        assert any(line.split()[:1] == [command] for line in out.splitlines()), command


def test_the_console_script_prints_no_traceback(run_dir):
    """The real entry point, in its own process: a GPU asked for on a CPU machine, say."""
    bad_files(run_dir)
    result = subprocess.run(
        [sys.executable, "-m", "mtfilter.cli", "fit", "--config", str(CONFIGS / "tiny.yaml"),
         "--config", "typo.yaml"],
        capture_output=True, text=True, cwd=run_dir, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= MAX_LINES, result.stderr
    assert not (run_dir / "lightning_logs").exists()
