"""The figure a report compares (`metric`): its columns in results.csv, its words, its curve."""

from dataclasses import dataclass
from typing import Any, Literal

MetricName = Literal["val", "train", "batch", "bit_error", "exact_match_error"]


@dataclass(frozen=True)
class Metric:
    """One comparable figure of a run: its best value is `{column}_best` in results.csv."""

    name: str
    column: str  # results.csv prefix, from metrics.FIGURES
    label: str  # axis and table label
    text: str  # what it is, for results.md
    curve_tag: str  # its TensorBoard tag
    floor_column: str | None = None  # the representational floor of the same figure

    def best(self, row: dict[str, Any]) -> Any:
        return row.get(f"{self.column}_best")

    def measured(self, row: dict[str, Any]) -> bool:
        """Whether a results row is a completed run with this figure: the rows compared."""
        return row.get("status") == "completed" and self.best(row) is not None

    def best_epoch(self, row: dict[str, Any]) -> Any:
        return row.get(f"{self.column}_best_epoch")

    @property
    def is_loss(self) -> bool:
        return self.floor_column is None


METRICS: dict[str, Metric] = {
    "val": Metric(
        "val", "val_loss", "val loss",
        "the lowest full-dataset loss (mean per-bit loss, eval mode) over all epochs, and the "
        "epoch it was reached", "val/loss",
    ),
    "train": Metric(
        "train", "train_loss", "train loss",
        "the lowest epoch-mean training loss (mean per-bit loss, training mode) over all "
        "epochs, and the epoch it was reached", "train/loss",
    ),
    "batch": Metric(
        "batch", "batch_loss", "batch loss",
        "the lowest loss of a single training batch (mean per-bit loss, training mode, before "
        "the step) over all steps, the original experiment's figure, and its epoch",
        "train/batch_loss_min",
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
}  # fmt: skip

# Shown beside the compared figure in every table: the loss and the two loss-free errors, each
# its own minimum over epochs.
SIDE_FIGURES = ("val", "bit_error", "exact_match_error")


def metric(name: str) -> Metric:
    if name not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {name!r}")
    return METRICS[name]
