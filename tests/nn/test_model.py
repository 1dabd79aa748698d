"""The grouped model against plain torch.nn references built from the same weights."""

import pytest
import torch
from torch import nn

from mtfilter import BitMLP, ConfigError, per_bit_loss

BITS, SAMPLES, IN_DIM, HIDDEN = 3, 16, 4, 8
# real-valued inputs of the `linear` encoding, one row per sample
FEATURES = torch.randn(SAMPLES, IN_DIM, generator=torch.Generator().manual_seed(3))


def make(layout="mt", **kwargs) -> BitMLP:
    kwargs = {
        "num_bits": BITS,
        "num_samples": SAMPLES,
        "in_dim": IN_DIM,
        "hidden_dim": HIDDEN,
        "layout": layout,
        "init_seeds": [0],
        **kwargs,
    }
    return BitMLP(**kwargs)


def linear_from(grouped, group, rows=slice(None)) -> nn.Linear:
    """An nn.Linear holding group `group` of a GroupedLinear (its output units `rows`)."""
    weight = grouped.weight[group][rows]
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=grouped.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if grouped.bias is not None:
            linear.bias.copy_(grouped.bias[group, rows, 0])
    return linear


def norm_from(grouped_norm, channels) -> nn.BatchNorm1d:
    norm = nn.BatchNorm1d(len(range(*channels.indices(10**9))))
    source = grouped_norm
    with torch.no_grad():
        norm.weight.copy_(source.weight[channels])
        norm.bias.copy_(source.bias[channels])
    return norm


def encoder_from(model: BitMLP, group: int) -> nn.Module:
    if model.encoding == "linear":
        return nn.Identity()
    if model.embedding is None:
        codes = model._codes
        return _Codes(codes)
    table = nn.Embedding(SAMPLES, IN_DIM)
    with torch.no_grad():
        table.weight.copy_(model.embedding.weight[group].T)
    return table


class _Codes(nn.Module):
    def __init__(self, codes):
        super().__init__()
        self.register_buffer("codes", codes.clone())

    def forward(self, indices):
        return self.codes[:, indices].T


def block(linear, norm) -> list[nn.Module]:
    return [linear, norm, nn.ReLU()]


def separate_st_models(model: BitMLP) -> list[nn.Sequential]:
    """num_bits independent plain networks holding the st model's weights."""
    networks = []
    for bit in range(BITS):
        layers: list[nn.Module] = [encoder_from(model, bit if model.embedding else 0)]
        for i, layer in enumerate(model.hidden):
            if i == model._fan_out_layer:  # a shared input: first layer computed for all bits
                cols = slice(bit * HIDDEN, (bit + 1) * HIDDEN)
                layers += block(linear_from(layer.linear, 0, cols), norm_from(layer.norm, cols))
            else:
                cols = slice(bit * HIDDEN, (bit + 1) * HIDDEN)
                layers += block(linear_from(layer.linear, bit), norm_from(layer.norm, cols))
        layers.append(linear_from(model.head, bit))
        networks.append(nn.Sequential(*layers))
    return networks


def train(parameters, losses_fn, steps=6, lr=0.05):
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=0.9)
    history = []
    generator = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 2, (SAMPLES, BITS), generator=generator).float()
    for _ in range(steps):
        indices = torch.randperm(SAMPLES, generator=generator)[:10]
        losses = losses_fn(indices, targets[indices])  # (T,)
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
        history.append(losses.detach())
    return torch.stack(history)


def inputs_of(model: BitMLP, indices):
    """What the model reads for these samples: the indices, or their features."""
    return FEATURES[indices] if model.encoding == "linear" else indices


@pytest.mark.parametrize("encoding", ["embedding", "binary", "linear"])
def test_grouped_st_trains_exactly_like_separate_models(encoding):
    model = make("st", encoding=encoding)
    networks = separate_st_models(model)
    grouped_losses = train(
        model.parameters(),
        lambda i, y: per_bit_loss(model(inputs_of(model, i)[None]), y[None], "l1")[0],
    )
    params = [p for net in networks for p in net.parameters()]
    separate_losses = train(
        params,
        lambda i, y: torch.stack(
            [
                (torch.sigmoid(net(inputs_of(model, i))[:, 0]) - y[:, b]).abs().mean()
                for b, net in enumerate(networks)
            ]
        ),
    )
    torch.testing.assert_close(grouped_losses, separate_losses)
    assert not torch.allclose(grouped_losses[0], grouped_losses[-1])  # it did train
    # and the weights after training agree
    for bit, net in enumerate(networks):
        head = net[-1]
        torch.testing.assert_close(head.weight, model.head.weight[bit])
        torch.testing.assert_close(net[1].weight, _first_weight(model, bit))


def _first_weight(model, bit):
    linear = model.hidden[0].linear
    if model._fan_out_layer == 0:
        return linear.weight[0][bit * HIDDEN : (bit + 1) * HIDDEN]
    return linear.weight[bit]


def test_mt_is_the_plain_multitask_mlp():
    model = make("mt")
    reference = nn.Sequential(
        encoder_from(model, 0),
        *block(
            linear_from(model.hidden[0].linear, 0),
            norm_from(model.hidden[0].norm, slice(0, HIDDEN)),
        ),
        *block(
            linear_from(model.hidden[1].linear, 0),
            norm_from(model.hidden[1].norm, slice(0, HIDDEN)),
        ),
        linear_from(model.head, 0),
    )
    grouped = train(model.parameters(), lambda i, y: per_bit_loss(model(i[None]), y[None], "l1")[0])
    plain = train(
        reference.parameters(), lambda i, y: (torch.sigmoid(reference(i)) - y).abs().mean(0)
    )
    torch.testing.assert_close(grouped, plain)


def test_split_shares_the_first_layers_and_branches_per_bit():
    model = make("split", num_layers=4, num_shared_layers=1)
    trunk = nn.Sequential(
        encoder_from(model, 0),
        *block(
            linear_from(model.hidden[0].linear, 0),
            norm_from(model.hidden[0].norm, slice(0, HIDDEN)),
        ),
    )
    fan_out = model.hidden[1]
    branches = [
        nn.Sequential(
            *block(
                linear_from(fan_out.linear, 0, slice(b * HIDDEN, (b + 1) * HIDDEN)),
                norm_from(fan_out.norm, slice(b * HIDDEN, (b + 1) * HIDDEN)),
            ),
            *block(
                linear_from(model.hidden[2].linear, b),
                norm_from(model.hidden[2].norm, slice(b * HIDDEN, (b + 1) * HIDDEN)),
            ),
            linear_from(model.head, b),
        )
        for b in range(BITS)
    ]
    grouped = train(model.parameters(), lambda i, y: per_bit_loss(model(i[None]), y[None], "l1")[0])
    params = list(trunk.parameters()) + [p for branch in branches for p in branch.parameters()]

    def plain_losses(i, y):
        features = trunk(i)
        return torch.stack(
            [
                (torch.sigmoid(branch(features)[:, 0]) - y[:, b]).abs().mean()
                for b, branch in enumerate(branches)
            ]
        )

    torch.testing.assert_close(grouped, train(params, plain_losses))


@pytest.mark.parametrize(
    ("layout", "options"),
    [("mt", {}), ("st", {}), ("mt", {"task_filter": True}), ("mt", {"residual": True}),
     ("st", {"residual": True}), ("mt", {"task_filter": True, "residual": True})],
    ids=["mt", "st", "mt-filter", "mt-residual", "st-residual", "mt-filter-residual"],
)  # fmt: skip
def test_stacked_replicas_match_separate_models_with_their_seeds(layout, options):
    options = {"num_layers": 4, **options}
    stacked = BitMLP(
        num_bits=BITS,
        num_samples=SAMPLES,
        in_dim=IN_DIM,
        hidden_dim=HIDDEN,
        layout=layout,
        num_replicas=2,
        init_seeds=[4, 9],
        **options,
    )
    alone = [make(layout, init_seeds=[seed], **options) for seed in (4, 9)]
    indices = torch.randint(0, SAMPLES, (2, 10), generator=torch.Generator().manual_seed(0))
    out = stacked(indices)
    for r, model in enumerate(alone):
        torch.testing.assert_close(out[r], model(indices[r]))


@pytest.mark.parametrize(
    ("layout", "shared"), [("mt", None), ("st", None), ("split", 0), ("split", 1), ("split", 2)]
)
@pytest.mark.parametrize("encoding", ["embedding", "binary", "linear"])
def test_every_layout_maps_indices_to_one_logit_per_bit(layout, shared, encoding):
    model = make(
        layout, num_shared_layers=shared, encoding=encoding, num_replicas=2, init_seeds=[0, 1]
    )
    assert model(inputs_of(model, torch.randint(0, SAMPLES, (2, 5)))).shape == (2, 5, BITS)
    every = inputs_of(model, torch.arange(SAMPLES)[None])
    assert model(every).shape == (2, SAMPLES, BITS)  # shared by replicas
    single = make(layout, num_shared_layers=shared, encoding=encoding)
    assert single(inputs_of(model, torch.arange(4))).shape == (4, BITS)


def test_linear_encoding_refuses_inputs_of_another_width_or_indices():
    model = make("mt", encoding="linear")
    with pytest.raises(ValueError, match=rf"\(B, {IN_DIM}\) float features, got .* \(5, 3\)"):
        model(torch.randn(5, 3))
    with pytest.raises(ValueError, match="torch.int64"):
        model(torch.arange(5)[None].expand(IN_DIM, -1).T.contiguous())


def _plain_count(in_dim, widths, outputs, embedding=True):
    """Parameters of one plain MLP with BatchNorm: embedding, hidden layers, output layer."""
    count = SAMPLES * in_dim if embedding else 0
    previous = in_dim
    for width in widths:
        count += previous * width + 2 * width  # linear without bias + BatchNorm affine
        previous = width
    return count + previous * outputs + outputs


def test_parameter_counts_per_layout():
    mt = make("mt").parameter_counts()
    st = make("st").parameter_counts()
    assert mt["total"] == _plain_count(IN_DIM, [HIDDEN, HIDDEN], BITS)
    assert st["total"] == BITS * _plain_count(IN_DIM, [HIDDEN, HIDDEN], 1)
    assert st["per_task"] == mt["per_task"] == _plain_count(IN_DIM, [HIDDEN, HIDDEN], 1)
    assert st["shared"] == 0 and mt["task_specific"] == HIDDEN + 1
    assert 2.5 < st["total"] / mt["total"] <= BITS  # about num_bits times mt at equal width
    split = make("split", num_shared_layers=1).parameter_counts()
    assert split["shared"] == SAMPLES * IN_DIM + IN_DIM * HIDDEN + 2 * HIDDEN
    assert split["total"] == split["shared"] + BITS * split["task_specific"]


@pytest.mark.parametrize("layout", ["mt", "st", "split"])
def test_every_parameter_has_a_gradient_that_is_more_than_rounding(layout):
    """BatchNorm subtracts any constant added before it, so a bias on the Linear before it has a
    gradient of exactly 0 in exact arithmetic, rounding noise in float32, which Adam would
    scale into full-size steps. By default there is no such bias; the original's are an option,
    and they start from the same draws, so both models begin with the same weights."""
    shared = 1 if layout == "split" else None
    with_bias = make(layout, num_shared_layers=shared, bias_before_batch_norm=True)
    model = make(layout, num_shared_layers=shared)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter, with_bias.get_parameter(name), rtol=0, atol=0)
    targets = torch.randint(0, 2, (SAMPLES, BITS), generator=torch.Generator().manual_seed(2))
    targets = targets.float()

    def gradients(net: BitMLP) -> dict[str, float]:
        """Each parameter's largest gradient entry, relative to the largest of all."""
        per_bit_loss(net(torch.arange(SAMPLES)), targets, "bce").sum().backward()
        sizes = {n: p.grad.abs().max().item() for n, p in net.named_parameters()}
        return {n: size / max(sizes.values()) for n, size in sizes.items()}

    noise = {n: g for n, g in gradients(with_bias).items() if ".linear.bias" in n}
    assert len(noise) == 2 and max(noise.values()) < 1e-5, noise  # rounding only
    real = gradients(model)
    assert min(real.values()) > 1e-3, real  # every parameter: a gradient the loss gives it


@pytest.mark.parametrize("layout", ["mt", "st", "split"])
def test_shared_parameters_are_those_every_bit_depends_on(layout):
    """Checked against the definition, element by element: a shared tensor has elements that
    every bit's output moves; a task tensor's elements each move one bit's output at most."""
    # without BatchNorm, whose normalisation gives the biases before it no gradient at all
    model = make(layout, num_shared_layers=1 if layout == "split" else None, batch_norm=False)
    logits = model(torch.arange(SAMPLES))  # (N, T)
    parameters = dict(model.named_parameters())
    reached = {name: torch.zeros_like(p, dtype=torch.int) for name, p in parameters.items()}
    for bit in range(BITS):
        grads = torch.autograd.grad(logits[:, bit].sum(), list(parameters.values()),
                                    retain_graph=True, allow_unused=True)  # fmt: skip
        for name, grad in zip(parameters, grads, strict=True):
            if grad is not None:
                reached[name] += (grad != 0).int()
    shared = {n for n, p in parameters.items() if any(p is q for q in model.shared_parameters())}
    assert shared == {name for name, hits in reached.items() if bool((hits == BITS).any())}
    for name in set(parameters) - shared:
        assert int(reached[name].max()) == 1, name  # one bit per element
    assert (shared == set()) == (layout == "st")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"layout": "mtt"}, "layout"),
        ({"layout": "split"}, "num_shared_layers"),
        ({"layout": "split", "num_shared_layers": 3}, "num_shared_layers"),
        ({"num_shared_layers": 1}, "split only"),
        ({"encoding": "binary", "in_dim": 3}, "in_dim=3"),
    ],
    ids=[
        "hidden",
        "layers",
        "dropout",
        "layout-typo",
        "split-needs-k",
        "split-k-range",
        "k-without-split",
        "binary-too-narrow",
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make(**kwargs)


def test_the_settings_are_one_config_object_taken_as_it_is_or_as_keywords():
    from dataclasses import FrozenInstanceError, asdict

    from mtfilter import BitMappingModule, BitMLPConfig

    config = BitMLPConfig(num_bits=4, num_samples=16, layout="st", hidden_dim=8, init_seeds=[3])
    built, keywords = BitMLP(config), BitMLP(**asdict(config))
    assert built.config == keywords.config == config
    for a, b in zip(built.parameters(), keywords.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FrozenInstanceError):
        config.hidden_dim = 16  # type: ignore[misc]
    with pytest.raises(TypeError, match="not both"):
        BitMLP(config, hidden_dim=16)
    # the LightningModule takes the same fields as keywords and records all of them
    module = BitMappingModule(num_bits=4, seeds=[0], layout="st", hidden_dim=8)
    assert module.net.config.hidden_dim == 8 and module.hparams["num_layers"] == 3
    assert {k for k in asdict(config) if k not in ("num_replicas", "init_seeds")} <= set(
        module.hparams
    )
