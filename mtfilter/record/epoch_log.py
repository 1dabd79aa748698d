"""The per-epoch record of a run's metrics: written on the device without host syncs, pulled to
the host in batches, and kept whole so best values and their epochs are exact over every epoch.

Written by hand because Lightning's `self.log` turns each value into a Python float when it is
logged (a host sync per metric per epoch, Lightning #21232) and TorchMetrics' MinMetric keeps
the minimum but not the epoch it happened in.
"""

from typing import Any

import numpy as np
import torch
from torch import Tensor


class EpochLog:
    """Rows of `keys` values per replica, one row per epoch.

    `record` writes a (R, K) row into a device buffer; `pull` copies pending rows to the host in
    one transfer and appends them to the full history. Epochs count completed epochs (1-based).
    """

    def __init__(self, keys: list[str], num_replicas: int = 1, capacity: int = 256) -> None:
        self.keys = list(keys)
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.num_replicas = num_replicas
        self.capacity = capacity
        self._pending: Tensor | None = None  # (capacity, R, K) on the device
        self._pending_epochs: list[int] = []
        self._epochs = np.zeros(0, dtype=np.int64)  # (E,)
        self._values = np.zeros((0, num_replicas, len(keys)), dtype=np.float64)  # (E, R, K)
        self._unpublished = 0  # trailing host rows not yet handed to loggers
        self.restored_through = 0  # last epoch of a history restored from a checkpoint

    def record(self, epoch: int, row: Tensor) -> None:
        """Store the (R, K) row of `epoch`; pulls to the host when the buffer is full."""
        if self._pending is None or self._pending.device != row.device:
            self.pull()
            # float32 whatever the row's dtype: bf16-mixed runs still log 7 significant digits
            self._pending = row.new_empty((self.capacity, *row.shape), dtype=torch.float32)
        self._pending[len(self._pending_epochs)].copy_(row.detach())
        self._pending_epochs.append(epoch)
        self._latest = self._pending[len(self._pending_epochs) - 1]
        if len(self._pending_epochs) == self.capacity:
            self.pull()

    def latest(self, key: str) -> Tensor:
        """(R,) values of `key` in the last recorded epoch, still on the device."""
        return self._latest[:, self.index[key]]

    def last_row(self) -> Tensor:
        """The (R, K) row of the last recorded epoch (float32; on the host once pulled)."""
        if self._pending_epochs:
            return self._latest
        if not len(self._epochs):
            raise ValueError("no epoch recorded yet")
        return torch.from_numpy(self._values[-1]).float()

    def pull(self) -> int:
        """Move pending rows to the host (one device-to-host copy); returns how many."""
        count = len(self._pending_epochs)
        if count == 0:
            return 0
        assert self._pending is not None
        rows = self._pending[:count].to("cpu", torch.float64).numpy()
        self._epochs = np.concatenate([self._epochs, np.asarray(self._pending_epochs)])
        self._values = np.concatenate([self._values, rows])
        self._unpublished += count
        self._pending_epochs = []
        return count

    def take_unpublished(self) -> tuple[np.ndarray, np.ndarray]:
        """Host rows not yet published: epochs (E,) and values (E, R, K); marks them published."""
        count, self._unpublished = self._unpublished, 0
        start = len(self._epochs) - count
        return self._epochs[start:], self._values[start:]

    @property
    def num_epochs(self) -> int:
        """Epochs recorded on the host (call `pull` first to include pending ones)."""
        return len(self._epochs)

    def history(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Host history of `key`: epochs (E,) and values (E, R)."""
        return self._epochs, self._values[:, :, self.index[key]]

    def best(
        self, key: str, until: list[int | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Minimum of `key` over the recorded epochs and the first epoch it was reached, per
        replica: values (R,) and epochs (R,). NaN epochs never count as best. `until`: per
        replica, the last epoch that counts (None: every epoch)."""
        epochs, values = self.history(key)
        if len(epochs) == 0:
            nan = np.full(self.num_replicas, np.nan)
            return nan, np.zeros(self.num_replicas, dtype=np.int64)
        clean = np.where(np.isnan(values), np.inf, values)
        if until is not None:
            last = np.array([np.inf if e is None else e for e in until])  # (R,)
            clean = np.where(epochs[:, None] <= last[None, :], clean, np.inf)
        where = clean.argmin(axis=0)
        replicas = np.arange(self.num_replicas)
        return values[where, replicas], epochs[where]

    def at(self, key: str, epochs: list[int]) -> np.ndarray:
        """(R,) values of `key`, replica r's at epoch `epochs[r]` (NaN where not recorded)."""
        recorded, values = self.history(key)
        out = np.full(self.num_replicas, np.nan)
        for replica, epoch in enumerate(epochs):
            index = np.searchsorted(recorded, epoch)
            if index < len(recorded) and recorded[index] == epoch:
                out[replica] = values[index, replica]
        return out

    def last(self, key: str) -> np.ndarray:
        """(R,) values of `key` in the last epoch on the host."""
        return self._values[-1, :, self.index[key]]

    def state_dict(self) -> dict[str, Any]:
        # Tensors, not arrays: checkpoints must load with torch.load(weights_only=True).
        self.pull()
        return {
            "keys": self.keys,
            "epochs": torch.from_numpy(self._epochs.copy()),
            "values": torch.from_numpy(self._values.copy()),
        }

    def load_state_dict(self, state: dict[str, Any], published: bool = False) -> None:
        """Restore the history of a resumed run. It is published again to the new run's loggers,
        unless `published` (they show it already). A key the checkpoint does not have (a
        figure added since it was written) gets NaN for the epochs before: never best."""
        saved = list(state["keys"])
        unknown = [key for key in saved if key not in self.index]
        if unknown:
            raise ValueError(f"the checkpoint's metric history has keys this run lacks: {unknown}")
        epochs = state["epochs"].numpy().astype(np.int64)
        values = np.full((len(epochs), self.num_replicas, len(self.keys)), np.nan)
        values[:, :, [self.index[key] for key in saved]] = state["values"].numpy()
        self._epochs, self._values = epochs, values
        self.restored_through = int(epochs[-1]) if len(epochs) else 0
        self._unpublished = 0 if published else len(self._epochs)
        self._pending_epochs = []

    @property
    def last_epoch(self) -> int:
        """The last epoch on the host, 0 before any."""
        return int(self._epochs[-1]) if len(self._epochs) else 0
