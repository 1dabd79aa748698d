"""The hand-written stacked step that benchmarks measure mtfilter against does mtfilter's work."""

import torch

from benchmarks.stacked_reference import StackedReference
from mtfilter import BitMLP, per_bit_loss


def _library_twin(reference: StackedReference, hidden: int) -> BitMLP:
    """configs/mt.yaml's BitMLP holding the reference's weights."""
    net = BitMLP(num_bits=10, num_samples=1024, layout="mt", hidden_dim=hidden,
                 num_replicas=reference.R)  # fmt: skip
    with torch.no_grad():
        net.embedding.weight.copy_(reference.table)  # type: ignore[union-attr]
        for layer, w in zip(net.hidden_layers, (reference.w1, reference.w2), strict=True):
            layer.linear.weight.copy_(w)
        for i, layer in enumerate(net.hidden_layers):
            assert layer.norm is not None
            layer.norm.weight.copy_(reference.gamma[i].flatten())
            layer.norm.bias.copy_(reference.beta[i].flatten())
        net.head.weight.copy_(reference.w3)
        net.head.bias.copy_(reference.c3)  # type: ignore[union-attr]
    return net


def test_hand_written_gradients_are_autograds_of_the_library_model():
    reference = StackedReference(replicas=3, hidden=6, seed=4)
    reference.train(2)  # away from the initialisation: BatchNorm's scale and shift moved
    net = _library_twin(reference, hidden=6)
    indices = torch.rand(3, 1024, generator=torch.Generator().manual_seed(1)).argsort(1)[:, :512]
    targets = reference.targets.T[indices]  # (R, B, T)
    per_bit_loss(net(indices), targets, "bce").sum().backward()
    layers = net.hidden_layers
    norms = [layer.norm for layer in layers]
    assert net.embedding is not None and net.head.bias is not None
    # in the reference's order: table, w1, w2, w3, c3, BatchNorm scales, BatchNorm shifts
    expected = [
        net.embedding.weight.grad,
        *(layer.linear.weight.grad for layer in layers),
        net.head.weight.grad,
        net.head.bias.grad,
        *(norm.weight.grad.view(3, 6, 1) for norm in norms if norm is not None),
        *(norm.bias.grad.view(3, 6, 1) for norm in norms if norm is not None),
    ]
    for got, want in zip(reference.hand_gradients(indices), expected, strict=True):
        assert want is not None
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_the_reference_learns_and_reports_the_fits_figures():
    reference = StackedReference(replicas=2, hidden=16, lr=0.03)
    history = reference.train(60)  # (epochs, R, T + 2)
    bit_error = history[:, :, -2]
    assert bit_error[-1].max() < bit_error[0].min() - 0.05  # both replicas learn
    net = _library_twin(reference, hidden=16)
    for i, layer in enumerate(net.hidden_layers):  # eval mode's statistics too
        assert layer.norm is not None and layer.norm.running_mean is not None
        layer.norm.running_mean.copy_(reference.running[i][0].flatten())
        layer.norm.running_var.copy_(reference.running[i][1].flatten())  # type: ignore[union-attr]
    net.eval()
    with torch.no_grad():
        logits = net(torch.arange(1024)[None])  # (R, N, T)
    wrong = (logits > 0) != reference.targets.T.bool()
    torch.testing.assert_close(wrong.float().mean((1, 2)), bit_error[-1])
