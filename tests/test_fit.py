"""End-to-end fits of the tiny config through the CLI, and what they leave behind."""

import itertools
import json
import math
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mtfilter import BitMappingModule, per_bit_loss
from mtfilter.cli.main import main
from mtfilter.train.callbacks import _checkpoint
from tests.helpers import TINY, cli, log_dir, read_scalars, read_summary, state_dict_of, tiny_fit


@pytest.fixture(scope="module")
def _tiny_folder(tmp_path_factory):
    """One tiny fit for every test that only reads what it wrote."""
    folder = tmp_path_factory.mktemp("tiny_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr("sys.argv", ["mtfilter"])
        return folder, tiny_fit()


@pytest.fixture
def tiny_run(_tiny_folder, monkeypatch):
    folder, run = _tiny_folder
    monkeypatch.chdir(folder)  # its paths are relative to where it ran
    monkeypatch.setattr("sys.argv", ["mtfilter"])
    return run


def test_fit_writes_logs_checkpoints_and_summary(tiny_run):
    folder = log_dir(tiny_run)
    assert folder.parent.name == "lightning_logs"
    for name in (
        "config.yaml",
        "hparams.yaml",
        "summary.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (folder / name).is_file(), name
    assert list(folder.glob("events.out.tfevents.*"))


def test_every_epoch_is_logged_to_tensorboard(tiny_run):
    scalars = read_scalars(log_dir(tiny_run))
    for key in (
        "train/loss",
        "train/loss/bit_0",
        "val/loss",
        "val/loss/bit_3",
        "val/acc",
        "val/acc/bit_1",
        "val/exact_match",
    ):
        assert [step for step, _ in scalars[key]] == list(range(1, 51)), key
    # the logged loss is the mean of the per-bit losses
    for epoch in (0, 25, 49):
        bits = [scalars[f"train/loss/bit_{i}"][epoch][1] for i in range(4)]
        assert scalars["train/loss"][epoch][1] == pytest.approx(np.mean(bits), rel=1e-5)
    assert scalars["train/loss"][-1][1] < scalars["train/loss"][0][1]  # it learns


def test_summary_best_figures_match_the_logged_curves(tiny_run):
    folder = log_dir(tiny_run)
    summary, scalars = read_summary(folder), read_scalars(folder)
    for stage in ("train", "val"):
        curve = scalars[f"{stage}/loss"]
        values = np.array([v for _, v in curve])
        assert summary[stage]["loss_best"] == pytest.approx(values.min(), rel=1e-6)
        assert summary[stage]["loss_best_epoch"] == curve[int(values.argmin())][0]
        for bit in range(4):
            bit_curve = np.array([v for _, v in scalars[f"{stage}/loss/bit_{bit}"]])
            assert summary[stage]["loss_best_epoch_per_bit"][bit] == int(bit_curve.argmin()) + 1
    assert summary["status"] == "completed" and summary["epochs"] == 50
    assert summary["val"]["acc_final"] == pytest.approx(scalars["val/acc"][-1][1], rel=1e-6)
    assert summary["parameters"] == {  # no bias before BatchNorm: see BitMLPConfig
        "total": 228,
        "shared": 192,
        "per_task": 201,
        "task_specific": 9,
        "filter": 0,
    }
    assert summary["seed"] == 0 and summary["data_seed"] == 0
    assert summary["data_fingerprint"] == tiny_run.datamodule.fingerprint
    assert summary["hparams"]["optimizer"]["class"] == "torch.optim.adam.Adam"


def test_headline_figures_reach_tensorboards_hparams_tab(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(str(log_dir(tiny_run)))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"best/val_loss", "best/val_loss_epoch", "final/val_exact_match"} <= metrics
    assert "hp_metric" not in accumulator.Tags()["scalars"]


def test_best_checkpoint_holds_exactly_the_best_epochs_weights(run_dir):
    # a high rate: the loss is lowest well before the last epoch, so best and last differ
    folder = log_dir(tiny_fit("--model.optimizer.init_args.lr", "0.3"))
    summary = read_summary(folder)
    best_epoch, best, final = (summary["val"][k] for k in ("loss_best_epoch", "loss_best",
                                                           "loss_final"))  # fmt: skip
    assert best_epoch < summary["epochs"] and final > (1 + 1e-3) * best  # two figures to tell apart
    checkpoint = torch.load(folder / "checkpoints/best.ckpt", weights_only=True)
    assert checkpoint["mtfilter"]["best"]["epoch"] == [best_epoch]
    for name, expected in (("best", best), ("last", final)):
        validated = cli(["validate", "--model.optimizer.init_args.lr", "0.3", "--ckpt_path",
                         str(folder / "checkpoints" / f"{name}.ckpt")])  # fmt: skip
        value = float(validated.trainer.callback_metrics["val/loss"])
        assert value == pytest.approx(expected, rel=1e-6), name


def test_best_checkpoint_loads_into_the_module_for_library_use(tiny_run):
    """Loaded outside any Trainer, the module gives the best epoch's figures on the dataset."""
    folder = log_dir(tiny_run)
    model = BitMappingModule.load_from_checkpoint(folder / "checkpoints/best.ckpt")
    model.eval()
    with torch.no_grad():
        logits = model(torch.arange(16))
    assert logits.shape == (16, 4)
    targets = tiny_run.datamodule.targets
    loss = float(per_bit_loss(logits, targets, model.hparams.loss).mean())
    assert loss == pytest.approx(read_summary(folder)["val"]["loss_best"], rel=1e-6)


def test_resuming_from_last_checkpoint_continues_exactly(run_dir):
    straight = tiny_fit("--trainer.max_epochs", "20")
    first = tiny_fit("--trainer.max_epochs", "12")
    resumed = tiny_fit(
        "--trainer.max_epochs", "20", "--ckpt_path", str(log_dir(first) / "checkpoints/last.ckpt")
    )
    a = state_dict_of(log_dir(straight) / "checkpoints/last.ckpt")
    b = state_dict_of(log_dir(resumed) / "checkpoints/last.ckpt")
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
    summary, reference = read_summary(log_dir(resumed)), read_summary(log_dir(straight))
    assert summary["epochs"] == 20
    assert summary["val"]["loss_best"] == pytest.approx(reference["val"]["loss_best"], rel=1e-6)
    assert summary["val"]["loss_best_epoch"] == reference["val"]["loss_best_epoch"]
    # the resumed run's TensorBoard folder holds the whole curve
    assert [s for s, _ in read_scalars(log_dir(resumed))["val/loss"]] == list(range(1, 21))


def next_second() -> None:
    """TensorBoard reads a folder's event files in name order, whose first key is the second
    each was made in; within one second the counter that follows sorts as text ("10" < "9").
    A sweep's retry is a new process seconds later; in one test process, wait for a new second
    so that the later attempt's file sorts last, as it does there."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def test_resuming_in_its_own_folder_shows_each_epoch_once(run_dir):
    """As a sweep resumes a run: the same folder, from a checkpoint older than the last epochs
    the stopped process logged (epochs 9-12 here), which are hidden, not shown twice."""
    here = ["--trainer.logger.init_args.save_dir", "run", "--trainer.logger.init_args.name", "",
            "--trainer.logger.init_args.version", ""]  # fmt: skip
    folder = run_dir / "run"
    tiny_fit(*here, "--trainer.max_epochs", "8")
    shutil.copy(folder / "checkpoints/last.ckpt", run_dir / "epoch8.ckpt")
    tiny_fit(
        *here, "--trainer.max_epochs", "12", "--ckpt_path", str(folder / "checkpoints/last.ckpt")
    )
    next_second()
    tiny_fit(*here, "--trainer.max_epochs", "20", "--ckpt_path", str(run_dir / "epoch8.ckpt"))
    straight = read_scalars(log_dir(tiny_fit("--trainer.max_epochs", "20")))["val/loss"]
    shown = read_scalars(folder)["val/loss"]
    assert [epoch for epoch, _ in shown] == list(range(1, 21))
    assert [value for _, value in shown] == pytest.approx([value for _, value in straight])


def test_a_restart_without_checkpoint_in_its_own_folder_shows_each_epoch_once(run_dir):
    """As a sweep retries a run that stopped before its first checkpoint: the same folder, from
    scratch; the stopped attempt's curve (epochs 1-12) is hidden, not drawn under the new one."""
    here = ["--trainer.logger.init_args.save_dir", "run", "--trainer.logger.init_args.name", "",
            "--trainer.logger.init_args.version", "", "--seed_everything", "1"]  # fmt: skip
    tiny_fit(*here, "--trainer.max_epochs", "12", "--seed_everything", "2")  # another curve
    next_second()
    tiny_fit(*here, "--trainer.max_epochs", "8")
    straight = read_scalars(
        log_dir(tiny_fit("--trainer.max_epochs", "8", "--seed_everything", "1"))
    )
    shown = read_scalars(run_dir / "run")["val/loss"]
    assert [epoch for epoch, _ in shown] == list(range(1, 9))
    assert [value for _, value in shown] == pytest.approx([v for _, v in straight["val/loss"]])


def test_checkpoint_writes_are_bounded_however_often_the_loss_improves(run_dir, monkeypatch):
    run = tiny_fit("--trainer.max_epochs", "150", "--checkpoint.every_n_seconds", "1e9")
    callback = run.trainer.checkpoint_callback
    assert callback.num_writes == 1  # the run is shorter than every_n_seconds: only the end
    # A clock that ticks one second per reading: an epoch reads it once, a write twice, so a
    # write takes 1 s and at most 20% of the time means the next one 5 epochs after.
    ticks = itertools.count()
    monkeypatch.setattr(_checkpoint, "time", SimpleNamespace(monotonic=lambda: next(ticks)))
    eager = tiny_fit(
        "--trainer.max_epochs",
        "150",
        "--checkpoint.every_n_seconds",
        "0",
        "--checkpoint.max_write_fraction",
        "0.2",
    )
    writes = eager.trainer.checkpoint_callback.num_writes
    # about 150 / 5 + the final write: the write-time share, not the improvements, limits it
    assert 25 <= writes <= 35


def test_stacked_seeds_give_one_summary_and_tensorboard_run_per_replica(run_dir):
    run = tiny_fit("--data.seeds", "[3, 5]")
    folder = log_dir(run)
    top = read_summary(folder)
    assert top["seeds"] == [3, 5]
    for seed in (3, 5):
        replica = read_summary(folder / f"seed_{seed}")
        assert replica["seed"] == seed and replica["epochs"] == 50
        curve = read_scalars(folder / f"seed_{seed}")["val/loss"]
        assert replica["val"]["loss_best"] == pytest.approx(min(v for _, v in curve), rel=1e-6)
    alone = read_summary(log_dir(tiny_fit("--seed_everything", "5")))
    assert read_summary(folder / "seed_5")["val"]["loss_best"] == pytest.approx(
        alone["val"]["loss_best"], rel=1e-5
    )


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_state(run_dir):
    from mtfilter import NonFiniteLossError

    # lr explodes after epoch 20: the loss turns NaN soon after
    args = [
        "--model.optimizer",
        "torch.optim.SGD",
        "--model.optimizer.lr",
        "0.5",
        "--model.loss",
        "bce",
        "--checkpoint.every_n_seconds",
        "0",
        "--checkpoint.max_write_fraction",
        "1",
        "--model.lr_scheduler",
        "torch.optim.lr_scheduler.MultiStepLR",
        "--model.lr_scheduler.milestones",
        "[20]",
        "--model.lr_scheduler.gamma",
        "1e12",
    ]
    with pytest.raises(NonFiniteLossError, match="became (nan|inf|non-finite)"):
        tiny_fit(*args)
    folder = run_dir / "lightning_logs/version_0"
    summary = read_summary(folder)
    assert summary["status"] == "diverged" and "NonFiniteLossError" in summary["error"]
    assert summary["val"]["loss_best_epoch"] <= 21 and math.isfinite(summary["val"]["loss_best"])
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(folder / "checkpoints" / name, weights_only=True)
        assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values()), name
    assert torch.load(folder / "checkpoints/last.ckpt", weights_only=True)["epoch"] <= 21


def test_first_interrupt_finishes_the_epoch_and_ends_cleanly(run_dir, capsys):
    ctrl_c = {"class_path": "tests.helpers.signals.CtrlCAtEpoch", "init_args": {"epoch": 5}}
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(TINY), "--trainer.enable_model_summary", "false",
              "--trainer.callbacks", json.dumps([ctrl_c])])  # fmt: skip
    assert exit_info.value.code == 130  # interrupted, as a sweep's Ctrl-C
    folder = run_dir / "lightning_logs" / "version_0"
    summary = read_summary(folder)
    assert summary["status"] == "stopped" and summary["epochs"] == 6
    last = torch.load(folder / "checkpoints/last.ckpt", weights_only=True)
    assert last["mtfilter"]["epoch_log"]["epochs"].tolist() == [1, 2, 3, 4, 5, 6]
    printed = capsys.readouterr().out  # what it wrote, and how to go on
    assert f"fit stopped: {Path('lightning_logs/version_0')}" in printed
    assert f"resume: mtfilter fit --config {folder.relative_to(run_dir) / 'config.yaml'}" in printed


def test_a_ctrl_c_in_the_last_epoch_still_completes(run_dir):
    ctrl_c = {"class_path": "tests.helpers.signals.CtrlCAtEpoch", "init_args": {"epoch": 49}}
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(TINY), "--trainer.callbacks", json.dumps([ctrl_c])])
    assert exit_info.value.code == 0
    assert read_summary(run_dir / "lightning_logs" / "version_0")["status"] == "completed"


def test_a_fit_says_what_it_wrote(run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(TINY), "--trainer.max_epochs", "3"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    folder = Path("lightning_logs/version_0")
    for line in (
        f"fit completed: {folder}",
        "best val/loss",
        str(folder / "summary.json"),
        str(folder / "checkpoints" / "best.ckpt"),
        f"tensorboard --logdir {folder}",
    ):
        assert line in printed, line  # fmt: skip
    for written in ("summary.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run_dir / folder / written).is_file()


def test_predict_writes_probabilities(tiny_run):
    run = cli(["predict", "--ckpt_path", str(log_dir(tiny_run) / "checkpoints/best.ckpt")])
    predictions = torch.load(log_dir(run) / "predictions.pt", weights_only=True)
    assert predictions["probabilities"].shape == (1, 16, 4)
    assert predictions["indices"].tolist() == list(range(16))


def test_progress_shows_a_bar_on_a_terminal_and_plain_lines_without(run_dir, monkeypatch, capsys):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tiny_fit("--progress.refresh_s", "0")
    assert "epoch" not in capsys.readouterr().err  # no terminal, a short fit: no line is due
    run = tiny_fit("--progress.log_every_s", "1e-9", "--convergence.patience", "10",
                   "--convergence.check_every", "5", "--convergence.lr_drops", "1")  # fmt: skip
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    epochs = read_summary(log_dir(run))["epochs"]
    assert len(lines) == epochs and "\r" not in "".join(lines)  # one plain line per epoch here
    assert lines[0].startswith("epoch 1 (until converged, at most 50), ")
    for part in ("min, ", "epochs/s, ", "best val/loss 0.", "lr drops ", "converged 0 of 1"):
        assert part in lines[0], part
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    tiny_fit("--progress.refresh_s", "0")
    shown = terminal.getvalue()
    assert "50/50" in shown and "best val/loss" in shown
    terminal.truncate(0)
    # a run that may end at convergence: no total, so no ETA to max_epochs
    tiny_fit("--progress.refresh_s", "0", "--convergence.patience", "10")
    shown = terminal.getvalue()
    assert "until converged, at most 50" in shown and "/50" not in shown
    terminal.truncate(0)
    tiny_fit("--progress.refresh_s", "0", "--trainer.enable_progress_bar", "false")
    assert "epoch" not in terminal.getvalue()  # switched off: Lightning's own flag is honoured


def test_best_weights_tracked_on_host_and_on_device_agree(run_dir, monkeypatch):
    """The CPU path (decide in Python) and the GPU path (torch.where) keep the same weights."""
    from mtfilter.train.callbacks import BestEpochCheckpoint

    # a high learning rate: the replicas' losses wobble and peak at different epochs
    args = (
        "--data.seeds",
        "[0, 1, 2]",
        "--trainer.max_epochs",
        "40",
        "--model.optimizer.lr",
        "0.3",
    )
    host = state_dict_of(log_dir(tiny_fit(*args)) / "checkpoints/best.ckpt")
    monkeypatch.setattr(BestEpochCheckpoint, "_track_on_host", BestEpochCheckpoint._track_on_device)
    device = torch.load(log_dir(tiny_fit(*args)) / "checkpoints/best.ckpt", weights_only=True)
    for name, tensor in host.items():
        torch.testing.assert_close(device["state_dict"][name], tensor, msg=name)
    epochs = device["mtfilter"]["best"]["epoch"]
    assert len(set(epochs)) > 1  # replicas improved at different epochs: mixed updates exercised


def test_each_stacked_replica_trains_exactly_like_the_separate_run_with_its_seed(run_dir):
    stacked = state_dict_of(log_dir(tiny_fit("--data.seeds", "[3, 5]")) / "checkpoints/last.ckpt")
    for replica, seed in enumerate((3, 5)):
        alone_run = tiny_fit("--seed_everything", str(seed))
        alone = state_dict_of(log_dir(alone_run) / "checkpoints/last.ckpt")
        for name, tensor in alone.items():
            if not tensor.is_floating_point():
                continue  # BatchNorm's step counter
            torch.testing.assert_close(
                stacked[name].view(2, -1)[replica], tensor.view(-1), msg=f"{name} of seed {seed}"
            )


def test_bf16_mixed_precision_trains_and_logs_in_float32(run_dir):
    run = tiny_fit("--trainer.precision", "bf16-mixed")
    summary = read_summary(log_dir(run))
    assert summary["status"] == "completed" and math.isfinite(summary["val"]["loss_best"])
    assert run.model.epoch_log.state_dict()["values"].dtype == torch.float64  # host history
    assert run.model.epoch_log._pending.dtype == torch.float32


def test_tf32_switch_sets_the_matmul_precision(run_dir):
    try:
        tiny_fit("--float32_matmul_precision", "high", "--trainer.max_epochs", "1")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision("highest")
