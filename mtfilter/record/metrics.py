"""The figures a run records, defined once. From `FIGURES` follow the per-epoch row and its
TensorBoard tags, what `validate` and `test` log, what `summary.json` holds, TensorBoard's
HPARAMS metrics and the report's columns: adding a figure is one entry here.

Standard library only (tensors appear as annotations): the report reads the spec without
loading torch.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from torch import Tensor


class Evaluation(NamedTuple):
    """Figures of one evaluation pass, per replica: loss and accuracy (R, T), exact match (R,);
    for the F1 figures, the (3, R, T) counts of true positives, false positives and false
    negatives (None where no figure needs them)."""

    loss: "Tensor"
    accuracy: "Tensor"
    exact_match: "Tensor"
    counts: "Tensor | None" = None


class EpochFigures(NamedTuple):
    """What an epoch's figures are computed from (all on the device, per replica R)."""

    train_loss: "Tensor"  # (R, T) mean over the epoch's training samples, training mode
    batch_losses: "Tensor"  # (S, R) mean per-bit loss of each step's batch, before the step
    evaluation: Evaluation  # the whole dataset in eval mode, at the end of the epoch


@dataclass(frozen=True)
class Figure:
    """One recorded figure.

    Args:
        tag: TensorBoard tag, `{stage}/{name}`; with `per_bit` also `{tag}/bit_{i}`.
        compute: From the epoch's `EpochFigures`: (R, T) when `per_bit` (the figure is the mean
            over bits), else (R,).
        per_bit: Whether the figure has one value per bit.
        evaluation: Whether `compute` needs only `evaluation` (then `validate` and `test` log
            it too, under their own stage).
        best: Whether the summary holds its lowest value and that epoch.
        final: Whether the summary holds its last value.
        at_best: Whether the summary holds its value at the epoch of the lowest `val/loss`
            (`BEST_EPOCH_OF`, the epoch `best.ckpt` holds by default).
        name: Its name in the summary's `{stage}` section (default: the tag's last part).
        column: Its prefix in results.csv and TensorBoard's HPARAMS tab (default:
            `{stage}_{name}`, e.g. `val_loss`).
    """

    tag: str
    compute: Callable[[EpochFigures], "Tensor"]
    per_bit: bool = False
    evaluation: bool = False
    best: bool = False
    final: bool = False
    at_best: bool = False
    name: str | None = None
    column: str = ""

    def __post_init__(self) -> None:
        if not self.column:
            object.__setattr__(self, "column", f"{self.stage}_{self.summary_name}")

    @property
    def stage(self) -> str:
        return self.tag.split("/", 1)[0]

    @property
    def summary_name(self) -> str:
        return self.name or self.tag.split("/", 1)[1]

    def tags(self, num_bits: int) -> list[str]:
        """The epoch row's keys of this figure: the tag, then one per bit."""
        bits = [f"{self.tag}/bit_{i}" for i in range(num_bits)] if self.per_bit else []
        return [self.tag, *bits]


FIGURES: list[Figure] = [
    Figure("train/loss", lambda f: f.train_loss, per_bit=True, best=True, final=True),
    # the original experiment's "best": the lowest loss of a single training batch
    Figure(
        "train/batch_loss_min",
        lambda f: f.batch_losses.amin(0),
        best=True,
        name="batch_loss",
        column="batch_loss",
    ),  # fmt: skip
    Figure(
        "val/loss",
        lambda f: f.evaluation.loss,
        per_bit=True,
        evaluation=True,
        best=True,
        final=True,
    ),  # fmt: skip
    Figure("val/acc", lambda f: f.evaluation.accuracy, per_bit=True, evaluation=True, final=True),
    Figure("val/exact_match", lambda f: f.evaluation.exact_match, evaluation=True, final=True),
    # Errors that mean the same under every loss (l1, bce, mse): the figures to compare recipes
    # on. Their own minimum over epochs, and their value where the loss was lowest.
    Figure(
        "val/bit_error",
        lambda f: 1 - f.evaluation.accuracy,
        per_bit=True,
        evaluation=True,
        best=True,
        final=True,
        at_best=True,
    ),  # fmt: skip
    Figure(
        "val/exact_match_error",
        lambda f: 1 - f.evaluation.exact_match,
        evaluation=True,
        best=True,
        final=True,
        at_best=True,
    ),  # fmt: skip
]


def _f1(counts: "Tensor | None", micro: bool = False) -> "Tensor":
    """F1 from (3, R, T) counts: per label (R, T), or micro-averaged (R,), pooled over labels;
    0 where a label has no positive and no prediction, as torchmetrics' `multilabel_f1_score`
    (whose macro average is the per-label mean: the per-bit figure's own mean)."""
    assert counts is not None, "F1 needs the evaluation's counts (`evaluate(counts=True)`)"
    tp, fp, fn = counts.sum(2) if micro else counts
    denominator = 2 * tp + fp + fn
    return (2 * tp / denominator.clamp(min=1)).where(denominator > 0, 0)


# The multi-label field's own figures, for data with labels (`MultiLabelDataModule`): recorded
# beside FIGURES where the model's `label_figures` is on. Higher is better: no `best`.
LABEL_FIGURES: list[Figure] = [
    # per label (`val/f1/bit_i`); its mean over labels (`val/f1`) is the macro-averaged F1
    Figure(
        "val/f1",
        lambda f: _f1(f.evaluation.counts),
        per_bit=True,
        evaluation=True,
        final=True,
        at_best=True,
    ),  # fmt: skip
    Figure(
        "val/f1_micro",
        lambda f: _f1(f.evaluation.counts, micro=True),
        evaluation=True,
        final=True,
        at_best=True,
    ),  # fmt: skip
]


def figures(label_figures: bool = False) -> list[Figure]:
    """What a run records: FIGURES, and LABEL_FIGURES for data with labels."""
    return FIGURES + LABEL_FIGURES if label_figures else FIGURES


# The figure whose lowest epoch `at_best` values are read at.
BEST_EPOCH_OF = "val/loss"


def epoch_keys(num_bits: int, figures: list[Figure] | None = None) -> list[str]:
    """The keys of the epoch row, in order."""
    return [tag for figure in figures or FIGURES for tag in figure.tags(num_bits)]


def epoch_row(inputs: EpochFigures, figures: list[Figure] | None = None) -> "Tensor":
    """The (R, K) row of one epoch in the order of `epoch_keys`."""
    import torch

    parts = []
    for figure in figures or FIGURES:
        values = figure.compute(inputs).float()
        parts += [values.mean(1, keepdim=True), values] if figure.per_bit else [values[:, None]]
    return torch.cat(parts, dim=1)


def evaluation_metrics(
    stage: str, evaluation: Evaluation, replica: int, figures: list[Figure] | None = None
) -> dict[str, Any]:
    """What `validate` or `test` logs for one replica: the evaluation figures under `stage`."""
    inputs = EpochFigures(None, None, evaluation)  # type: ignore[arg-type]
    metrics: dict[str, Any] = {}
    for figure in figures or FIGURES:
        if not figure.evaluation:
            continue
        values = figure.compute(inputs)[replica]
        tag = f"{stage}/{figure.tag.split('/', 1)[1]}"
        metrics[tag] = values.mean() if figure.per_bit else values
        if figure.per_bit:
            metrics.update({f"{tag}/bit_{i}": value for i, value in enumerate(values)})
    return metrics
