"""Checkpoints of models with a bias before each BatchNorm (every checkpoint written before
`bias_before_batch_norm` existed) loaded into models without: each bias is folded into the
BatchNorm's running mean, which gives the same outputs in training and eval mode."""

import re
from typing import Any

from torch import Tensor

from mtfilter.train.checkpoint_compat import has_biases_before_batch_norm

_BIAS = re.compile(r"^(?P<layer>.*\bhidden\.\d+)\.linear\.bias$")


def fold_biases_before_batch_norm(
    checkpoint: dict[str, Any], parameter_names: list[str], num_replicas: int
) -> int:
    """Rewrite `checkpoint` in place for a model whose parameters are `parameter_names` (in
    registration order) and whose hidden Linear layers have no bias; returns how many biases
    were folded (0: nothing to do).

    BatchNorm in training mode subtracts its batch mean, so a constant `b` added before it
    never reaches its output; in eval mode it sees `x + b - running_mean`, which is
    `x - (running_mean - b)`. So each bias leaves the weights and `running_mean -= b`, and
    the running mean then updates as the old one minus `b` would. The optimizer's state of
    each bias goes, the rest keep theirs; the best-epoch snapshot is folded the same way.
    """
    if not has_biases_before_batch_norm(checkpoint.get("hyper_parameters") or {}):
        return 0
    state = checkpoint["state_dict"]
    wanted = set(parameter_names)
    biases = [name for name in state if _BIAS.match(name) and name not in wanted]
    if not biases:
        return 0
    tracked = tracked_entries(state, num_replicas)  # before the state changes
    for name in biases:
        _fold(state, name)
    _drop_optimizer_entries(checkpoint, _saved_order(parameter_names, biases), set(biases))
    gradients = (checkpoint.get("mtfilter") or {}).get("gradients") or {}
    for name in biases:  # the running sum of never-zeroed gradients (the faithful mode's)
        gradients.pop(name, None)
    for callback in (checkpoint.get("callbacks") or {}).values():
        best = callback.get("mtfilter_best") if isinstance(callback, dict) else None
        if best is not None:
            snapshot = dict(zip(tracked, best["snapshot"], strict=True))
            for name in biases:  # (R, n) rows: flattened in the same order as the tensors
                _fold(snapshot, name)
            best["snapshot"] = list(snapshot.values())
    checkpoint["hyper_parameters"]["bias_before_batch_norm"] = False
    return len(biases)


def tracked_entries(state: dict[str, Tensor], num_replicas: int) -> list[str]:
    """The state-dict entries kept per replica for the best epoch (`BestEpochCheckpoint`): the
    floating-point tensors whose leading axis holds every replica."""
    return [
        name
        for name, tensor in state.items()
        if tensor.is_floating_point() and tensor.dim() > 0 and tensor.shape[0] % num_replicas == 0
    ]


def _fold(state: dict[str, Tensor], bias_name: str) -> None:
    """`running_mean -= bias` and the bias removed. A bias (G, out, 1) is one value per BatchNorm
    channel, G * out of them, in the same order."""
    match = _BIAS.match(bias_name)
    assert match is not None
    bias = state.pop(bias_name)
    mean_name = f"{match['layer']}.norm.running_mean"
    mean = state[mean_name]
    state[mean_name] = (mean.reshape(-1) - bias.reshape(-1)).reshape(mean.shape)


def _saved_order(parameter_names: list[str], biases: list[str]) -> list[str]:
    """The parameter order of the model the checkpoint was saved from: each bias right after
    its layer's weight, as `nn.Module` registered them."""
    order = []
    for name in parameter_names:
        order.append(name)
        bias = name.removesuffix(".weight") + ".bias"
        if name.endswith(".linear.weight") and bias in biases:
            order.append(bias)
    return order


def _drop_optimizer_entries(
    checkpoint: dict[str, Any], saved_order: list[str], dropped: set[str]
) -> None:
    """Optimizer state is keyed by each parameter's position: positions of `dropped` go, the
    others are renumbered."""
    new_index: dict[int, int] = {}
    for old, name in enumerate(saved_order):
        if name not in dropped:
            new_index[old] = len(new_index)
    for optimizer in checkpoint.get("optimizer_states") or []:
        optimizer["state"] = {
            new_index[old]: value
            for old, value in optimizer.get("state", {}).items()
            if old in new_index
        }
        for group in optimizer.get("param_groups", []):
            group["params"] = [new_index[old] for old in group["params"] if old in new_index]
