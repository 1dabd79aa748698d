"""The conflict telemetry: figures of the task gradients' conflict (`conflict_figures`, read off
the shared parameters' per-task Jacobian every `telemetry_interval` steps), and their record,
kept on the device until published and saved in checkpoints so a resumed run reports the
uninterrupted one's."""

import bisect
import math
from typing import Any

import torch
from torch import Tensor

# Names of the conflict figures, in the order of `conflict_figures`'s columns (then per-bit norms).
CONFLICT_KEYS = (
    "conflict/mean_cosine",
    "conflict/min_cosine",
    "conflict/fraction",
    "conflict/grad_norm_mean",
    "conflict/grad_norm_spread",
    "conflict/zero_gradient_tasks",
)


def conflict_figures(matrices: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient-conflict figures of each replica's per-task gradients (R, T, P).

    Returns a (R, 6 + T) row in the order of `CONFLICT_KEYS` then each task's gradient norm,
    and the (R, T, T) cosine matrices. Cosines are over task pairs i < j; a pair conflicts when
    its cosine is negative; the spread is the norms' coefficient of variation (std / mean).

    Exact at any gradient scale float32 holds: each row is divided by its largest entry before
    any square is taken, so nothing underflows (a 1e-25 gradient) or overflows (1e25). A task
    whose gradient is exactly zero has no direction: its cosines are NaN, it is left out of the
    pair figures (NaN when no pair is left) and counted in `zero_gradient_tasks`.
    """
    largest = matrices.abs().amax(dim=2)  # (R, T)
    zero = largest == 0
    scaled = matrices / torch.where(zero, 1.0, largest)[..., None]  # entries in [-1, 1]
    scaled_norms = scaled.norm(dim=2)  # in [1, sqrt(P)] for non-zero rows
    norms = largest * scaled_norms  # (R, T)
    units = scaled / torch.where(zero, 1.0, scaled_norms)[..., None]
    cosines = (units @ units.transpose(1, 2)).clamp(-1.0, 1.0)  # rounding can pass +-1
    undefined = zero[:, :, None] | zero[:, None, :]
    cosines = cosines.masked_fill(undefined, math.nan)  # (R, T, T)
    tasks = matrices.shape[1]
    upper = torch.triu_indices(tasks, tasks, offset=1, device=matrices.device)
    pairs = cosines[:, upper[0], upper[1]]  # (R, T (T-1) / 2), NaN where undefined
    defined = ~pairs.isnan()
    counted = defined.sum(1)  # pairs with a cosine, per replica
    mean_cosine = pairs.nan_to_num(0.0).sum(1) / counted  # NaN when no pair is defined
    min_cosine = pairs.nan_to_num(math.inf).amin(1).masked_fill(counted == 0, math.nan)
    fraction = ((pairs < 0) & defined).sum(1) / counted
    relative = norms / norms.amax(1, keepdim=True)  # the spread is scale-free: no squared 1e30
    spread = relative.std(1, correction=0) / relative.mean(1)
    row = torch.stack(
        [mean_cosine, min_cosine, fraction, norms.mean(1), spread, zero.sum(1).to(norms.dtype)],
        dim=1,
    )
    return torch.cat([row, norms], dim=1), cosines


def conflict_keys(num_tasks: int) -> list[str]:
    """Tags of `conflict_figures`'s columns."""
    return [*CONFLICT_KEYS, *(f"conflict/grad_norm/bit_{i}" for i in range(num_tasks))]


class ConflictRecord:
    """Conflict figures measured since the last publish, kept on the device until then (no
    host sync on the training steps that measure them)."""

    def __init__(self) -> None:
        self._epochs: list[int] = []
        self._rows: list[Tensor] = []  # (R, K) each
        self.latest_cosines: Tensor | None = None  # (R, T, T)
        self.latest_row: Tensor | None = None
        self._sum: Tensor | None = None  # (R, K) over every measurement of the run, NaN left out
        self._count: Tensor | None = None  # (R, K) measurements with a value
        self._taken_epochs: list[int] = []  # every measurement already taken, on the host
        self._taken_rows: list[Tensor] = []  # (R, K) each

    def add(self, epoch: int, row: Tensor, cosines: Tensor) -> None:
        row, cosines = row.detach().float(), cosines.detach()
        self._epochs.append(epoch)
        self._rows.append(row)
        if self.latest_row is None or self.latest_cosines is None:
            self.latest_row, self.latest_cosines = row, cosines
        else:  # a replica not measured (a row of NaN: it stopped) keeps its last measurement
            measured = ~row.isnan().all(1)  # (R,)
            self.latest_row = torch.where(measured[:, None], row, self.latest_row)
            self.latest_cosines = torch.where(measured[:, None, None], cosines, self.latest_cosines)
        if self._sum is None or self._count is None:
            self._sum, self._count = torch.zeros_like(row), torch.zeros_like(row)
        self._sum.add_(row.nan_to_num(0.0))
        self._count.add_(~row.isnan())

    def mean(self) -> Tensor | None:
        """(R, K): the mean of every measurement so far (a resumed fit's included); NaN where
        no measurement had a value (every pair with a zero gradient)."""
        return None if self._sum is None or self._count is None else self._sum / self._count

    def at_or_before(self, epoch: int) -> Tensor | None:
        """(R, K): the last measurement at or before `epoch` (None before the first)."""
        epochs, rows = self._taken_epochs + self._epochs, self._taken_rows + self._rows
        index = bisect.bisect_right(epochs, epoch) - 1
        return None if index < 0 else rows[index]

    def state_dict(self) -> dict[str, Any]:
        """The run's totals, latest figures and history, so that a resumed run's summary is the
        uninterrupted one's (a resume that ends before the next measurement keeps them)."""
        history = self._taken_rows + [row.cpu() for row in self._rows]
        return {"sum": self._sum, "count": self._count, "latest_row": self.latest_row,
                "epochs": self._taken_epochs + self._epochs,
                "rows": torch.stack(history) if history else None}  # fmt: skip

    def load_state_dict(
        self, state: dict[str, Any], device: torch.device, published: bool = True
    ) -> None:
        """Restore a checkpoint's record; `published=False` (a run resumed into a new folder)
        hands its whole history to the next `take`, to be published there again."""

        def moved(name: str) -> Tensor | None:
            value = state.get(name)
            return None if value is None else value.to(device)

        self._sum, self._count, self.latest_row = moved("sum"), moved("count"), moved("latest_row")
        rows = state.get("rows")
        epochs = list(state.get("epochs") or [])
        history = [] if rows is None else list(rows.unbind(0))
        if published:
            self._taken_epochs, self._taken_rows = epochs, history
        else:
            self._epochs, self._rows = epochs, history

    def take(self) -> tuple[list[int], Tensor | None]:
        """The epochs and (E, R, K) figures recorded since the last call, on the host."""
        if not self._rows:
            return [], None
        epochs, rows = self._epochs, torch.stack(self._rows).float().cpu()
        self._epochs, self._rows = [], []
        self._taken_epochs += epochs
        self._taken_rows += list(rows.unbind(0))
        return epochs, rows
