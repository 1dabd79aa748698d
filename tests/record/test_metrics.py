"""The figure specification: every place a figure appears follows from its one entry."""

import csv

import pytest
import torch

from mtfilter.record import metrics
from mtfilter.record.metrics import Figure
from mtfilter.report import report
from tests.helpers import cli, log_dir, read_scalars, read_summary, tiny_fit

# A figure the spec does not have: the share of wrong bits, per bit and mean.
ERROR = Figure("val/error", lambda f: 1 - f.evaluation.accuracy, per_bit=True, evaluation=True,
               best=True, final=True)  # fmt: skip


@pytest.fixture
def with_error(monkeypatch):
    monkeypatch.setattr(metrics, "FIGURES", [*metrics.FIGURES, ERROR])


def test_the_epoch_row_follows_the_spec():
    keys = metrics.epoch_keys(num_bits=2)
    assert keys == ["train/loss", "train/loss/bit_0", "train/loss/bit_1", "train/batch_loss_min",
                    "val/loss", "val/loss/bit_0", "val/loss/bit_1", "val/acc", "val/acc/bit_0",
                    "val/acc/bit_1", "val/exact_match", "val/bit_error", "val/bit_error/bit_0",
                    "val/bit_error/bit_1", "val/exact_match_error"]  # fmt: skip
    evaluation = metrics.Evaluation(torch.rand(3, 2), torch.rand(3, 2), torch.rand(3))
    inputs = metrics.EpochFigures(torch.rand(3, 2), torch.rand(4, 3), evaluation)
    row = metrics.epoch_row(inputs)
    assert row.shape == (3, len(keys))
    torch.testing.assert_close(row[:, keys.index("val/acc")], evaluation.accuracy.mean(1))
    torch.testing.assert_close(row[:, keys.index("train/batch_loss_min")],
                               inputs.batch_losses.amin(0))  # fmt: skip


def test_adding_a_figure_is_one_entry(run_dir, with_error):
    """With the one entry `ERROR` added, the figure is in the epoch log and TensorBoard, in what
    validate logs, in the summary and TensorBoard's HPARAMS tab, and in the report."""
    folder = log_dir(tiny_fit("--trainer.max_epochs", "5"))
    scalars = read_scalars(folder)
    for tag in ("val/error", "val/error/bit_3"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3, 4, 5]
    accuracy, error = scalars["val/acc"][-1][1], scalars["val/error"][-1][1]
    assert error == pytest.approx(1 - accuracy, abs=1e-6)
    val = read_summary(folder)["val"]
    assert val["error_final"] == pytest.approx(error) and len(val["error_best_per_bit"]) == 4
    assert scalars["best/val_error"][0][1] == pytest.approx(val["error_best"])
    validated = cli(["validate", "--ckpt_path", str(folder / "checkpoints/best.ckpt")])
    assert "val/error/bit_0" in validated.trainer.callback_metrics


def test_a_figure_added_after_a_checkpoint_still_resumes(run_dir, monkeypatch):
    first = log_dir(tiny_fit("--trainer.max_epochs", "4"))
    monkeypatch.setattr(metrics, "FIGURES", [*metrics.FIGURES, ERROR])
    resumed = tiny_fit("--trainer.max_epochs", "6", "--ckpt_path",
                       str(first / "checkpoints/last.ckpt"))  # fmt: skip
    epochs = [step for step, _ in read_scalars(log_dir(resumed))["val/error"]]
    assert epochs == [1, 2, 3, 4, 5, 6]  # NaN where the old history has none, then values
    assert read_summary(log_dir(resumed))["val"]["error_best_epoch"] in (5, 6)


def test_the_reports_columns_follow_the_spec(tmp_path, monkeypatch):
    from tests.helpers.fake_sweeps import fake_sweep

    monkeypatch.setattr(metrics, "FIGURES", [*metrics.FIGURES, ERROR])
    folder = fake_sweep(tmp_path, stacked=True)
    report(folder)
    with open(folder / "results.csv") as f:
        header = next(csv.reader(f))
    assert {"val_error_best", "val_error_best_epoch", "val_error_final"} <= set(header)


def test_the_multilabel_figures_are_torchmetrics_definitions():
    """Hamming loss, subset accuracy and F1 (per label, macro, micro) of a small case, one row
    per replica, a label that no sample has and no prediction says among them (F1 0 there)."""
    from torchmetrics.functional.classification import (
        multilabel_exact_match,
        multilabel_f1_score,
        multilabel_hamming_distance,
    )

    from mtfilter.record.evaluation import evaluate

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 12, 4, generator=generator)  # (R, N, T)
    targets = torch.randint(0, 2, (2, 12, 4), generator=generator).float()
    logits[..., 3], targets[..., 3] = -1.0, 0.0  # label 3: no positive, none predicted
    evaluation = evaluate(lambda inputs: logits, None, targets, "bce", counts=True)
    epoch = metrics.EpochFigures(None, None, evaluation)
    figures = [figure for figure in metrics.figures(label_figures=True) if figure.evaluation]
    row = dict(zip(metrics.epoch_keys(4, figures), metrics.epoch_row(epoch, figures).T,
                   strict=True))  # fmt: skip
    for r in range(2):
        p, y = torch.sigmoid(logits[r]), targets[r].long()
        torch.testing.assert_close(row["val/bit_error"][r], multilabel_hamming_distance(p, y, 4))
        torch.testing.assert_close(row["val/exact_match"][r], multilabel_exact_match(p, y, 4))
        per_label = multilabel_f1_score(p, y, 4, average=None)
        assert float(per_label[3]) == 0
        for t in range(4):
            torch.testing.assert_close(row[f"val/f1/bit_{t}"][r], per_label[t])
        torch.testing.assert_close(row["val/f1"][r], multilabel_f1_score(p, y, 4, average="macro"))
        micro = multilabel_f1_score(p, y, 4, average="micro")
        torch.testing.assert_close(row["val/f1_micro"][r], micro)
        assert 0 < float(micro) < 1  # a real mix of right and wrong labels
