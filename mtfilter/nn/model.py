"""The MLP of the experiment in every layout, as plain `torch.nn` (no Lightning): one batched
("grouped") computation for all tasks and stacked replicas, never a Python loop over tasks."""

from typing import Any

import torch
from torch import Tensor, nn

from mtfilter.nn.config import BitMLPConfig, Encoding, Layout
from mtfilter.nn.layers import ChunkedBatchNorm1d, GroupedEmbedding, GroupedLinear

__all__ = ["BitMLP", "BitMLPConfig", "Encoding", "Layout"]


class TaskFilter(nn.Module):
    """A per-task scale and shift of a shared layer's units (FiLM), before its ReLU.

    Shared features become one copy per task, kept in the batch axis so that the shared layers
    after stay one matmul for all tasks: (R, F, B) shared, or (R, F, T * B) already per task
    -> (R, F, T * B), task-major within the batch axis. Starts as the identity (scale 1, shift 0).
    BatchNorm after it pools the bits' copies of the batch: one set of statistics per shared unit.
    """

    def __init__(self, num_replicas: int, num_tasks: int, width: int, per_task_input: bool):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_replicas, width, num_tasks, 1))
        self.shift = nn.Parameter(torch.zeros(num_replicas, width, num_tasks, 1))
        self.per_task_input = per_task_input

    def forward(self, x: Tensor) -> Tensor:
        replicas, width, batch = x.shape
        tasks = self.scale.shape[2]
        x = x.view(replicas, width, tasks, batch // tasks) if self.per_task_input else x[:, :, None]
        return torch.addcmul(self.shift, self.scale, x).view(replicas, width, -1)


class HiddenLayer(nn.Module):
    """Linear, then optional BatchNorm, ReLU and dropout: (G, in, B) -> (G * split, out / split, B).

    BatchNorm sees the (1, G * out, B) view, each (group, unit) pair one channel of an
    `nn.BatchNorm1d` (chunked like `nn.DataParallel`'s with `batch_norm_chunks > 1`), so
    Lightning's `sync_batchnorm` can swap in `nn.SyncBatchNorm`. With
    `split > 1` (a fan-out layer) each group's outputs become `split` groups: also a view. A
    `TaskFilter` acts between BatchNorm and ReLU; `residual` adds the layer's input to its output.
    """

    def __init__(
        self,
        linear: GroupedLinear,
        *,
        batch_norm: bool,
        dropout: float,
        split: int = 1,
        task_filter: TaskFilter | None = None,
        residual: bool = False,
        batch_norm_chunks: int = 1,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.linear = linear
        channels = linear.num_groups * linear.out_features
        self.norm = ChunkedBatchNorm1d(channels, batch_norm_chunks) if batch_norm else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.split = split
        self.filter = task_filter

    def forward(self, x: Tensor) -> Tensor:
        skip = x
        x = self.linear(x)  # (G, out, B)
        groups, width, batch = x.shape
        if self.norm is not None:
            x = self.norm(x.view(1, groups * width, batch)).view(groups, width, batch)
        if self.filter is not None:
            x = self.filter(x)
            batch = x.shape[2]
        x = torch.relu(x)
        if self.dropout is not None:
            x = self.dropout(x)
        if self.residual:
            x = x + skip
        return x.view(groups * self.split, width // self.split, batch)


class BitMLP(nn.Module):
    """`num_layers` linear layers mapping a sample index (or, with `linear` encoding, a feature
    vector) to one logit per bit.

    Layer shapes follow the original experiment: `in_dim -> hidden_dim`, `num_layers - 2` times
    `hidden_dim -> hidden_dim`, then the output layer; each hidden layer is followed by optional
    BatchNorm, ReLU and dropout. A hidden layer followed by BatchNorm has no bias (BatchNorm's
    shift does its job) unless `bias_before_batch_norm`, as the original.

    Layouts, for `num_bits` tasks:
      - `mt`: one network (input encoding, every hidden layer) shared by all bits, with a
        `num_bits`-wide output layer, i.e. one 1-wide head per bit.
      - `st`: `num_bits` fully independent networks, each with its own input embedding, hidden
        layers and 1-wide head: about `num_bits` times the parameters of `mt` at equal width.
        With `shared_embedding`, the towers read one input table (the original code's st),
        which is exactly `split` with `num_shared_layers = 0`.
      - `split`: the input encoding and the first `num_shared_layers` hidden layers shared, the rest
        per bit. `num_shared_layers = num_layers - 1` is `mt`; with `binary` or
        `linear` encoding, `num_shared_layers = 0` is `st`.

    Every layout runs as one batched computation: per-bit weights are stacked on a group axis and
    each layer is one batched matmul for all bits (`GroupedLinear`, activations (G, F, B)). Where
    shared features meet the first per-bit layer, that layer is a single matmul to
    `num_bits * width` outputs, viewed as `num_bits` groups after.

    Replicas (`num_replicas`) stack independent copies of the whole model on the same group axis,
    replica-major: every parameter's leading axis is `num_replicas * k`, replica r owning rows
    `r*k .. (r+1)*k - 1`. Inputs are then (R, B) indices (or (R, B, F) features), one row of
    samples per replica.

    Args:
        config: Its settings (`BitMLPConfig`, validated when built); or give them as keywords,
            `BitMLP(num_bits=10, layout="st", hidden_dim=8)`.
    """

    def __init__(self, config: BitMLPConfig | None = None, **settings: Any) -> None:
        super().__init__()
        if config is not None and settings:
            raise TypeError("BitMLP takes a BitMLPConfig or its settings as keywords, not both")
        config = config if config is not None else BitMLPConfig(**settings)
        self.config = config
        num_bits, num_samples, layout = config.num_bits, config.num_samples, config.layout
        num_layers, in_dim, hidden_dim = config.num_layers, config.in_dim, config.hidden_dim
        num_shared_layers, encoding, task_filter = (
            config.num_shared_layers,
            config.encoding,
            config.task_filter,
        )
        num_replicas, init_seeds = config.num_replicas, config.init_seeds
        batch_norm, dropout, residual = config.batch_norm, config.dropout, config.residual
        # A bias right before BatchNorm only adds noise: see BitMLPConfig.bias_before_batch_norm
        bias = config.bias_before_batch_norm or not batch_norm
        shared_embedding, batch_norm_chunks = config.shared_embedding, config.batch_norm_chunks
        num_hidden = num_layers - 1
        self.task_filter = task_filter
        if layout == "mt":
            num_shared_layers = num_hidden
        elif layout == "st":
            num_shared_layers = 0
        assert num_shared_layers is not None
        self.num_bits, self.num_samples, self.num_replicas = num_bits, num_samples, num_replicas
        self.layout, self.num_shared_layers, self.encoding = layout, num_shared_layers, encoding
        R, T = num_replicas, num_bits

        # Input encoding: per bit only in st with a learned table.
        shared_input = not (layout == "st" and encoding == "embedding" and not shared_embedding)
        input_groups = R if shared_input else R * T
        self.embedding: GroupedEmbedding | None = None
        if encoding == "embedding":
            self.embedding = GroupedEmbedding(input_groups, num_samples, in_dim)
        elif encoding == "binary":
            shifts = torch.arange(in_dim - 1, -1, -1)
            codes = (torch.arange(num_samples)[None] >> shifts[:, None]) & 1  # (in_dim, N)
            self.register_buffer("_codes", codes.float(), persistent=False)

        # Hidden layers, then the head; `groups` tracks whether features are shared (R) or per
        # bit (R*T) at each point of the stack.
        layers, groups, width = [], input_groups, in_dim
        self._fan_out_layer: int | None = None  # its output is split into per-bit groups
        for i in range(num_hidden):
            assert hidden_dim is not None  # checked above: hidden layers need a width
            if i < num_shared_layers:
                linear = GroupedLinear(R, width, hidden_dim, bias)
            elif groups == R:  # first per-bit layer on shared features: fan out to all bits
                linear = GroupedLinear(R, width, T * hidden_dim, bias)
                self._fan_out_layer, groups = i, R * T
            else:
                linear = GroupedLinear(R * T, width, hidden_dim, bias)
            split = T if i == self._fan_out_layer else 1
            filter_ = TaskFilter(R, T, hidden_dim, per_task_input=i > 0) if task_filter else None
            skip = residual and i > 0 and split == 1
            layers.append(
                HiddenLayer(
                    linear,
                    batch_norm=batch_norm,
                    dropout=dropout,
                    split=split,
                    task_filter=filter_,
                    residual=skip,
                    batch_norm_chunks=batch_norm_chunks,
                )  # fmt: skip
            )
            width = hidden_dim
        self.hidden = nn.ModuleList(layers)
        # On shared features the head is one matmul to num_bits logits (a 1-wide head per bit).
        self.head = GroupedLinear(R, width, T) if groups == R else GroupedLinear(R * T, width, 1)
        self.reset_parameters(init_seeds)

    def reset_parameters(self, seeds: list[int] | None = None) -> None:
        """Re-initialise every parameter; with `seeds`, replica r from its own generator."""
        generators = None if seeds is None else [torch.Generator().manual_seed(s) for s in seeds]
        with torch.no_grad():
            if self.embedding is not None:
                self.embedding.reset_parameters(generators)
            for layer in self.hidden_layers:
                layer.linear.reset_parameters(generators)
                if layer.norm is not None:
                    layer.norm.reset_parameters()
                if layer.filter is not None:  # the identity
                    layer.filter.scale.fill_(1.0)
                    layer.filter.shift.zero_()
            self.head.reset_parameters(generators)

    def train(self, mode: bool = True) -> "BitMLP":
        # Same effect as nn.Module.train, without its per-submodule __setattr__ checks: the
        # per-epoch evaluation pass switches modes twice an epoch.
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def forward(self, inputs: Tensor) -> Tensor:
        """Logits for sample indices, (B,) -> (B, T) or (R, B) -> (R, B, T); with `linear`
        encoding for features, (B, F) -> (B, T) or (R, B, F) -> (R, B, T).

        A (1, B) row of indices (or (1, B, F) of features) is shared by all replicas (the
        evaluation pass).
        """
        if self.encoding == "linear":
            self._check_features(inputs)
        squeeze = inputs.dim() == (2 if self.encoding == "linear" else 1)
        if squeeze:
            inputs = inputs[None]
        x = self._encode(inputs)  # (R, in, B), or (R*T, in, B) for st's own tables
        for layer in self.hidden:
            x = layer(x)
        if self.task_filter and self.hidden:  # x: (R, F, T * B), each bit's head on its copy
            x = x.view(self.num_replicas, x.shape[1], self.num_bits, -1)
            assert self.head.bias is not None  # the head always has one
            logits = torch.einsum("rtf,rftb->rtb", self.head.weight, x) + self.head.bias
            return logits.transpose(1, 2)[0] if squeeze else logits.transpose(1, 2)
        # mt's head: (R, T, B); per-bit heads: (R*T, 1, B), the same memory as (R, T, B)
        logits = self.head(x).view(self.num_replicas, self.num_bits, -1).transpose(1, 2)
        return logits[0] if squeeze else logits

    @property
    def hidden_layers(self) -> list[HiddenLayer]:
        return list(self.hidden)  # type: ignore[arg-type]  # ModuleList is typed as Modules

    def _encode(self, inputs: Tensor) -> Tensor:
        """(R, B) indices or (R, B, F) features (R may be 1) -> (G, in_dim, B)."""
        if self.encoding == "linear":
            return self._features(inputs)
        indices = inputs
        if self.embedding is not None:
            return self.embedding(indices)
        codes = self.get_buffer("_codes")  # (in_dim, N) bits
        return codes[:, indices].transpose(0, 1).expand(self.num_replicas, -1, -1)

    def _check_features(self, features: Tensor) -> None:
        in_dim = self.config.in_dim
        shape_ok = features.dim() in (2, 3) and features.shape[-1] == in_dim
        if not shape_ok or not features.is_floating_point():
            raise ValueError(
                f"linear encoding takes (R, B, {in_dim}) or (B, {in_dim}) float features, got "
                f"{features.dtype} of shape {tuple(features.shape)}"
            )

    def _features(self, features: Tensor) -> Tensor:
        # (R, F, B): a view without a copy where the batch was gathered feature-major
        # (`EpochBatches`), as the layers' activations are
        return features.mT.expand(self.num_replicas, -1, -1)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every bit's output depends on (empty for `st`)."""
        return [p for name, p in self.named_parameters() if self._is_shared(name)]

    def task_parameters(self) -> list[nn.Parameter]:
        """Parameters that only one bit's output depends on (each tensor holds all bits' slices)."""
        return [p for name, p in self.named_parameters() if not self._is_shared(name)]

    def _is_shared(self, name: str) -> bool:
        if name.startswith("embedding."):
            return self.embedding is not None and self.embedding.num_groups == self.num_replicas
        if name.startswith("hidden."):
            if ".filter." in name:  # one slice per bit
                return False
            return int(name.split(".")[1]) < self.num_shared_layers
        return False  # the head

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts of one replica.

        `total`: all parameters; `shared`: those every bit depends on; `per_task`: what one bit's
        output depends on (shared plus its own); `task_specific`: one bit's own parameters;
        `filter`: the task filters' parameters, all bits (part of `total`).
        """
        shared = sum(p.numel() for p in self.shared_parameters()) // self.num_replicas
        own = sum(p.numel() for p in self.task_parameters()) // self.num_replicas
        filters = sum(p.numel() for n, p in self.named_parameters() if ".filter." in n)
        return {
            "total": shared + own,
            "shared": shared,
            "per_task": shared + own // self.num_bits,
            "task_specific": own // self.num_bits,
            "filter": filters // self.num_replicas,
        }
