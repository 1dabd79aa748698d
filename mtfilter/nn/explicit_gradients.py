"""A training step of `BitMLP` with its backward pass written out instead of recorded by autograd:
the forward pass in training mode, every parameter's gradient written into its `.grad`, and
each task's own gradient of the shared parameters (the per-task Jacobian that the aggregators
and the conflict figures read) from one batched pass instead of one backward per task.

It covers the network as the converged mode trains it: every layout and encoding, BatchNorm or
none, a bias before BatchNorm or none; not dropout, task filters, residual layers, chunked or
synchronised BatchNorm (`unsupported` says which). Its gradients and BatchNorm statistics equal
autograd's to float32 rounding (tests/nn/test_explicit_gradients.py). What it saves is the
per-task Jacobian's T backward passes (UPGrad fits 1.29x faster); for a plain step autograd's
own C++ backward is as fast or faster (docs/benchmarks.md, "The step written out").

Shapes: R replicas, T tasks (bits), B samples, G groups of a layer (R where features are shared,
R * T where they are per bit), F features; activations are (G, F, B) as in `mtfilter.nn.layers`.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mtfilter.nn.layers import ChunkedBatchNorm1d, GroupedLinear
from mtfilter.nn.model import BitMLP, HiddenLayer


@dataclass
class _Saved:
    """What a hidden layer's backward needs from its forward."""

    inputs: Tensor  # (G_in, in, B)
    outputs: Tensor  # (G, out, B), after ReLU
    pre_norm: Tensor | None = None  # (G, out, B), the linear layer's output BatchNorm saw
    mean: Tensor | None = None  # (G * out,) batch mean per channel
    inv_std: Tensor | None = None  # (G * out,) 1 / sqrt(batch variance + eps)
    normalised: Tensor | None = None  # (G, out, B), (pre_norm - mean) * inv_std


def unsupported(net: BitMLP) -> str | None:
    """Why the written-out step cannot train `net`, or None when it can."""
    for layer in net.hidden_layers:
        if layer.dropout is not None:
            return "dropout"
        if layer.filter is not None:
            return "task filters"
        if layer.residual:
            return "residual layers"
        norm = layer.norm
        if norm is not None and (type(norm) is not ChunkedBatchNorm1d or norm.chunks != 1):
            return "chunked or synchronised BatchNorm"
    return None


class ExplicitGradients:
    """The forward and backward pass of a `BitMLP` training step, without autograd.

    `forward` runs the network in training mode on (R, B) indices, updates BatchNorm's running
    statistics exactly as `nn.BatchNorm1d` does, and keeps what the backward pass needs.
    `backward` then takes the gradient of the objective with respect to the (R, T, B) logits and
    writes every parameter's gradient into `.grad`; `task_jacobian` takes the same and returns
    each replica's per-task gradients of the shared parameters instead.
    """

    def __init__(self, net: BitMLP) -> None:
        reason = unsupported(net)
        if reason is not None:
            raise ValueError(f"the written-out step does not cover {reason}")
        self.net = net
        self.shared = net.shared_parameters()
        self._saved: list[_Saved] = []
        self._inputs: Tensor | None = None  # (G0, in_dim, B), the encoded indices
        self._indices: Tensor | None = None  # (R, B)

    # -- forward ---------------------------------------------------------------------------

    @torch.no_grad()
    def forward(self, indices: Tensor) -> Tensor:
        """(R, B) sample indices (or (R, B, F) features) -> (R, T, B) logits, feature-major
        (`BitMLP.forward` gives the (R, B, T) view of the same numbers)."""
        net = self.net
        if indices.shape[0] == 1 and net.num_replicas > 1:
            indices = indices.expand(net.num_replicas, *indices.shape[1:])
        self._indices = indices
        x = net._encode(indices)  # (G0, in_dim, B)
        self._inputs = x
        self._saved = []
        for layer in net.hidden_layers:
            x = self._hidden_forward(layer, x)
        logits = net.head(x)  # (R, T, B), or (R * T, 1, B) for per-bit heads
        return logits.view(net.num_replicas, net.num_bits, -1)

    def _hidden_forward(self, layer: HiddenLayer, x: Tensor) -> Tensor:
        z = layer.linear(x)  # (G, out, B)
        saved = _Saved(inputs=x, outputs=z)
        norm = layer.norm
        if norm is not None:
            groups, width, batch = z.shape
            channels = z.view(groups * width, batch)
            # two passes over the batch axis: faster here than torch's batch norm kernel on
            # this layout (docs/benchmarks.md), and its backward takes these statistics
            mean = channels.mean(1, keepdim=True)
            centred = channels - mean
            variance = (centred * centred).mean(1, keepdim=True)  # biased, as BatchNorm's
            inv_std = (variance + norm.eps).rsqrt()
            normalised = centred.mul_(inv_std)
            y = torch.addcmul(norm.bias[:, None], normalised, norm.weight[:, None])
            _update_running_statistics(norm, mean, variance, batch)
            saved.pre_norm, saved.mean, saved.inv_std = z, mean.view(-1), inv_std.view(-1)
            saved.normalised = normalised.view(groups, width, batch)
            z = y.view(groups, width, batch)
        a = torch.relu(z)
        saved.outputs = a
        self._saved.append(saved)
        return a.view(-1, a.shape[1] // layer.split, a.shape[2])

    # -- backward --------------------------------------------------------------------------

    @torch.no_grad()
    def backward(self, logit_grads: Tensor) -> None:
        """Write d objective / d parameter into every parameter's `.grad` from the (R, T, B)
        d objective / d logits of the last `forward`."""
        net = self.net
        head = net.head
        d = logit_grads.reshape(head.num_groups, head.out_features, -1)  # (G, out, B)
        x = self._saved[-1].outputs if self._saved else self._inputs
        assert x is not None, "backward needs a forward first"
        x = x.view(head.num_groups, head.in_features, -1)
        d = _linear_backward(head, d, x)
        for layer, saved in zip(reversed(net.hidden_layers), reversed(self._saved), strict=True):
            d = self._hidden_backward(layer, saved, d)
        if net.embedding is not None:
            _embedding_backward(net.embedding.weight, self._indices, d)

    def _hidden_backward(self, layer: HiddenLayer, saved: _Saved, d: Tensor) -> Tensor:
        """d objective / d (the layer's output) -> d objective / d (its input), its parameters'
        gradients written."""
        a = saved.outputs  # (G, out, B)
        d = d.reshape(a.shape) * (a > 0)  # ReLU
        norm = layer.norm
        if norm is not None:
            assert saved.pre_norm is not None
            groups, width, batch = a.shape
            # BatchNorm's own backward kernel, as autograd would call it
            dz, d_weight, d_bias = torch.ops.aten.native_batch_norm_backward(
                d.view(1, groups * width, batch), saved.pre_norm.view(1, groups * width, batch),
                norm.weight, None, None, saved.mean, saved.inv_std, True, norm.eps,
                [True, True, True],
            )  # fmt: skip
            norm.weight.grad, norm.bias.grad = d_weight, d_bias
            d = dz.view(groups, width, batch)
        return _linear_backward(layer.linear, d, saved.inputs)

    # -- per-task gradients ----------------------------------------------------------------

    @torch.no_grad()
    def task_jacobian(self, logit_grads: Tensor, compact: bool = False) -> Tensor:
        """(R, T, P): each replica's gradient of each task's term of the objective with respect
        to its shared parameters, P of them per replica in `BitMLP.shared_parameters()` order
        (the layout `mtfilter.train.objective.per_replica_jacobian` gives), from the (R, T, B)
        d objective / d logits of the last `forward`.

        Below the first per-task layer every task's gradient flows through the same shared
        layers, so the T backward passes are one, with the tasks as an extra batch axis.

        `compact`: a shared input table's block holds each sample's gradient, (R, T, D * B),
        instead of each table entry's, (R, T, D * N), mostly zeros. A step's samples are
        distinct (a slice of a permutation), so each is one entry's gradient and every Gramian,
        norm and cosine of the rows is the same; `set_shared_gradients` takes directions in
        this layout back to the table."""
        net = self.net
        replicas, tasks = net.num_replicas, net.num_bits
        shared_layers = net.num_shared_layers
        # tasks ride between features and samples, (R, F, T, B): a layer's matmul then takes
        # every task's gradients as one (F, T * B) matrix per replica, with no copy
        d = self._per_task_boundary(logit_grads)  # at the shared layers' top
        grads: dict[int, Tensor] = {}  # id(parameter) -> (R, T, numel / R)
        for index in reversed(range(shared_layers)):
            layer, saved = net.hidden_layers[index], self._saved[index]
            d = _per_task_hidden_backward(layer, saved, d, grads)
        table = self._shared_table()
        if table is not None and compact:
            grads[id(table)] = d.transpose(1, 2).reshape(replicas, tasks, -1)  # (R, T, D * B)
        elif table is not None:
            per_task = table.new_zeros(replicas, table.shape[1], tasks, table.shape[2])
            assert self._indices is not None
            rows = self._indices[:, None, None, :].expand(-1, table.shape[1], tasks, -1)
            per_task.scatter_add_(3, rows, d)  # (R, D, T, N)
            grads[id(table)] = per_task.transpose(1, 2).reshape(replicas, tasks, -1)
        return torch.cat([grads[id(p)] for p in self.shared], dim=2)

    @torch.no_grad()
    def set_shared_gradients(self, directions: Tensor) -> None:
        """Write (R, P) update directions of the shared parameters, laid out as
        `task_jacobian(..., compact=True)` gives them, into their `.grad`."""
        assert self._inputs is not None, "needs the forward of the step"
        replicas, batch = directions.shape[0], self._inputs.shape[2]
        table = self._shared_table()
        sizes = [self._inputs.shape[1] * batch if p is table else p.numel() // replicas
                 for p in self.shared]  # fmt: skip
        for parameter, part in zip(self.shared, directions.split(sizes, dim=1), strict=True):
            if parameter is table:  # each sample's (R, D, B) -> the looked-up table entries
                _embedding_backward(parameter, self._indices, part.reshape(replicas, -1, batch))
            else:  # contiguous: the CPU's fused Adam reads a strided .grad as contiguous
                parameter.grad = part.reshape(parameter.shape).contiguous()

    def _shared_table(self) -> Tensor | None:
        """The input tables when every task reads them (mt, split), else None."""
        embedding = self.net.embedding
        if embedding is not None and any(p is embedding.weight for p in self.shared):
            return embedding.weight
        return None

    def _per_task_boundary(self, logit_grads: Tensor) -> Tensor:
        """Each task's gradient with respect to the output of the last shared layer (or the
        encoded inputs): (R, F, T, B)."""
        net = self.net
        replicas, tasks = net.num_replicas, net.num_bits
        shared_layers = net.num_shared_layers
        top = self._saved[shared_layers - 1].outputs if shared_layers else self._inputs
        assert top is not None
        batch = top.shape[-1]
        if shared_layers == len(net.hidden_layers):  # mt: the head is the first per-task layer
            head = net.head.weight  # (R, T, F): task t's head reads the shared features
            per_task = head.transpose(1, 2)[..., None] * logit_grads[:, None]  # (R, F, T, B)
            return per_task.contiguous()
        # split: the fan-out layer's rows t * H .. (t + 1) * H are task t's
        layer, saved = net.hidden_layers[shared_layers], self._saved[shared_layers]
        d = self._task_layers_backward(logit_grads, shared_layers)  # (R * T, H, B)
        d = d.reshape(saved.outputs.shape) * (saved.outputs > 0)  # (R, T * H, B)
        if layer.norm is not None:
            d = _norm_input_grad(layer.norm, saved, d)
        weight = layer.linear.weight.view(replicas, tasks, -1, top.shape[1])  # (R, T, H, F)
        d = weight.transpose(2, 3) @ d.view(replicas, tasks, -1, batch)  # (R, T, F, B)
        return d.transpose(1, 2).contiguous()

    def _task_layers_backward(self, logit_grads: Tensor, fan_out: int) -> Tensor:
        """Backward through the head and the per-task layers after the fan-out layer (their
        gradients are not needed here): d objective / d (the fan-out layer's output)."""
        net = self.net
        head = net.head
        d = logit_grads.reshape(head.num_groups, head.out_features, -1)
        d = torch.bmm(head.weight.transpose(1, 2), d)
        for index in reversed(range(fan_out + 1, len(net.hidden_layers))):
            layer, saved = net.hidden_layers[index], self._saved[index]
            d = d.reshape(saved.outputs.shape) * (saved.outputs > 0)
            if layer.norm is not None:
                d = _norm_input_grad(layer.norm, saved, d)
            d = torch.bmm(layer.linear.weight.transpose(1, 2), d)
        return d


def _linear_backward(linear: GroupedLinear, d: Tensor, x: Tensor) -> Tensor:
    """(G, out, B) d objective / d output and the (G, in, B) input -> d / d input; the
    weight's (and bias's) gradient written."""
    linear.weight.grad = torch.bmm(d, x.transpose(1, 2))  # (G, out, in)
    if linear.bias is not None:
        linear.bias.grad = d.sum(2, keepdim=True)  # (G, out, 1)
    return torch.bmm(linear.weight.transpose(1, 2), d)


def _embedding_backward(weight: Tensor, indices: Tensor | None, d: Tensor) -> None:
    """The tables' gradient: each looked-up column gets its samples' gradients (G, D, B)."""
    assert indices is not None
    replicas = indices.shape[0]
    tables = weight.view(replicas, -1, weight.shape[2])  # (R, G/R * D, N)
    rows = indices[:, None, :].expand(-1, tables.shape[1], -1)
    grad = torch.zeros_like(weight)
    grad.view(replicas, -1, weight.shape[2]).scatter_add_(
        2, rows, d.reshape(replicas, -1, d.shape[2])
    )
    weight.grad = grad


def _norm_input_grad(norm: nn.BatchNorm1d, saved: _Saved, d: Tensor) -> Tensor:
    """BatchNorm's input gradient for its (G, out, B) output gradient."""
    assert saved.normalised is not None and saved.inv_std is not None
    groups, width, _ = saved.outputs.shape
    normalised, inv_std = saved.normalised, saved.inv_std.view(groups, width, 1)
    dn = d * norm.weight.view(groups, width, 1)
    inner = (dn * normalised).mean(-1, keepdim=True)
    return (dn - dn.mean(-1, keepdim=True) - normalised * inner) * inv_std


def _per_task_hidden_backward(
    layer: HiddenLayer, saved: _Saved, d: Tensor, grads: dict[int, Tensor]
) -> Tensor:
    """A shared layer's backward for (R, out, T, B) per-task output gradients: each task's
    gradients of its parameters into `grads` (R, T, numel / R), (R, in, T, B) returned. The
    BatchNorm statistics are the replica's, shared by its tasks' gradients."""
    replicas, width, tasks, batch = d.shape
    d = (d * (saved.outputs > 0)[:, :, None]).contiguous()  # ReLU
    norm = layer.norm
    if norm is not None:
        assert saved.normalised is not None and saved.inv_std is not None
        normalised = saved.normalised[:, :, None]  # (R, out, 1, B)
        grads[id(norm.weight)] = (d * normalised).sum(-1).transpose(1, 2)  # (R, T, out)
        grads[id(norm.bias)] = d.sum(-1).transpose(1, 2)
        dn = d.mul_(norm.weight.view(replicas, width, 1, 1))
        inner = (dn * normalised).mean(-1, keepdim=True)
        d = (dn - dn.mean(-1, keepdim=True)).sub_(normalised * inner)
        d.mul_(saved.inv_std.view(replicas, width, 1, 1))  # d objective / d (linear output)
    linear = layer.linear
    flat = d.view(replicas, width, tasks * batch)
    weight_grads = torch.bmm(d.view(replicas, width * tasks, batch), saved.inputs.transpose(1, 2))
    grads[id(linear.weight)] = weight_grads.view(replicas, width, tasks, -1).transpose(1, 2)
    grads[id(linear.weight)] = grads[id(linear.weight)].reshape(replicas, tasks, -1)
    if linear.bias is not None:
        grads[id(linear.bias)] = d.sum(-1).transpose(1, 2)
    inputs = torch.bmm(linear.weight.transpose(1, 2), flat)  # (R, in, T * B)
    return inputs.view(replicas, -1, tasks, batch)


def _update_running_statistics(
    norm: nn.BatchNorm1d, mean: Tensor, variance: Tensor, batch: int
) -> None:
    """As `nn.BatchNorm1d` in training mode: running mean and unbiased variance moved by the
    momentum (a cumulative average when it is None), batches counted."""
    assert norm.running_mean is not None and norm.running_var is not None
    assert norm.num_batches_tracked is not None
    norm.num_batches_tracked.add_(1)
    momentum = norm.momentum
    factor = 1.0 / float(norm.num_batches_tracked) if momentum is None else momentum
    norm.running_mean.lerp_(mean.view(-1), factor)
    norm.running_var.lerp_(variance.view(-1) * (batch / (batch - 1)), factor)
