"""Grouped layers: many independent small networks stacked on a leading group axis and run as one
batched computation.

Activations are feature-major, (G, F, B): group, feature, batch. Then each grouped linear layer is
one batched matmul with the long batch axis as its output columns (the fast shape for small
widths), BatchNorm sees a plain (1, channels, batch) tensor, and splitting features into per-bit
groups is a view: no transposes or copies between layers.
"""

import math

import torch
from torch import Tensor, nn


class GroupedLinear(nn.Module):
    """`num_groups` independent linear maps in one batched matmul: (G, in, B) -> (G, out, B).

    Group g holds exactly what `nn.Linear(in_features, out_features, bias)` would: `weight[g]`
    is (out, in) and `bias[g]` is (out, 1); with `bias=False`, `bias` is None.
    """

    def __init__(
        self, num_groups: int, in_features: int, out_features: int, bias: bool = True
    ) -> None:
        super().__init__()
        self.num_groups, self.in_features, self.out_features = num_groups, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_groups, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_groups, out_features, 1)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, generators: list[torch.Generator] | None = None) -> None:
        """nn.Linear's initialisation, U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.

        With `generators` (one per replica), replica r's slice of the groups draws from
        generators[r] alone, weight before bias, as a separate model with that seed would.
        Without a bias its values are drawn all the same and dropped, so that a model with and
        without the biases starts from the same weights in every layer.
        """
        bound = 1 / math.sqrt(self.in_features)
        # without a bias: drawn into a stand-in on the weight's device, as the bias would be
        stand_in = self.weight.new_empty(self.num_groups, self.out_features, 1)
        bias: Tensor = self.bias if self.bias is not None else stand_in
        with torch.no_grad():
            for tensor in (self.weight, bias):
                _per_replica(
                    tensor, generators, lambda t, g: t.uniform_(-bound, bound, generator=g)
                )

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return torch.bmm(self.weight, x)
        return torch.baddbmm(self.bias, self.weight, x)

    def extra_repr(self) -> str:
        bias = "" if self.bias is not None else ", bias=False"
        return f"groups={self.num_groups}, in={self.in_features}, out={self.out_features}{bias}"


class GroupedEmbedding(nn.Module):
    """`num_groups` learned lookup tables of `num_embeddings` rows, `embedding_dim` wide.

    Stored feature-major, `weight[g]` is (dim, num), nn.Embedding's table transposed, so a
    lookup lands directly in the (G, dim, B) activation layout. Initialised N(0, 1) like
    nn.Embedding.
    """

    def __init__(self, num_groups: int, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_groups, self.num_embeddings = num_groups, num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(torch.empty(num_groups, embedding_dim, num_embeddings))
        self.reset_parameters()

    def reset_parameters(self, generators: list[torch.Generator] | None = None) -> None:
        with torch.no_grad():
            _per_replica(self.weight, generators, lambda t, g: t.normal_(generator=g))

    def forward(self, indices: Tensor) -> Tensor:
        """(1, B) indices shared by every table, or (R, B) one row per replica -> (G, dim, B)."""
        replicas, batch = indices.shape
        # (R, G/R * dim, N): replica r's tables as rows; each row reads the replica's indices.
        # `gather` with a broadcast (stride-0) index beat index_select on either axis, in
        # both directions, at every size measured.
        tables = self.weight.view(replicas, -1, self.num_embeddings)
        rows = indices[:, None, :].expand(-1, tables.shape[1], -1)
        return tables.gather(2, rows).view(self.num_groups, self.embedding_dim, batch)

    def extra_repr(self) -> str:
        return f"groups={self.num_groups}, num={self.num_embeddings}, dim={self.embedding_dim}"


def _per_replica(tensor: Tensor, generators: list[torch.Generator] | None, draw) -> None:
    if generators is None:
        draw(tensor, None)
        return
    # The leading axis is replica-major, so replica r owns a contiguous block of groups.
    for block, generator in zip(tensor.view(len(generators), -1), generators, strict=True):
        draw(block, generator)


class ChunkedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm whose training statistics come from `chunks` equal slices of the batch, as
    `nn.DataParallel` on `chunks` devices computes them: each device normalises its own slice,
    and only the first device's statistics update the running ones (the other replicas' buffers
    are discarded after each step). Eval mode uses the running statistics as usual.

    Input (1, C, B) with B divisible by `chunks`; `chunks=1` is plain `nn.BatchNorm1d`.
    """

    def __init__(self, num_features: int, chunks: int = 1) -> None:
        super().__init__(num_features)
        self.chunks = chunks

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.chunks == 1:
            return super().forward(x)
        _, channels, batch = x.shape
        if batch % self.chunks:
            raise ValueError(f"a batch of {batch} does not split into {self.chunks} equal chunks")
        chunk = batch // self.chunks
        x = x.reshape(
            channels, self.chunks, chunk
        )  # chunk k holds samples k*chunk .. (k+1)*chunk-1
        mean = x.mean(2, keepdim=True)
        var = x.var(2, correction=0, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        y = y * self.weight[:, None, None] + self.bias[:, None, None]
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        with torch.no_grad():  # as nn.BatchNorm1d: the unbiased variance for the running one
            momentum = self.momentum if self.momentum is not None else 0.1
            self.running_mean.lerp_(mean[:, 0, 0], momentum)
            self.running_var.lerp_(var[:, 0, 0] * chunk / max(chunk - 1, 1), momentum)
            self.num_batches_tracked.add_(1)
        return y.reshape(1, channels, batch)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunks={self.chunks}"
