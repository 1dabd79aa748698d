"""The fastest plain-PyTorch mt training we know how to write on a CPU: the yardstick for a
stacked `mtfilter fit`.

`StackedReference` trains R independent copies of configs/mt.yaml's network (embedding 16 ->
hidden -> hidden -> 10 logits, BatchNorm with no bias before it, ReLU) under the bce loss with
no framework at all:
- every replica in one batched computation, feature-major (R, F, B) as `mtfilter.nn.layers`;
- the backward pass written out by hand (no autograd graph), each gradient computed straight
  into a buffer allocated once (`.grad` of the parameters);
- fused Adam (`torch.optim.Adam(fused=True)`, one pass per tensor) on the stacked tensors;
- each replica's own sample order drawn for all replicas at once, an epoch's batches gathered
  with one index;
- the same evaluation pass as a fit, every epoch: the whole dataset in eval mode, per-bit loss,
  bit error and exact-match error per replica, kept on the device.

It does no logging, checkpointing, convergence checks or per-replica learning rates (every
replica runs at one rate): what it costs is the floor of what the step can cost here.
"""

import torch
from torch import Tensor

from mtfilter import make_targets

EPS = 1e-5  # nn.BatchNorm1d's
MOMENTUM = 0.1


class StackedReference:
    """R replicas of mt `hidden`-wide, one optimizer step per minibatch, on `device`."""

    def __init__(self, replicas: int, hidden: int, num_bits: int = 10, in_dim: int = 16,
                 batch_size: int = 512, lr: float = 0.01, seed: int = 0) -> None:  # fmt: skip
        self.R, self.N, self.T, self.B = replicas, 2**num_bits, num_bits, batch_size
        g = torch.Generator().manual_seed(seed)

        def uniform(*shape: int, fan_in: int) -> Tensor:
            bound = fan_in**-0.5
            return torch.empty(*shape).uniform_(-bound, bound, generator=g)

        R, H, T = replicas, hidden, num_bits
        self.table = torch.randn(R, in_dim, self.N, generator=g)  # (R, D, N)
        self.w1 = uniform(R, H, in_dim, fan_in=in_dim)
        self.w2 = uniform(R, H, H, fan_in=H)
        self.w3 = uniform(R, T, H, fan_in=H)
        self.c3 = uniform(R, T, 1, fan_in=H)
        self.gamma = [torch.ones(R, H, 1) for _ in range(2)]  # BatchNorm scale and shift
        self.beta = [torch.zeros(R, H, 1) for _ in range(2)]
        self.running = [(torch.zeros(R, H, 1), torch.ones(R, H, 1)) for _ in range(2)]
        self.params = [self.table, self.w1, self.w2, self.w3, self.c3, *self.gamma, *self.beta]
        for p in self.params:
            p.requires_grad_(True)
            p.grad = torch.zeros_like(p)  # written in place by every backward
        # Adam's state, for torch's fused kernel called directly: torch.optim.Adam.step spends
        # ~4x the kernel's own time in Python around it at these sizes
        self.lr = lr
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros(()) for _ in self.params]
        self.targets = make_targets(num_bits, self.N, "permutation", 0).T.contiguous()  # (T, N)
        self.generator = torch.Generator().manual_seed(seed + 1)

    def train(self, epochs: int) -> Tensor:
        """(epochs, R, T + 2) figures: per-bit val loss, bit error, exact-match error."""
        history = torch.empty(epochs, self.R, self.T + 2)
        for epoch in range(epochs):
            order = torch.rand(self.R, self.N, generator=self.generator).argsort(dim=1)
            with torch.no_grad():
                for start in range(0, self.N, self.B):
                    self._step(order[:, start : start + self.B])  # (R, B)
                history[epoch] = self._evaluate()
        return history

    def _step(self, indices: Tensor) -> None:
        x0 = self.table.gather(2, indices[:, None].expand(-1, self.table.shape[1], -1))
        a1, cache1 = self._hidden(self.w1, x0, 0)
        a2, cache2 = self._hidden(self.w2, a1, 1)
        logits = torch.baddbmm(self.c3, self.w3, a2)  # (R, T, B)
        targets = self.targets[:, indices].transpose(0, 1)  # (R, T, B)
        # d(sum over bits of the batch-mean bce) / d logits
        d = (torch.sigmoid(logits) - targets).div_(indices.shape[1])
        torch.bmm(d, a2.transpose(1, 2), out=self.w3.grad)
        torch.sum(d, 2, keepdim=True, out=self.c3.grad)
        d = self._hidden_backward(torch.bmm(self.w3.transpose(1, 2), d), a2, cache2, 1)
        torch.bmm(d, a1.transpose(1, 2), out=self.w2.grad)
        d = self._hidden_backward(torch.bmm(self.w2.transpose(1, 2), d), a1, cache1, 0)
        torch.bmm(d, x0.transpose(1, 2), out=self.w1.grad)
        d = torch.bmm(self.w1.transpose(1, 2), d)  # (R, D, B): into the looked-up rows
        table_grad = self.table.grad
        assert table_grad is not None
        table_grad.zero_().scatter_add_(2, indices[:, None].expand_as(d), d)
        self._adam()

    def _adam(self) -> None:
        """torch.optim.Adam(fused=True)'s step at its defaults, without its Python around it."""
        torch._foreach_add_(self.steps, 1)
        torch._fused_adam_(
            self.params, [p.grad for p in self.params], self.exp_avgs, self.exp_avg_sqs, [],
            self.steps, amsgrad=False, lr=self.lr, beta1=0.9, beta2=0.999, weight_decay=0.0,
            eps=1e-8, maximize=False,
        )  # fmt: skip

    def _hidden(self, w: Tensor, x: Tensor, layer: int) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        z = torch.bmm(w, x)  # (R, H, B)
        # two passes: torch.var_mean over the last axis is ~7x slower at these sizes on a CPU
        mean = z.mean(2, keepdim=True)
        centred = z - mean
        var = (centred * centred).mean(2, keepdim=True)
        rstd = (var + EPS).rsqrt()
        xhat = centred.mul_(rstd)
        a = torch.addcmul(self.beta[layer], xhat, self.gamma[layer]).relu_()
        running_mean, running_var = self.running[layer]
        batch = z.shape[2]
        running_mean.lerp_(mean, MOMENTUM)
        running_var.lerp_(var * (batch / (batch - 1)), MOMENTUM)
        return a, (xhat, rstd)

    def _hidden_backward(self, da: Tensor, a: Tensor, cache: tuple[Tensor, Tensor],
                         layer: int) -> Tensor:  # fmt: skip
        """d loss / d (the layer's pre-BatchNorm z), filling BatchNorm's two gradients."""
        xhat, rstd = cache
        dy = da.mul_(a > 0)
        torch.sum(dy * xhat, 2, keepdim=True, out=self.gamma[layer].grad)
        torch.sum(dy, 2, keepdim=True, out=self.beta[layer].grad)
        dxhat = dy.mul_(self.gamma[layer])
        # BatchNorm's input gradient: rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        inner = (dxhat * xhat).mean(2, keepdim=True)
        return (dxhat - dxhat.mean(2, keepdim=True)).sub_(xhat * inner).mul_(rstd)

    def _evaluate(self) -> Tensor:
        x = self.table
        for layer, w in enumerate((self.w1, self.w2)):
            mean, var = self.running[layer]
            z = torch.bmm(w, x)
            x = torch.addcmul(self.beta[layer], (z - mean) * (var + EPS).rsqrt(),
                              self.gamma[layer]).relu_()  # fmt: skip
        logits = torch.baddbmm(self.c3, self.w3, x)  # (R, T, N)
        targets = self.targets.expand_as(logits)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, targets, reduction="none"
        ).mean(2)
        wrong = (logits > 0) != targets.bool()  # (R, T, N)
        bit_error = wrong.float().mean((1, 2))
        exact_error = wrong.any(1).float().mean(1)
        return torch.cat([loss, bit_error[:, None], exact_error[:, None]], dim=1)

    def hand_gradients(self, indices: Tensor) -> list[Tensor]:
        """The hand-written backward's gradients of one step, the weights left as they were."""
        weights = [p.detach().clone() for p in self.params]
        state = [[t.clone() for t in ts] for ts in (self.exp_avgs, self.exp_avg_sqs, self.steps)]
        saved = [(m.clone(), v.clone()) for m, v in self.running]
        with torch.no_grad():
            self._step(indices)
            grads = [p.grad.clone() for p in self.params]  # type: ignore[union-attr]
            for p, w in zip(self.params, weights, strict=True):
                p.copy_(w)
        self.exp_avgs, self.exp_avg_sqs, self.steps = state
        self.running = saved
        return grads
