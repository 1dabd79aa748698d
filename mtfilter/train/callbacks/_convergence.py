"""The schedule to convergence, per replica: on a plateau of the best loss, a learning-rate drop
(the first `lr_drops` times), then convergence, recorded, and a stop once every replica has
converged; or, with `stop_at_floor`, convergence where the loss-free errors reach their floor."""

from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from mtfilter.errors import ConfigError
from mtfilter.nn.floor import Floor
from mtfilter.record.epoch_log import EpochLog
from mtfilter.record.publishing import RecordsEpochs, recording


class ConvergenceSchedule(Callback):
    """Learning-rate drops on plateaus, then convergence and the stop, per replica.

    Convergence of `monitor`: converged once its best value improved by less than
    `max(rel_tol x best, abs_tol)` over the last `patience` epochs. Checked every `check_every`
    epochs for each stacked replica; with `stop`, training ends when every replica converged.

    With `lr_drops`, a replica that reaches a plateau first has its learning rate multiplied
    by `lr_drop_factor` (as ReduceLROnPlateau, per replica: see
    `BitMappingModule.scale_learning_rate`) and trains on, up to `lr_drops` times; only a
    plateau at its last learning rate counts as converged. A constant learning rate leaves a
    loss floor set by the size of its steps; the drops let each run settle into its optimum.

    With `stop`, a stacked replica that converges before its stack-mates stops there as its
    separate run would: its weights are frozen (learning rate 0), it leaves the batched
    computation (`BitMappingModule.stop_training`), and its figures, summary and best checkpoint
    count its epochs up to that one only (`end_epochs`).

    With `stop_at_floor`, a replica whose lowest bit error and exact-match error so far both
    reached the model's representational floor (`BitMappingModule.floor`; 0 wherever the last
    shared layer is at least `num_bits` wide) has converged too, with reason `floor`: neither
    figure can go below its floor, so no later epoch improves the figures a study compares.
    Checked at every check from the first, before `patience`. The loss at that epoch is not the
    loss's optimum: leave it off where the loss is the compared figure.

    (Its name was `ConvergenceStop`, which hid the drops; checkpoints keep that key.)

    Written by hand because Lightning's EarlyStopping watches one logged value (a host sync
    every epoch here), with an absolute `min_delta` only, and decides for the whole model; this
    reads the device-side epoch log at its checks only and decides per replica. Checks fall on
    fixed epochs, so a resumed fit stops exactly where an uninterrupted one would.

    Args:
        monitor: Epoch-log key to watch (the exact full-dataset loss by default).
        patience: Epochs over which the best value must improve; 0 turns the check off.
        rel_tol: Smallest improvement that counts, relative to the best value before.
        abs_tol: Smallest improvement that counts in any case (losses near 0 keep improving
            by ever smaller relative steps).
        check_every: Epochs between checks (each reads the history: one host sync).
        stop: End training once every replica has converged; without it, convergence is only
            recorded (as for the original's fixed 10,000 epochs).
        lr_drops: Learning-rate drops on a plateau before a plateau counts as converged.
        lr_drop_factor: What each drop multiplies the learning rate by.
        stop_at_floor: Also converge where bit error and exact-match error reach the floor.
        compact_stack: Stacked replicas that converged leave the batched computation; false
            keeps them in it, frozen, until the last one ends (the same figures at the cost of
            the whole stack: what `benchmarks.run --cases answer` compares against).
    """

    def __init__(
        self,
        monitor: str = "val/loss",
        patience: int = 1000,
        rel_tol: float = 0.01,
        abs_tol: float = 1e-4,
        check_every: int = 100,
        stop: bool = True,
        lr_drops: int = 0,
        lr_drop_factor: float = 0.1,
        stop_at_floor: bool = False,
        compact_stack: bool = True,
    ) -> None:
        for name, value, least in [("patience", patience, 0), ("rel_tol", rel_tol, 0),
                                   ("abs_tol", abs_tol, 0), ("check_every", check_every, 1),
                                   ("lr_drops", lr_drops, 0)]:  # fmt: skip
            if not value >= least:  # NaN too
                raise ConfigError(f"convergence.{name} must be at least {least}, got {value}")
        if not 0 < lr_drop_factor < 1:
            raise ConfigError(
                f"convergence.lr_drop_factor must lie between 0 and 1, got {lr_drop_factor}"
            )
        self.monitor, self.patience = monitor, patience
        self.rel_tol, self.abs_tol = rel_tol, abs_tol
        self.check_every, self.stop = check_every, stop
        self.lr_drops, self.lr_drop_factor = lr_drops, lr_drop_factor
        self.stop_at_floor, self.compact_stack = stop_at_floor, compact_stack
        self.converged_epochs: list[int | None] = []  # per replica: the check that found it
        self.converged_reasons: list[str | None] = []  # per replica: "plateau" or "floor"
        self.drop_epochs: list[list[int]] = []  # per replica: the checks that dropped its lr

    @property
    @override
    def state_key(self) -> str:
        # Checkpoints key a callback's state by its class name; this one's is kept under the
        # name checkpoints were written with before the rename, so they resume exactly.
        return "ConvergenceStop"

    @property
    def enabled(self) -> bool:
        return self.patience > 0 or self.stop_at_floor

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = recording(pl_module)
        replicas = len(record.replicas)
        if len(self.converged_epochs) != replicas:  # a fresh fit; a resumed one keeps its own
            self.converged_epochs = [None] * replicas
            self.converged_reasons = [None] * replicas
            self.drop_epochs = [[] for _ in range(replicas)]
        ended = [r for r, epoch in enumerate(self.converged_epochs) if epoch is not None]
        if self.stop and self.compact_stack and ended:  # resumed: they leave before a step
            record.stop_training(ended)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if not self.enabled or epoch % self.check_every:
            return
        plateaus = self.patience > 0 and epoch > self.patience
        record = recording(pl_module)
        floor = record.floor if self.stop_at_floor else None
        if not plateaus and floor is None:
            return
        record.publish_epoch_log()  # the history up to this epoch, on the host
        at_floor = at_floor_replicas(record.epoch_log, floor) if floor is not None else None
        before = {r for r, e in enumerate(self.converged_epochs) if e is not None}
        epochs, values = record.epoch_log.history(self.monitor)  # (E,), (E, R)
        for replica, found in enumerate(self.converged_epochs):
            if found is not None:
                continue
            if at_floor is not None and at_floor[replica]:
                self._converge(record, replica, epoch, "floor")
                continue
            drops = self.drop_epochs[replica]
            settled = epoch - (drops[-1] if drops else 0) >= self.patience  # since its last drop
            if not (plateaus and settled and converged(values[:, replica], epochs, epoch, self)):
                continue
            if len(drops) < self.lr_drops:
                drops.append(epoch)
                record.scale_learning_rate(replica, self.lr_drop_factor)
            else:
                self._converge(record, replica, epoch, "plateau")
        done = all(e is not None for e in self.converged_epochs)
        ended = [
            r for r, e in enumerate(self.converged_epochs) if e is not None and r not in before
        ]
        if self.stop and self.compact_stack and ended and not done:  # they leave the stack
            record.stop_training(ended)
        if self.stop and done and not trainer.should_stop:
            reasons = set(self.converged_reasons)
            how = (
                f"best {self.monitor} improved by less than {self.rel_tol:g} (relative) over the "
                f"last {self.patience} epochs"
            )
            if reasons == {"floor"}:
                how = "bit error and exact-match error at the representational floor"
            elif "floor" in reasons:
                how += ", or the errors at their floor"
            rank_zero_info(f"converged at epoch {epoch}: {how}")
            trainer.should_stop = True

    def _converge(self, record: RecordsEpochs, replica: int, epoch: int, reason: str) -> None:
        self.converged_epochs[replica], self.converged_reasons[replica] = epoch, reason
        if self.stop:  # its separate run ends here: no further step moves it
            record.scale_learning_rate(replica, 0.0)

    @property
    def end_epochs(self) -> list[int | None]:
        """Per replica, the last epoch its figures count (its convergence, with `stop`), or
        None: every epoch."""
        if not self.stop:
            return [None] * len(self.converged_epochs)
        return list(self.converged_epochs)

    def summary(self, replica: int) -> dict[str, Any]:
        """The criterion and its outcome for one replica, for the run summary."""
        found = self.converged_epochs[replica] if replica < len(self.converged_epochs) else None
        drops = self.drop_epochs[replica] if replica < len(self.drop_epochs) else []
        reasons = self.converged_reasons
        return {
            "converged": (found is not None) if self.enabled else None,
            "epoch": found,
            "converged_reason": reasons[replica] if replica < len(reasons) else None,
            "stop_at_floor": self.stop_at_floor,
            "lr_drop_epochs": list(drops),
            "monitor": self.monitor,
            "patience": self.patience,
            "rel_tol": self.rel_tol,
            "abs_tol": self.abs_tol,
            "lr_drops": self.lr_drops,
            "lr_drop_factor": self.lr_drop_factor,
        }

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "converged_epochs": list(self.converged_epochs),
            "converged_reasons": list(self.converged_reasons),
            "drop_epochs": [list(drops) for drops in self.drop_epochs],
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.converged_epochs = list(state_dict.get("converged_epochs", []))
        self.drop_epochs = [list(d) for d in state_dict.get("drop_epochs", [])]
        if len(self.drop_epochs) != len(self.converged_epochs):
            self.drop_epochs = [[] for _ in self.converged_epochs]
        # checkpoints from before the floor rule: every convergence was a plateau's
        plateau = [None if e is None else "plateau" for e in self.converged_epochs]
        self.converged_reasons = list(state_dict.get("converged_reasons", plateau))


def schedule_of(trainer: L.Trainer) -> "ConvergenceSchedule | None":
    """The fit's convergence schedule, if it has one (the checkpoint, the summary and the
    progress bar read its verdicts)."""
    return next((c for c in trainer.callbacks if isinstance(c, ConvergenceSchedule)), None)


def converged(
    values: np.ndarray, epochs: np.ndarray, epoch: int, rule: ConvergenceSchedule
) -> bool:
    """Whether the best of `values` up to `epoch` improved by less than the tolerance over the
    last `rule.patience` epochs (NaN epochs never count as best)."""
    clean = np.where(np.isnan(values), np.inf, values)
    now = clean[epochs <= epoch].min(initial=np.inf)
    before = clean[epochs <= epoch - rule.patience].min(initial=np.inf)
    if not np.isfinite(before):
        return False
    return before - now < max(rule.rel_tol * abs(before), rule.abs_tol)


# Below one wrong bit's share of any dataset up to ~10^6 bits, above float32's rounding of a mean.
FLOOR_TOLERANCE = 1e-6


def at_floor_replicas(log: EpochLog, floor: Floor) -> np.ndarray:
    """(R,) bool: whether each replica's lowest bit error and exact-match error so far are at
    the floor (`Floor`): the optimum of both figures, which no epoch can pass."""
    bits, _ = log.best("val/bit_error")
    strings, _ = log.best("val/exact_match_error")
    return (bits <= floor.bit_error + FLOOR_TOLERANCE) & (
        strings <= floor.exact_match_error + FLOOR_TOLERANCE
    )
