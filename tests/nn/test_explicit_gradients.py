"""The written-out training step (`mtfilter.nn.explicit_gradients`) against autograd through
`BitMLP`: the same losses, gradients, per-task Jacobians and BatchNorm statistics, to float32
rounding, for every network it covers."""

import copy
import itertools

import pytest
import torch

from mtfilter import BitMLP
from mtfilter.nn.explicit_gradients import ExplicitGradients, unsupported
from mtfilter.nn.losses import per_bit_loss, per_bit_loss_and_gradient
from mtfilter.train.objective import per_replica_jacobian

REPLICAS, BITS, SAMPLES, BATCH = 2, 4, 16, 12
# the `linear` encoding's inputs: 3 real features per sample
FEATURES = torch.randn(SAMPLES, 3, generator=torch.Generator().manual_seed(5))

# layout settings: name -> BitMLP keywords
LAYOUTS = {
    "mt": {"layout": "mt"},
    "st": {"layout": "st"},
    "st-shared-table": {"layout": "st", "shared_embedding": True},
    "split-0": {"layout": "split", "num_shared_layers": 0},
    "split-1": {"layout": "split", "num_shared_layers": 1},
    "mt-4-layers": {"layout": "mt", "num_layers": 4},
    "split-2-of-3": {"layout": "split", "num_shared_layers": 2, "num_layers": 4},
    "mt-no-hidden": {"layout": "mt", "num_layers": 1, "hidden_dim": None},
}
NORMS = {  # (batch_norm, bias_before_batch_norm)
    "batch-norm": (True, False),
    "batch-norm-and-bias": (True, True),
    "no-batch-norm": (False, False),
}
CASES = [
    pytest.param(layout, encoding, norm, loss, id=f"{layout}-{encoding}-{norm}-{loss}")
    for layout, encoding, norm, loss in itertools.product(
        LAYOUTS, ["embedding", "binary", "linear"], NORMS, ["bce", "l1", "mse"]
    )
    if not (layout == "mt-no-hidden" and norm != "batch-norm")  # nothing to normalise
    if encoding != "linear" or loss == "bce"  # the loss's part is the same for every input
]


def _net(layout: str, encoding: str, norm: str, seed: int = 0) -> BitMLP:
    batch_norm, bias = NORMS[norm]
    settings = {"hidden_dim": 5, **LAYOUTS[layout]}
    return BitMLP(
        num_bits=BITS, num_samples=SAMPLES, encoding=encoding, in_dim=4 if encoding == "binary"
        else 3, batch_norm=batch_norm, bias_before_batch_norm=bias, num_replicas=REPLICAS,
        init_seeds=[seed, seed + 1], **settings,
    )  # fmt: skip


def _batch(seed: int = 0, encoding: str = "embedding"):
    """(R, B) distinct indices per replica (or their (R, B, F) features), (R, T, B) targets,
    (R, T) weights of the terms (a Cost-Out draw times a reduction's scale)."""
    generator = torch.Generator().manual_seed(seed)
    indices = torch.stack([torch.randperm(SAMPLES, generator=generator)[:BATCH]
                           for _ in range(REPLICAS)])  # fmt: skip
    targets = torch.randint(0, 2, (REPLICAS, BITS, BATCH), generator=generator).float()
    weights = (torch.rand(REPLICAS, BITS, generator=generator) > 0.3).float() * 0.5
    inputs = FEATURES[indices] if encoding == "linear" else indices
    return inputs, targets, weights


def _autograd_step(net: BitMLP, indices, targets, weights, loss: str) -> torch.Tensor:
    losses = per_bit_loss(net(indices), targets.mT, loss)  # (R, T)
    (losses * weights).sum().backward()
    return losses.detach()


def _explicit_step(net: BitMLP, indices, targets, weights, loss: str):
    step = ExplicitGradients(net)
    logits = step.forward(indices)
    losses, gradient = per_bit_loss_and_gradient(logits, targets, loss)
    gradient = gradient * weights[..., None]
    return step, losses, gradient


@pytest.mark.parametrize(("layout", "encoding", "norm", "loss"), CASES)
def test_gradients_and_statistics_equal_autograds(layout, encoding, norm, loss):
    reference = _net(layout, encoding, norm)
    net = copy.deepcopy(reference)
    indices, targets, weights = _batch(encoding=encoding)
    expected = _autograd_step(reference, indices, targets, weights, loss)
    step, losses, gradient = _explicit_step(net, indices, targets, weights, loss)
    step.backward(gradient)
    torch.testing.assert_close(losses, expected, rtol=1e-6, atol=1e-7)
    for (name, p), q in zip(net.named_parameters(), reference.parameters(), strict=True):
        assert p.grad is not None, name
        # float32 rounding of sums over the batch; a gradient that is 0 in exact arithmetic
        # (none is, here) would be compared to rounding noise
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, b), c in zip(net.named_buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-6, msg=name)


SHARED_LAYOUTS = ["mt", "st-shared-table", "split-0", "split-1", "mt-4-layers", "split-2-of-3",
                  "mt-no-hidden"]  # fmt: skip


@pytest.mark.parametrize("layout", SHARED_LAYOUTS)
@pytest.mark.parametrize("norm", ["batch-norm", "batch-norm-and-bias", "no-batch-norm"])
@pytest.mark.parametrize("encoding", ["embedding", "binary", "linear"])
def test_per_task_jacobian_equals_one_autograd_backward_per_task(layout, norm, encoding):
    if layout == "mt-no-hidden" and norm != "batch-norm":
        pytest.skip("nothing to normalise")
    reference = _net(layout, encoding, norm)
    shared = reference.shared_parameters()
    if not shared:
        pytest.skip(f"{encoding} inputs and no shared layer: nothing shared")
    net = copy.deepcopy(reference)
    indices, targets, weights = _batch(1, encoding)
    losses = per_bit_loss(reference(indices), targets.mT, "bce") * weights
    expected = per_replica_jacobian(losses, shared, REPLICAS)  # (R, T, P)
    step, _, gradient = _explicit_step(net, indices, targets, weights, "bce")
    torch.testing.assert_close(step.task_jacobian(gradient), expected, rtol=1e-4, atol=1e-6)


def test_every_gradient_is_written_anew_each_step():
    """A second step's gradients are that step's own, not added to the first's."""
    net = _net("mt", "embedding", "batch-norm")
    reference = copy.deepcopy(net)
    first, second = _batch(0), _batch(1)
    step, _, gradient = _explicit_step(net, *first, "bce")
    step.backward(gradient)
    step, _, gradient = _explicit_step(net, *second, "bce")
    step.backward(gradient)
    _autograd_step(reference, *first, "bce")
    reference.zero_grad(set_to_none=True)
    _autograd_step(reference, *second, "bce")
    for p, q in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"dropout": 0.1}, "dropout"),
        ({"task_filter": True}, "task filters"),
        ({"residual": True, "num_layers": 4}, "residual layers"),
        ({"batch_norm_chunks": 2}, "chunked or synchronised BatchNorm"),
    ],
)
def test_networks_it_does_not_cover_are_named(settings, reason):
    net = BitMLP(num_bits=BITS, num_samples=SAMPLES, hidden_dim=4, **settings)
    assert unsupported(net) == reason
    with pytest.raises(ValueError, match=reason):
        ExplicitGradients(net)
