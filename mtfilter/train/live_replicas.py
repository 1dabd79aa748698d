"""Stacks whose cost follows the live replicas: a stacked replica whose separate run has ended
leaves the batched computation, its weights kept, so a stack's last survivor trains at the cost
of one."""

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from mtfilter.nn.model import BitMLP
from mtfilter.train.checkpoint_upgrade import tracked_entries


class LiveReplicas:
    """Which stacked replicas still train, and the network they train in.

    `full` is the module's whole stack of R replicas: what checkpoints, the best-epoch tracker,
    `validate`, `test` and `predict` see. Until a replica stops, `net` is `full`. Once some stop
    (`stop`), `net` is a new `BitMLP` of the R' live replicas only, with their weights, BatchNorm
    statistics and optimizer state sliced out of the stack (replica-major leading axes, see
    `BitMLP`), and the optimizer steps its parameters instead. Every replica's computation is
    independent of the others', so a live replica trains on exactly as before. `sync` copies
    `net` back into the live rows of `full` (the module calls it after every epoch's steps), so
    `full` always holds every replica: the stopped ones as they ended.

    Checkpoints hold the whole stack: `full_optimizer_state` puts the live replicas' optimizer
    state back into the rows of a state for R replicas, the stopped ones' as they stopped, and a
    resumed fit stops the same replicas again before its first step.
    """

    def __init__(self, full: BitMLP, data_rows: list[int] | None = None) -> None:
        self.full = full
        self.net = full
        self.live = list(range(full.num_replicas))  # original replica indices, in stack order
        self.index: Tensor | None = None  # (R',) the live replicas, on the device; None: all
        # (R,) the row of the data module's per-seed batches each replica reads (stacked rates
        # share a seed's row); None while replica r reads row r. `step_rows`: the live ones'.
        self.data_rows = None if data_rows is None else torch.tensor(data_rows)
        self.step_rows = self.data_rows
        self._parked: dict[int, dict[str, Tensor]] = {}  # optimizer state of R, by position
        self._names = tracked_entries(full.state_dict(), full.num_replicas)

    @property
    def compacted(self) -> bool:
        return self.net is not self.full

    def rows_to(self, device: torch.device) -> None:
        """The data rows on the training device (at fit start, before any replica stops)."""
        if self.data_rows is not None:
            self.data_rows = self.step_rows = self.data_rows.to(device)

    def stop(self, replicas: list[int], optimizer: torch.optim.Optimizer) -> None:
        """Take `replicas` out of the batched computation (those already out are ignored)."""
        keep = [r for r in self.live if r not in replicas]
        if len(keep) == len(self.live) or not keep:  # nothing leaves, or the fit ends now
            return
        self.sync()
        self._parked = self.full_optimizer_state(optimizer.state_dict())["state"]
        rows = [self.live.index(r) for r in keep]  # positions in the current stack
        init_seeds = self.full.config.init_seeds
        seeds = [init_seeds[r] for r in keep] if init_seeds else None
        # Built from private generators (no draw from the global RNG), then overwritten.
        compact = BitMLP(replace(self.full.config, num_replicas=len(keep), init_seeds=seeds))
        compact.to(next(self.full.parameters()).device).train(self.full.training)
        _copy_rows(self.net, compact, rows, len(self.live))
        _repoint(optimizer, self.net, compact, rows, len(self.live))
        self.net, self.live = compact, keep
        self.index = torch.tensor(keep, device=next(compact.parameters()).device)
        self.step_rows = self.index if self.data_rows is None else self.data_rows[self.index]

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the live replicas' weights and statistics into their rows of `full`."""
        if not self.compacted:
            return
        assert self.index is not None
        replicas = self.full.num_replicas
        source, target = self.net.state_dict(), self.full.state_dict()
        for name in self._names:
            rows = target[name].view(replicas, -1)
            rows.index_copy_(0, self.index, source[name].reshape(len(self.live), -1))

    def expand(self, rows: Tensor, previous: Tensor | None) -> Tensor:
        """(R', ...) figures of the live replicas -> (R, ...): the stopped ones' from
        `previous` (their last row, which no longer changes)."""
        if not self.compacted:
            return rows
        assert self.index is not None and previous is not None
        return previous.index_copy(0, self.index, rows)

    def full_optimizer_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """An optimizer `state_dict` of the live stack -> that of all R replicas (as a
        checkpoint of the whole stack holds it): per-parameter tensors of the live stack's
        shape go to the live rows; the stopped replicas' rows keep the state they stopped with."""
        if not self.compacted:
            return state
        assert self.index is not None
        shapes = [p.shape for p in self.net.parameters()]
        full_shapes = [p.shape for p in self.full.parameters()]
        assert len(state["state"]) <= len(shapes), "the optimizer steps only the network"
        expanded: dict[int, dict[str, Any]] = {}
        for position, entries in state["state"].items():
            parked = self._parked.get(position, {})
            expanded[position] = {}
            for key, value in entries.items():
                if torch.is_tensor(value) and value.shape == shapes[position] and key in parked:
                    whole = parked[key].clone()
                    whole.view(self.full.num_replicas, -1).index_copy_(
                        0, self.index.to(whole.device), value.reshape(len(self.live), -1)
                    )
                    value = whole.reshape(full_shapes[position])
                expanded[position][key] = value
        return {**state, "state": expanded}


def _copy_rows(source: nn.Module, target: nn.Module, rows: list[int], replicas: int) -> None:
    """`target` (a stack of len(rows) replicas) gets rows `rows` of `source`'s stack."""
    with torch.no_grad():
        sources = source.state_dict()
        for name, tensor in target.state_dict().items():
            value = sources[name]
            if tensor.dim() == 0 or not tensor.is_floating_point():  # num_batches_tracked
                tensor.copy_(value)
            else:
                tensor.copy_(value.reshape(replicas, -1)[rows].reshape(tensor.shape))


def _repoint(
    optimizer: torch.optim.Optimizer, old: nn.Module, new: nn.Module, rows: list[int],
    replicas: int,
) -> None:  # fmt: skip
    """The optimizer steps `new`'s parameters from now on, with the kept rows of its state."""
    mapping = dict(zip(old.parameters(), new.parameters(), strict=True))
    for group in optimizer.param_groups:
        group["params"] = [mapping.get(p, p) for p in group["params"]]
    for before, after in mapping.items():
        if before not in optimizer.state:
            continue
        state = optimizer.state.pop(before)
        optimizer.state[after] = {
            key: value.reshape(replicas, -1)[rows].reshape(after.shape).clone()
            if torch.is_tensor(value) and value.shape == before.shape
            else value
            for key, value in state.items()
        }
