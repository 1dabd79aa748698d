import pytest
import torch

from mtfilter import BitMappingModule, ConfigError, per_bit_loss
from mtfilter.nn import counter_rng
from mtfilter.record import metrics
from mtfilter.record.evaluation import evaluate
from mtfilter.record.metrics import EpochFigures
from mtfilter.train.epoch_totals import EpochTotals

BITS = 4


def module(**kwargs) -> BitMappingModule:
    kwargs = {
        "num_bits": BITS,
        "num_samples": 16,
        "in_dim": 4,
        "hidden_dim": 8,
        "seeds": [0],
        **kwargs,
    }
    return BitMappingModule(**kwargs)


def test_per_bit_losses_match_their_definitions():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 0.5], [3.0, -2.0]]])  # (1, B=3, T=2)
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    p = torch.sigmoid(logits)
    torch.testing.assert_close(per_bit_loss(logits, targets, "l1"), (p - targets).abs().mean(1))
    torch.testing.assert_close(per_bit_loss(logits, targets, "mse"), ((p - targets) ** 2).mean(1))
    bce = -(targets * p.log() + (1 - targets) * (1 - p).log()).mean(1)
    torch.testing.assert_close(per_bit_loss(logits, targets, "bce"), bce)
    assert per_bit_loss(logits, targets, "l1").shape == (1, 2)


def test_objective_sums_bits_and_logged_loss_is_their_mean():
    gradients = module().objective
    loss_per_bit = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    assert float(gradients.objective(loss_per_bit, gradients.kept_terms(0))) == pytest.approx(1.0)
    # an epoch of two equal batches: per bit their sample-weighted mean, logged as its bit mean
    totals = EpochTotals()
    totals.add(loss_per_bit, batch_size=8)
    totals.add(3 * loss_per_bit, batch_size=8)
    inputs = EpochFigures(train_loss=totals.mean(), batch_losses=None, evaluation=None)
    row = metrics.epoch_row(inputs, figures=[metrics.FIGURES[0]])  # train/loss, then per bit
    assert metrics.FIGURES[0].tag == "train/loss"
    torch.testing.assert_close(row[0], torch.tensor([0.5, 0.2, 0.4, 0.6, 0.8]))


def test_loss_dropout_drops_whole_bit_terms_at_rate_p_deterministically():
    gradients = module(loss_dropout=0.3, seeds=[0, 1]).objective
    ones = torch.ones(2, BITS)
    kept = torch.stack([gradients.kept_terms(step) for step in range(2000)]).float()
    assert abs(float(kept.mean()) - 0.7) < 0.02
    # objective at step 0 counts exactly the kept terms, unscaled
    objective = gradients.objective(ones, gradients.kept_terms(0))
    assert float(objective) == pytest.approx(float(kept[0].sum()))
    # replica 1 drops what a separate run with seed 1 drops
    alone = module(loss_dropout=0.3, seeds=[1]).objective
    assert float(alone.objective(ones[:1], alone.kept_terms(0))) == pytest.approx(
        float(kept[0, 1].sum())
    )


def test_a_dropped_bit_sends_no_gradient():
    model = module(layout="st", loss_dropout=0.5)
    gradients = model.objective
    draws = counter_rng.uniform(gradients.dropout_keys, counter_rng.LOSS_DROPOUT_STREAM, 0)
    dropped = (draws < 0.5)[0]
    assert 0 < int(dropped.sum()) < BITS  # this seed drops some bits but not all at step 0
    indices = torch.arange(16)[None]
    targets = torch.rand(1, 16, BITS).round()
    loss_per_bit = per_bit_loss(model.net(indices), targets, "l1")
    gradients.objective(loss_per_bit, gradients.kept_terms(0)).backward()
    head_grad = model.net.head.weight.grad  # (T, hidden, 1) in st
    for bit in range(BITS):
        assert bool((head_grad[bit] == 0).all()) == bool(dropped[bit])


def test_evaluation_figures_are_torchmetrics_definitions():
    from torchmetrics.functional.classification import (
        multilabel_accuracy,
        multilabel_exact_match,
    )

    model = module(seeds=[0, 1])
    model.eval()
    indices = torch.arange(16)[None]
    targets = torch.randint(0, 2, (1, 16, BITS), generator=torch.Generator().manual_seed(0)).float()
    evaluation = evaluate(model.net, indices, targets, "l1")
    probabilities = torch.sigmoid(model.net(indices).detach())  # (R, N, T)
    for replica in range(2):
        expected = multilabel_accuracy(
            probabilities[replica], targets[0].long(), BITS, average=None
        )
        torch.testing.assert_close(evaluation.accuracy[replica], expected)
        expected = multilabel_exact_match(probabilities[replica], targets[0].long(), BITS)
        torch.testing.assert_close(evaluation.exact_match[replica], expected)
    logits = model.net(indices).detach()
    torch.testing.assert_close(
        evaluation.loss, per_bit_loss(logits, targets.expand_as(logits), "l1")
    )
    assert 0 < float(evaluation.accuracy.mean()) < 1  # a real mix of right and wrong bits


def test_default_optimizer_is_the_converged_modes_adam():
    optimizer = module().configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 3e-4


def test_seed_defaults_to_the_global_seed():
    torch.manual_seed(123)
    assert module(seeds=None).seeds == [123]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_dropout": 1.0}, "loss_dropout"),
        ({"loss_dropout": -0.1}, "loss_dropout"),
        ({"loss": "l3"}, "loss"),
        ({"seeds": [2, 2]}, "seeds"),
    ],
    ids=["p-one", "p-negative", "loss-typo", "duplicate-seeds"],
)
def test_bad_settings_name_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        module(**kwargs)
