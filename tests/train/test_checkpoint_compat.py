"""Checkpoints written by earlier versions (tests/data/checkpoints_2026_11_29: before the modules
moved into subpackages, and with a bias before each BatchNorm) still load, evaluate and resume:
their biases are folded into the BatchNorm running means, which changes no output.

Each test compares two computations made here from the same stored starting point, never a
trajectory against figures stored from another machine."""

from pathlib import Path

import pytest
import torch

from mtfilter import BitMappingModule, CheckpointMismatchError, make_targets, per_bit_loss
from tests.helpers import DATA, cli, log_dir, read_summary, state_dict_of, tiny_fit

EARLIER = DATA / "checkpoints_2026_11_29"
# the settings the earlier run was made with (its README)
SETTINGS = ["--data.seeds", "[0, 1]", "--model.loss", "bce", "--convergence.patience", "10",
            "--convergence.check_every", "5", "--convergence.lr_drops", "2",
            "--convergence.rel_tol", "0.3"]  # fmt: skip
WITH_BIASES = ["--model.bias_before_batch_norm", "true"]


def _as_saved(path: Path) -> BitMappingModule:
    """The earlier model exactly as it was saved, biases and all."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = {**checkpoint["hyper_parameters"], "bias_before_batch_norm": True}
    model = BitMappingModule(**hparams)
    model.load_state_dict(checkpoint["state_dict"])
    return model


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_an_earlier_checkpoint_loads_with_its_biases_folded_and_the_same_outputs(training):
    saved = _as_saved(EARLIER / "best.ckpt")
    folded = BitMappingModule.load_from_checkpoint(EARLIER / "best.ckpt")
    assert "net.hidden.0.linear.bias" in saved.state_dict()
    assert not any(".linear.bias" in name for name in folded.state_dict())
    indices = torch.arange(16)[None].expand(2, -1)
    saved.train(training), folded.train(training)
    with torch.no_grad():
        torch.testing.assert_close(folded(indices), saved(indices), rtol=1e-5, atol=1e-6)


def test_an_earlier_checkpoint_validates_to_its_own_figures(run_dir):
    saved = _as_saved(EARLIER / "best.ckpt").eval()
    bits = make_targets(4, 16, "permutation", 0).expand(2, -1, -1)  # tiny.yaml's dataset
    with torch.no_grad():
        expected = per_bit_loss(saved(torch.arange(16)[None].expand(2, -1)), bits, "bce")
    run = cli(["validate", *SETTINGS, "--ckpt_path", str(EARLIER / "best.ckpt")])
    for replica in (0, 1):
        value = float(run.trainer.callback_metrics[f"seed_{replica}/val/loss"])
        assert value == pytest.approx(float(expected[replica].mean()), rel=1e-5)


@pytest.mark.slow
def test_an_earlier_last_checkpoint_resumes_folded_as_it_would_with_its_biases(run_dir):
    """From the same stored state, with the biases folded and with them kept:
    the weights agree to rounding, and each BatchNorm's running mean is the kept one's minus its
    bias. The kept biases random-walk on rounding noise and the running mean lags behind them,
    so there the two differ by at most twice the distance the biases drifted."""
    # 10 more epochs for both whatever their convergence says (its verdict rides on val/loss,
    # which the kept biases' noise moves a little)
    resume = ["--trainer.max_epochs", "40", "--convergence.stop", "false",
              "--ckpt_path", str(EARLIER / "last.ckpt")]  # fmt: skip
    folded = log_dir(tiny_fit(*SETTINGS, *resume))
    kept = log_dir(tiny_fit(*SETTINGS, *WITH_BIASES, *resume))
    a = state_dict_of(folded / "checkpoints/last.ckpt")
    b = state_dict_of(kept / "checkpoints/last.ckpt")
    stored = state_dict_of(EARLIER / "last.ckpt")
    assert set(b) - set(a) == {"net.hidden.0.linear.bias", "net.hidden.1.linear.bias"}
    for name, tensor in a.items():
        if not name.endswith("norm.running_mean"):
            torch.testing.assert_close(tensor, b[name], rtol=1e-5, atol=1e-6, msg=name)
            continue
        bias = name.replace("norm.running_mean", "linear.bias")
        drift = float((b[bias] - stored[bias]).abs().max())
        assert drift < 1e-2  # noise-driven, and small at the dropped rates
        gap = tensor - (b[name] - b[bias].reshape(-1))
        assert float(gap.abs().max()) <= 2 * drift + 1e-6, name
    for seed in (0, 1):
        summary = read_summary(folded / f"seed_{seed}")
        reference = read_summary(kept / f"seed_{seed}")
        assert summary["epochs"] == reference["epochs"] == 40
        # the convergence schedule's state (its learning-rate drops) came back too
        assert summary["convergence"]["lr_drop_epochs"] == [15, 25]
        # the kept biases' noise moves the eval figures a little (drift ~3e-4 here): measured
        # 2.1e-5 relative (2.5e-6 through autograd, whose rounding noise walks elsewhere);
        # a bias folded wrongly moves the loss by far more
        assert summary["val"]["loss_best"] == pytest.approx(reference["val"]["loss_best"], rel=1e-4)


def test_a_model_with_biases_is_not_made_from_a_checkpoint_without(run_dir):
    first = log_dir(tiny_fit("--trainer.max_epochs", "2"))
    with pytest.raises(CheckpointMismatchError, match="bias_before_batch_norm: checkpoint False"):
        tiny_fit("--trainer.max_epochs", "3", *WITH_BIASES, "--ckpt_path",
                 str(first / "checkpoints/last.ckpt"))  # fmt: skip
