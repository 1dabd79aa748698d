"""Real multi-label data (`MultiLabelDataModule`): seeded disjoint splits per seed, inputs
standardised with the training split's statistics only, every bad dataset refused in one line
before anything is written, and fits from a CSV and from yeast that report the test split."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtfilter.cli.main import main
from mtfilter.errors import ConfigError
from mtfilter.train.multilabel_data import MultiLabelDataModule
from tests.helpers import CONFIGS

SAMPLES, FEATURES, LABELS = 60, 3, 2


def arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) features on very different scales and (N, T) labels that depend on them."""
    generator = np.random.default_rng(seed)
    inputs = generator.normal(size=(SAMPLES, FEATURES)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -3.0]
    labels = np.stack([inputs[:, 0] > 0, inputs[:, 1] + inputs[:, 2] > 5], axis=1).astype(float)
    return inputs, labels


def write_csv(path: Path, inputs: np.ndarray, labels: np.ndarray) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*(f"x{j}" for j in range(inputs.shape[1])),
                         *(f"y{j}" for j in range(labels.shape[1]))])  # fmt: skip
        writer.writerows(np.concatenate([inputs, labels], axis=1).tolist())
    return path


def test_each_seed_draws_its_own_disjoint_split_and_a_seed_always_the_same():
    inputs, labels = arrays()
    data = MultiLabelDataModule.from_arrays(inputs, labels, seeds=[3, 4])
    splits = data.split_indices  # (S, n) sample numbers per split
    assert [splits[name].shape[1] for name in ("train", "val", "test")] == [36, 12, 12]
    for row in range(2):
        every = torch.cat([splits[name][row] for name in ("train", "val", "test")])
        assert sorted(every.tolist()) == list(range(SAMPLES))  # disjoint, and all of them
    assert not torch.equal(splits["train"][0], splits["train"][1])  # seeds 3 and 4 differ
    again = MultiLabelDataModule.from_arrays(inputs, labels, seeds=[4, 3])  # seeded
    assert torch.equal(again.split_indices["test"][0], splits["test"][1])
    assert torch.equal(again.split_indices["train"][1], splits["train"][0])
    fixed = MultiLabelDataModule.from_arrays(inputs, labels, seeds=[3, 4], split_seed=7)
    assert torch.equal(fixed.split_indices["val"][0], fixed.split_indices["val"][1])


def test_inputs_are_standardised_with_the_training_splits_statistics_only():
    inputs, labels = arrays()
    data = MultiLabelDataModule.from_arrays(inputs, labels, seeds=[1])
    train_rows = data.split_indices["train"][0].numpy()
    mean, std = inputs[train_rows].mean(0), inputs[train_rows].std(0)
    for name in ("train", "val", "test"):
        rows = data.split_indices[name][0].numpy()
        expected = torch.tensor((inputs[rows] - mean) / std, dtype=torch.float32)
        torch.testing.assert_close(data.split(name)[0][0], expected)
    # held-out samples, however extreme, change nothing of the training split's inputs
    extreme = inputs.copy()
    extreme[np.setdiff1d(np.arange(SAMPLES), train_rows)] *= 1000
    moved = MultiLabelDataModule.from_arrays(extreme, labels, seeds=[1])
    torch.testing.assert_close(moved.split("train")[0], data.split("train")[0])
    raw = MultiLabelDataModule.from_arrays(inputs, labels, seeds=[1], standardize=False)
    torch.testing.assert_close(
        raw.split("val")[0][0], torch.tensor(inputs[data.split_indices["val"][0].numpy()]).float()
    )


def test_training_batches_are_each_seeds_own_samples_in_its_own_order():
    inputs, labels = arrays()
    data = MultiLabelDataModule.from_arrays(inputs, labels, seeds=[0, 5], batch_size=10,
                                            standardize=False)  # fmt: skip
    (epoch,) = list(data.train_dataloader())
    assert [x.shape for x, _ in epoch] == [(2, 10, FEATURES)] * 3 + [(2, 6, FEATURES)]
    for row in range(2):
        seen = torch.cat([x[row] for x, _ in epoch])  # (36, F)
        train = torch.tensor(inputs[data.split_indices["train"][row].numpy()]).float()
        assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, train.tolist()))
        labels_seen = torch.cat([y[row] for _, y in epoch])
        pairs = zip(inputs.astype(np.float32).tolist(), labels.tolist(), strict=True)
        by_row = {tuple(x): y for x, y in pairs}
        assert [by_row[tuple(x)] for x in seen.tolist()] == labels_seen.tolist()


def test_a_label_constant_on_a_training_split_is_refused_or_dropped():
    inputs, labels = arrays()
    labels = np.concatenate([labels, np.zeros((SAMPLES, 1))], axis=1)
    with pytest.raises(ConfigError, match="label 'label 2' is 0 on every sample of the training "
                                          "split of seed 0.*drop_constant_labels"):  # fmt: skip
        MultiLabelDataModule.from_arrays(inputs, labels, seeds=[0])
    data = MultiLabelDataModule.from_arrays(inputs, labels, seeds=[0], drop_constant_labels=True)
    assert data.num_bits == 2 and data.label_names == ["label 0", "label 1"]


BAD_DATA = {
    # id: (what is wrong with the CSV, words the message must hold)
    "nan-feature": (lambda x, y: x.__setitem__((4, 1), np.nan), ["'x1'", "NaN or infinite"]),
    "infinite-feature": (lambda x, y: x.__setitem__((9, 0), np.inf), ["'x0'", "sample 9"]),
    "label-not-binary": (lambda x, y: y.__setitem__((7, 1), 2.0), ["'y1'", "outside {0, 1}"]),
    "label-constant-on-train": (lambda x, y: y.__setitem__((slice(None), 0), 1.0),
                                ["'y0'", "is 1 on every sample", "drop_constant_labels"]),
}  # fmt: skip


@pytest.mark.parametrize(("spoil", "words"), list(BAD_DATA.values()), ids=list(BAD_DATA))
def test_bad_data_is_one_line_exit_2_and_nothing_written(spoil, words, run_dir, capsys):
    inputs, labels = arrays()
    spoil(inputs, labels)
    path = write_csv(run_dir / "data.csv", inputs, labels)
    _refused(["--data.dataset", str(path), "--data.label_columns", '["y0", "y1"]'], words,
             run_dir, capsys)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--data.batch_size", "37"], ["batch_size=37", "training split of 36 samples"]),
     (["--data.label_columns", '["y0", "z"]'], ["no label column 'z'", "x0, x1, x2, y0, y1"]),
     (["--model.encoding", "embedding"], ["model.encoding=embedding", "use model.encoding linear"]),
     (["--convergence.stop_at_floor", "true"], ["stop_at_floor", "training split"])],
    ids=["batch-larger-than-train", "label-column-missing", "not-linear", "floor-stop"],
)  # fmt: skip
def test_bad_settings_for_real_data_are_one_line(args, words, run_dir, capsys):
    path = write_csv(run_dir / "data.csv", *arrays())
    base = ["--data.dataset", str(path), "--data.label_columns", '["y0", "y1"]']
    _refused([*base, *args], words, run_dir, capsys)


def test_yeast_without_river_names_the_extra_to_install(run_dir, capsys, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    _refused(["--data.dataset", "yeast"], ["river package (not installed)", "mtfilter[data]"],
             run_dir, capsys)  # fmt: skip


def _refused(args: list[str], words: list[str], run_dir: Path, capsys) -> None:
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--trainer.max_epochs", "2", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    first, *rest = err.strip().splitlines()
    assert first.startswith("mtfilter: error: ") and len(rest) <= 1, err
    for word in words:
        assert word in first, (word, first)
    assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing written


def test_a_fit_from_a_csv_reports_the_test_split_at_the_best_epoch(run_dir, capsys, caplog):
    path = write_csv(run_dir / "data.csv", *arrays())
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.dataset", str(path), "--data.label_columns", '["y0", "y1"]',
              "--data.batch_size", "12", "--model.hidden_dim", "4", "--model.loss", "bce",
              "--seed_everything", "0", "--data.seeds", "[0, 1]", "--trainer.max_epochs", "30",
              "--trainer.accelerator", "cpu",
              "--trainer.enable_progress_bar", "false"])  # fmt: skip
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert out.count("test split, best epoch's weights (epoch ") == 2, out
    assert any(f"{LABELS} labels, seeds 0, 1" in r.getMessage() for r in caplog.records)
    folder = next((run_dir / "lightning_logs").iterdir())
    summary = json.loads((folder / "seed_1" / "summary.json").read_text())
    test, train = summary["splits"]["test"], summary["splits"]["train"]
    assert 0 <= test["bit_error"] <= 1 and len(test["f1_per_bit"]) == LABELS
    assert test["exact_match"] == pytest.approx(1 - test["exact_match_error"])
    assert train["bit_error"] < 0.5  # it learnt something of the training split
    assert summary["floor"]["needed"] <= 4  # distinct label strings of the training split
    assert "val_f1_at_best" not in summary["val"] and "f1_at_best" in summary["val"]


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("river") is None,
    reason="needs the river package (pip install 'mtfilter[data]')",
)
def test_the_yeast_config_trains_and_prints_test_hamming_loss_and_subset_accuracy(run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "yeast.yaml"), "--trainer.max_epochs", "3",
              "--trainer.accelerator", "cpu",
              "--trainer.enable_progress_bar", "false"])  # fmt: skip
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "Hamming loss (bit error) 0." in out
    assert "subset accuracy 0." in out
    summary = json.loads((run_dir / "lightning_logs" / "version_0" / "summary.json").read_text())
    assert len(summary["splits"]["test"]["f1_per_bit"]) == 14  # yeast's 14 classes
