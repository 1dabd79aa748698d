"""The per-task filter: a per-bit scale and shift of every shared hidden unit (mt only)."""

import pytest
import torch

from mtfilter import BitMLP, CheckpointMismatchError
from mtfilter.train.checkpoint_compat import check_checkpoint_compatible
from tests.helpers import log_dir, read_scalars, read_summary, state_dict_of, tiny_fit

BITS, SAMPLES, IN_DIM, HIDDEN = 3, 16, 4, 8


def make(task_filter: bool, **kwargs) -> BitMLP:
    kwargs = {"num_bits": BITS, "num_samples": SAMPLES, "in_dim": IN_DIM, "hidden_dim": HIDDEN,
              "num_layers": 4, "init_seeds": [0], **kwargs}  # fmt: skip
    return BitMLP(task_filter=task_filter, **kwargs)


def test_an_untrained_filter_is_the_identity():
    indices = torch.randint(0, SAMPLES, (1, 10), generator=torch.Generator().manual_seed(0))
    plain, filtered = make(False).eval(), make(True).eval()
    torch.testing.assert_close(filtered(indices), plain(indices))
    plain.train(), filtered.train()  # batch statistics: every bit's copy of the batch alike
    torch.testing.assert_close(filtered(indices), plain(indices))


def test_each_bit_sees_the_shared_layers_through_its_own_filter():
    model = make(True, num_replicas=2, init_seeds=[0, 1]).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.hidden:
            layer.filter.scale.copy_(torch.rand(layer.filter.scale.shape, generator=generator))
            layer.filter.shift.normal_(generator=generator)
            layer.norm.running_mean.normal_(generator=generator)
    indices = torch.randint(0, SAMPLES, (2, 5), generator=generator)
    logits = model(indices)  # (R, B, T)
    # the same computation written out, one replica and one bit at a time
    for r in range(2):
        for t in range(BITS):
            x = model.embedding.weight[r][:, indices[r]]  # (in, B)
            for layer in model.hidden:
                assert layer.linear.bias is None  # BatchNorm follows: see BitMLPConfig
                x = layer.linear.weight[r] @ x
                norm = layer.norm
                rows = slice(r * HIDDEN, (r + 1) * HIDDEN)
                x = (x - norm.running_mean[rows, None]) / torch.sqrt(
                    norm.running_var[rows, None] + norm.eps
                ) * norm.weight[rows, None] + norm.bias[rows, None]
                x = torch.relu(layer.filter.scale[r, :, t] * x + layer.filter.shift[r, :, t])
            expected = model.head.weight[r, t] @ x + model.head.bias[r, t]
            torch.testing.assert_close(logits[r, :, t], expected)


def test_filter_parameters_are_task_specific_and_counted():
    model = make(True)
    counts = model.parameter_counts()
    assert counts["filter"] == 2 * HIDDEN * 3 * BITS  # scale and shift, 3 hidden layers, per bit
    assert counts["total"] == make(False).parameter_counts()["total"] + counts["filter"]
    filters = {id(p) for layer in model.hidden for p in layer.filter.parameters()}
    assert filters <= {id(p) for p in model.task_parameters()}
    assert not filters & {id(p) for p in model.shared_parameters()}


@pytest.mark.parametrize("layout", ["st", "split"])
def test_a_filter_needs_the_mt_layout(layout):
    with pytest.raises(Exception, match="task_filter needs layout mt"):
        make(True, layout=layout, num_shared_layers=1 if layout == "split" else None)


def test_the_filter_trains_and_is_reported(run_dir):
    run = tiny_fit("--model.task_filter", "true")
    folder = log_dir(run)
    curve = [value for _, value in read_scalars(folder)["val/loss"]]
    assert curve[-1] < 0.9 * curve[0]
    assert read_summary(folder)["parameters"]["filter"] == 2 * 8 * 2 * 4  # tiny: hidden 8, 2, 4
    weights = state_dict_of(folder / "checkpoints/last.ckpt")
    assert not torch.equal(weights["net.hidden.0.filter.scale"], torch.ones(1, 8, 4, 1))


@pytest.mark.parametrize("option", ["task_filter", "residual", "shared_embedding"])
def test_checkpoints_from_before_the_architecture_options_load_as_those_options_off(option):
    saved = {"data_fingerprint": "f", "num_bits": 4}  # written before the options existed
    off = {"data_fingerprint": "f", "num_bits": 4, "task_filter": False, "residual": False,
           "shared_embedding": False}  # fmt: skip
    check_checkpoint_compatible({"hyper_parameters": saved}, off)  # the options' defaults
    with pytest.raises(CheckpointMismatchError, match=f"{option}: checkpoint False, config True"):
        check_checkpoint_compatible({"hyper_parameters": saved}, {**off, option: True})


def test_the_residual_option_adds_each_hidden_layers_input():
    indices = torch.randint(0, SAMPLES, (1, 6), generator=torch.Generator().manual_seed(2))
    model = make(False, residual=True).eval()
    assert [layer.residual for layer in model.hidden] == [False, True, True]  # in_dim -> hidden
    x = model.embedding.weight[0][:, indices[0]][None]  # (1, in, B)
    for layer in model.hidden:
        y = layer.linear(x)
        norm = layer.norm
        y = (y[0] - norm.running_mean[:, None]) / torch.sqrt(norm.running_var[:, None] + norm.eps)
        y = torch.relu(y * norm.weight[:, None] + norm.bias[:, None])[None]
        x = y + x if layer.residual else y
    torch.testing.assert_close(model(indices), model.head(x).transpose(1, 2))


def test_residual_and_filter_train_with_stacked_seeds(run_dir):
    run = tiny_fit("--model.residual", "true", "--model.task_filter", "true",
                   "--model.num_layers", "4", "--data.seeds", "[0, 1]")  # fmt: skip
    summary = read_summary(log_dir(run) / "seed_1")
    assert summary["status"] == "completed" and summary["val"]["loss_best"] < 0.45
