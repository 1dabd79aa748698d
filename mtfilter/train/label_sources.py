"""Multi-label datasets from where they live: arrays in code, a CSV, `.npz` or `.pt` file, or
MULAN's yeast as the `river` package ships it. Every source is checked once, in one line naming the
column, before anything is split or trained (`MultiLabelDataModule` does the rest)."""

import csv
import gzip
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtfilter.errors import ConfigError

# river ships yeast from 0.26 on (BSD-3; 2,417 rows, 103 features, 14 labels, no split)
YEAST_EXTRA = "pip install 'mtfilter[data]'  (river >= 0.26, which ships yeast)"
YEAST_LABELS = [f"Class{i}" for i in range(1, 15)]


@dataclass(frozen=True)
class LabelledData:
    """A whole multi-label dataset, checked: (N, F) finite float inputs, (N, T) labels in {0, 1}."""

    inputs: Tensor  # (N, F) float32
    labels: Tensor  # (N, T) float32, 0 or 1
    label_names: list[str]
    feature_names: list[str]
    name: str  # where it came from, for messages


def from_arrays(
    inputs: Any,
    labels: Any,
    label_names: list[str] | None = None,
    feature_names: list[str] | None = None,
    name: str = "the arrays",
) -> LabelledData:
    """Check and hold (N, F) inputs and (N, T) labels given as tensors, NumPy arrays or lists."""
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float64)).float()
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    if x.dim() != 2 or y.dim() != 2:
        raise ConfigError(
            f"{name}: inputs must be (samples, features) and labels (samples, labels), got "
            f"shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"{name}: {x.shape[0]} rows of inputs but {y.shape[0]} rows of labels")
    if x.shape[0] == 0 or x.shape[1] == 0 or y.shape[1] == 0:
        raise ConfigError(f"{name}: no samples, features or labels (shapes {tuple(x.shape)}, "
                          f"{tuple(y.shape)})")  # fmt: skip
    feature_names = feature_names or [f"feature {j}" for j in range(x.shape[1])]
    label_names = label_names or [f"label {j}" for j in range(y.shape[1])]
    _check_finite(x, feature_names, name)
    _check_binary(y, label_names, name)
    return LabelledData(x, y.float(), list(label_names), list(feature_names), name)


def read(dataset: str, label_columns: list[str] | None = None) -> LabelledData:
    """`yeast`, or a `.csv` (with a header; `label_columns` name the labels, every other
    column is a feature), `.npz` or `.pt` file holding `inputs` and `labels`."""
    if dataset == "yeast":
        return _yeast(label_columns)
    path = Path(dataset)
    suffixes = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffixes not in (".csv", ".csv.gz", ".npz", ".pt"):
        raise ConfigError(
            f"data.dataset={dataset!r}: not a dataset this module reads: 'yeast', or a .csv, "
            ".csv.gz, .npz or .pt file"
        )
    if not path.is_file():
        raise ConfigError(f"data.dataset={dataset!r}: no such file")
    if suffixes in (".csv", ".csv.gz"):
        if not label_columns:
            raise ConfigError(
                f"data.dataset={dataset!r} is a CSV: name its label columns in data.label_columns "
                f"(its columns: {_preview(_header(path))})"
            )
        return _csv(path, label_columns, f"data.dataset={dataset!r}")
    if label_columns:
        raise ConfigError(
            f"data.label_columns applies to CSV files; {dataset!r} holds `inputs` and `labels`"
        )
    return _arrays_file(path, suffixes, f"data.dataset={dataset!r}")


def _yeast(label_columns: list[str] | None) -> LabelledData:
    spec = importlib.util.find_spec("river")  # its location only: importing river is slow
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "yeast.csv.gz"
    if path is None or not path.is_file():
        found = "not installed" if spec is None else "installed without yeast (older than 0.26)"
        raise ConfigError(f"data.dataset=yeast needs the river package ({found}): {YEAST_EXTRA}")
    return _csv(path, label_columns or YEAST_LABELS, "data.dataset=yeast")


def _header(path: Path) -> list[str]:
    with _open_text(path) as file:
        return next(csv.reader(file), [])


def _open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def _csv(path: Path, label_columns: list[str], name: str) -> LabelledData:
    with _open_text(path) as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if not header:
            raise ConfigError(f"{name}: the file is empty (a header row of column names first)")
        missing = [c for c in label_columns if c not in header]
        if missing:
            raise ConfigError(
                f"{name}: no label column {', '.join(map(repr, missing))} (its columns: "
                f"{_preview(header)})"
            )
        if len(set(label_columns)) != len(label_columns):
            raise ConfigError(f"data.label_columns names a column twice: {label_columns}")
        rows = []
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ConfigError(
                    f"{name}: line {number} has {len(row)} values, the header {len(header)}"
                )
            rows.append(row)
    try:
        values = np.array(rows, dtype=np.float64) if rows else np.zeros((0, len(header)))
    except ValueError:
        raise ConfigError(_first_non_number(rows, header, name)) from None
    label_index = [header.index(c) for c in label_columns]
    feature_index = [j for j in range(len(header)) if j not in label_index]
    features = [header[j] for j in feature_index]
    return from_arrays(values[:, feature_index], values[:, label_index], list(label_columns),
                       features, name)  # fmt: skip


def _first_non_number(rows: list[list[str]], header: list[str], name: str) -> str:
    for number, row in enumerate(rows, start=2):
        for column, cell in zip(header, row, strict=True):
            try:
                float(cell)
            except ValueError:
                return f"{name}: line {number}, column {column!r}: {cell!r} is not a number"
    return f"{name}: a value is not a number"


def _arrays_file(path: Path, suffix: str, name: str) -> LabelledData:
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                content = {key: archive[key] for key in archive.files}
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file means the same to the user
        raise ConfigError(f"{name}: not readable ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict) or not {"inputs", "labels"} <= set(content):
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ConfigError(f"{name}: needs `inputs` and `labels` arrays, holds {keys}")
    label_names = content.get("label_names")
    label_names = None if label_names is None else [str(n) for n in list(label_names)]
    inputs, labels = content["inputs"], content["labels"]
    if torch.is_tensor(inputs):
        inputs, labels = inputs.numpy(), torch.as_tensor(labels).numpy()
    return from_arrays(inputs, labels, label_names, name=name)


def _check_finite(inputs: Tensor, names: list[str], name: str) -> None:
    bad = ~inputs.isfinite()
    if bool(bad.any()):
        column = int(bad.any(0).nonzero()[0])
        rows = bad[:, column].nonzero()[:, 0].tolist()
        raise ConfigError(
            f"{name}: feature {names[column]!r} has {len(rows)} NaN or infinite value(s) (first "
            f"in sample {rows[0]}); fill or drop them first"
        )


def _check_binary(labels: Tensor, names: list[str], name: str) -> None:
    bad = (labels != 0) & (labels != 1)
    if bool(bad.any()):
        column = int(bad.any(0).nonzero()[0])
        row = int(bad[:, column].nonzero()[0])
        value = labels[row, column].item()
        shown = "NaN" if math.isnan(value) else f"{value:g}"
        raise ConfigError(
            f"{name}: label {names[column]!r} has values outside {{0, 1}} ({shown} in sample "
            f"{row}): labels must be 0 or 1"
        )


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
