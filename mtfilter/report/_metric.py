"""The figure a report compares (`metric`): its columns in results.csv, its words, its curve."""

from dataclasses import dataclass
from typing import Any, Literal

MetricName = Literal[
    "val", "train", "batch", "bit_error", "exact_match_error", "test_bit_error",
    "test_exact_match_error",
]  # fmt: skip
# Read on the test split, which no choice may look at (select on the validation figures)
TEST_METRICS = ("test_bit_error", "test_exact_match_error")


@dataclass(frozen=True)
class Metric:
    """One comparable figure of a run: its value is `{column}_best` in results.csv (its
    lowest over epochs) unless `value_column` says otherwise.

    Args:
        floor_column: results.csv's column of the representational floor of the same figure
            (None: no floor bounds it).
        value_column: Its value's column, for a figure read once (the test split's).
        epoch_column: The column of the epoch its value is from (default `{column}_best_epoch`).
        is_loss: A loss (log scale), not an error that reaches 0.
    """

    name: str
    column: str  # results.csv prefix, from metrics.FIGURES
    label: str  # axis and table label
    text: str  # what it is, for results.md
    curve_tag: str  # its TensorBoard tag (of the test figures: the validation curve)
    floor_column: str | None = None
    value_column: str | None = None
    epoch_column: str | None = None
    is_loss: bool = False

    def best(self, row: dict[str, Any]) -> Any:
        return row.get(self.value_column or f"{self.column}_best")

    def measured(self, row: dict[str, Any]) -> bool:
        """Whether a results row is a completed run with this figure: the rows compared."""
        return row.get("status") == "completed" and self.best(row) is not None

    def best_epoch(self, row: dict[str, Any]) -> Any:
        return row.get(self.epoch_column or f"{self.column}_best_epoch")

    @property
    def floor_name(self) -> str | None:
        """The `Floor` field of its floor (`bit_error`, `exact_match_error`), if it has one."""
        return None if self.floor_column is None else self.floor_column.removeprefix("floor_")


METRICS: dict[str, Metric] = {
    "val": Metric(
        "val", "val_loss", "val loss",
        "the lowest full-dataset loss (mean per-bit loss, eval mode) over all epochs, and the "
        "epoch it was reached", "val/loss", is_loss=True,
    ),
    "train": Metric(
        "train", "train_loss", "train loss",
        "the lowest epoch-mean training loss (mean per-bit loss, training mode) over all "
        "epochs, and the epoch it was reached", "train/loss", is_loss=True,
    ),
    "batch": Metric(
        "batch", "batch_loss", "batch loss",
        "the lowest loss of a single training batch (mean per-bit loss, training mode, before "
        "the step) over all steps, the original experiment's figure, and its epoch",
        "train/batch_loss_min", is_loss=True,
    ),
    "bit_error": Metric(
        "bit_error", "val_bit_error", "bit error",
        "the lowest share of wrong bits over the whole dataset (eval mode, sigmoid > 0.5) over "
        "all epochs, and the epoch it was reached: the same figure under every loss",
        "val/bit_error", "floor_bit_error",
    ),
    "exact_match_error": Metric(
        "exact_match_error", "val_exact_match_error", "exact-match error",
        "the lowest share of inputs with any wrong bit (eval mode) over all epochs, and the epoch "
        "it was reached: the same figure under every loss",
        "val/exact_match_error", "floor_exact_match_error",
    ),
    # data with a test split (`MultiLabelDataModule`): read once, with the weights of the epoch
    # the best checkpoint chose on validation; the training split's floor does not bound them
    "test_bit_error": Metric(
        "test_bit_error", "test_bit_error", "test Hamming loss",
        "the share of wrong labels on the test split (Hamming loss, eval mode, sigmoid > 0.5), "
        "read once with the weights of the best epoch on validation (`checkpoint.monitor`; "
        "that epoch shown)",
        "val/bit_error", value_column="test_bit_error", epoch_column="split_epoch",
    ),
    "test_exact_match_error": Metric(
        "test_exact_match_error", "test_exact_match_error", "test exact-match error",
        "the share of test samples with any wrong label (1 - subset accuracy), read once with "
        "the weights of the best epoch on validation (`checkpoint.monitor`; that epoch shown)",
        "val/exact_match_error", value_column="test_exact_match_error", epoch_column="split_epoch",
    ),
}  # fmt: skip

# Shown beside the compared figure in every table: the loss and the two loss-free errors, each
# its own minimum over epochs.
SIDE_FIGURES = ("val", "bit_error", "exact_match_error")


def metric(name: str) -> Metric:
    if name not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {name!r}")
    return METRICS[name]
