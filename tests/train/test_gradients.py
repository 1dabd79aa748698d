"""A fit with its gradients written out (`model.gradients: explicit`) against the same fit through
autograd: the same curves, conflict figures and weights over a short horizon; autograd wherever
the written-out step does not cover the run; and `auto` writing out the steps of aggregators."""

import logging

import pytest
import torch

from tests.helpers import log_dir, read_scalars, state_dict_of, tiny_fit

# 20 epochs of configs/tiny.yaml: 40 Adam steps. The two ways differ by float32 rounding in the
# first step (tests/nn/test_explicit_gradients.py); over so short a horizon Adam grows that
# little: measured at most 2.3e-7 relative in the losses, 6e-6 in the cosines. 1e-4 leaves
# room for other CPUs' rounding without letting a wrong gradient through.
HORIZON = ["--trainer.max_epochs", "20", "--data.seeds", "[0, 1]"]
TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}


def _fit(gradients: str, *args: str):
    return log_dir(tiny_fit(*HORIZON, "--model.gradients", gradients, *args))


def _curves(folder, tags):
    scalars = read_scalars(folder)
    return {tag: torch.tensor([value for _, value in scalars[tag]]) for tag in tags}


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--model.layout", "st", "--model.loss", "bce"],
        ["--model.layout", "split", "--model.num_shared_layers", "1", "--model.loss", "mse"],
        ["--model.loss_dropout", "0.3", "--model.loss_reduction", "mean"],
        ["--model.encoding", "binary", "--model.batch_norm", "false"],
        ["--model.learning_rates", "[0.003, 0.03]"],
    ],
    ids=["mt-l1", "st-bce", "split-mse", "cost-out-mean", "binary-no-batch-norm", "stacked-rates"],
)
def test_written_out_gradients_train_as_autograd_does(run_dir, args):
    explicit, autograd = _fit("explicit", *args), _fit("autograd", *args)
    for seed in (0, 1):
        folder = f"seed_{seed}" if "--model.learning_rates" not in args else f"seed_{seed}-lr_0.03"
        tags = ["val/loss", "train/loss", "val/bit_error"]
        ours, theirs = _curves(explicit / folder, tags), _curves(autograd / folder, tags)
        for tag in tags:
            torch.testing.assert_close(ours[tag], theirs[tag], **TOLERANCE, msg=tag)
    ours, theirs = (
        state_dict_of(explicit / "checkpoints/last.ckpt"),
        state_dict_of(autograd / "checkpoints/last.ckpt"),
    )
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=1e-3, atol=1e-5, msg=name)


def test_upgrad_and_the_conflict_figures_equal_autograds(run_dir):
    args = ["--model.aggregator.class_path", "torchjd.aggregation.UPGrad",
            "--model.telemetry_interval", "5", "--model.loss", "bce"]  # fmt: skip
    explicit, autograd = _fit("explicit", *args), _fit("autograd", *args)
    tags = ["val/loss", "conflict/mean_cosine", "conflict/grad_norm_mean", "conflict/fraction"]
    for seed in (0, 1):
        ours = _curves(explicit / f"seed_{seed}", tags)
        theirs = _curves(autograd / f"seed_{seed}", tags)
        for tag in tags:
            torch.testing.assert_close(ours[tag], theirs[tag], **TOLERANCE, msg=tag)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--model.dropout", "0.1"], "dropout"),
        (["--model.scalarizer.class_path", "torchjd.scalarization.GeometricMean"], "a scalarizer"),
        (
            [
                "--model.accumulate_gradients",
                "true",
                "--model.optimizer.class_path",
                "torch.optim.SGD",
            ],
            "accumulated gradients",
        ),  # fmt: skip
    ],
)
def test_what_it_does_not_cover_trains_by_autograd_and_says_why(run_dir, caplog, args, reason):
    with caplog.at_level(logging.INFO):
        tiny_fit("--trainer.max_epochs", "2", "--model.gradients", "explicit", *args)
    assert f"gradients by autograd: the written-out step does not cover {reason}" in caplog.text


def test_auto_writes_out_only_the_steps_an_aggregator_takes(run_dir):
    plain = tiny_fit("--trainer.max_epochs", "1")
    assert plain.model.objective.explicit is None
    upgrad = tiny_fit("--trainer.max_epochs", "1", "--model.aggregator.class_path",
                      "torchjd.aggregation.UPGrad")  # fmt: skip
    assert upgrad.model.objective.explicit is not None
