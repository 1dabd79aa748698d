"""Grouped layers: many independent small networks stacked on a leading group axis, run as one
batched computation. Activations are (G, B, F): group, batch, feature."""

import math

import torch
from torch import Tensor, nn


class GroupedLinear(nn.Module):
    """`num_groups` independent linear maps in one batched matmul: (G, B, in) -> (G, B, out).

    Group g holds what `nn.Linear(in_features, out_features)` would, transposed: `weight[g]` is
    (in, out) so the batched matmul needs no transpose, and `bias[g]` is (1, out).
    """

    def __init__(self, num_groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.num_groups, self.in_features, self.out_features = num_groups, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_groups, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_groups, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self, generators: list[torch.Generator] | None = None) -> None:
        """nn.Linear's initialisation, U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.

        With `generators` (one per replica), replica r's slice of the groups draws from
        generators[r] alone, weight before bias, as a separate model with that seed would.
        """
        bound = 1 / math.sqrt(self.in_features)
        with torch.no_grad():
            for tensor in (self.weight, self.bias):
                _uniform_per_replica(tensor, -bound, bound, generators)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"groups={self.num_groups}, in={self.in_features}, out={self.out_features}"


class GroupedBatchNorm(nn.Module):
    """BatchNorm over (G, B, F) activations, each (group, feature) pair its own channel.

    Wraps `nn.BatchNorm1d(G * F)` rather than re-implementing it, so Lightning's
    `sync_batchnorm=True` can swap in `nn.SyncBatchNorm` for multi-device runs.
    """

    def __init__(self, num_groups: int, num_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_groups * num_features)

    def forward(self, x: Tensor) -> Tensor:
        groups, batch, features = x.shape
        y = self.norm(x.transpose(0, 1).reshape(batch, groups * features))
        return y.view(batch, groups, features).transpose(0, 1)


def _uniform_per_replica(
    tensor: Tensor, low: float, high: float, generators: list[torch.Generator] | None
) -> None:
    if generators is None:
        tensor.uniform_(low, high)
        return
    # The leading axis is replica-major, so replica r owns a contiguous block of rows.
    for block, generator in zip(tensor.view(len(generators), -1), generators, strict=True):
        block.uniform_(low, high, generator=generator)


def normal_per_replica(tensor: Tensor, generators: list[torch.Generator] | None) -> None:
    """N(0, 1) in place, replica r's contiguous block of rows from generators[r]."""
    if generators is None:
        tensor.normal_()
        return
    for block, generator in zip(tensor.view(len(generators), -1), generators, strict=True):
        block.normal_(generator=generator)
