"""The conflict telemetry's record: figures of the task gradients' conflict, measured every
`telemetry_interval` steps (`mtfilter.train.multitask.conflict_figures`), kept on the device
until published, and saved in checkpoints so a resumed run reports the uninterrupted one's."""

import bisect
from typing import Any

import torch
from torch import Tensor


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
