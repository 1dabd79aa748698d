"""The floor rule of the convergence schedule: a replica whose bit error and exact-match error
reach the representational floor has converged there (reason `floor`), alone or stacked, and a
resumed fit stops where an uninterrupted one does."""

import pytest
import torch

from mtfilter.sweep._definition import with_floor_stop
from tests.helpers import log_dir, read_summary, state_dict_of, tiny_fit

# bce at lr 0.03 takes tiny's mt (hidden 8, 4 bits: floor 0) to bit error 0 in 40-70 epochs;
# the plateau rule cannot end it first (patience longer than the cap)
FLOOR = ["--convergence.stop_at_floor", "true", "--convergence.check_every", "10",
         "--convergence.patience", "100000", "--model.loss", "bce",
         "--model.optimizer.init_args.lr", "0.03"]  # fmt: skip


def test_a_replica_at_the_floor_converges_there_and_says_why(run_dir):
    folder = log_dir(tiny_fit(*FLOOR, "--trainer.max_epochs", "2000"))
    summary = read_summary(folder)
    convergence = summary["convergence"]
    assert convergence["converged"] is True and convergence["converged_reason"] == "floor"
    assert summary["epochs"] == convergence["epoch"] < 2000 and summary["epochs"] % 10 == 0
    assert summary["floor"]["bit_error"] == 0
    assert summary["val"]["bit_error_best"] == summary["val"]["exact_match_error_best"] == 0
    # the errors reached 0 no earlier than the check before the one that saw them there
    assert convergence["epoch"] - 10 < summary["val"]["bit_error_best_epoch"] <= summary["epochs"]


def test_without_the_rule_the_same_fit_trains_past_the_floor(run_dir):
    summary = read_summary(log_dir(tiny_fit(*FLOOR[2:], "--trainer.max_epochs", "200")))
    assert summary["val"]["bit_error_best"] == 0 and summary["epochs"] == 200
    assert summary["convergence"]["converged"] is False


def test_a_resumed_fit_stops_at_the_floor_where_an_uninterrupted_one_does(run_dir):
    straight = read_summary(log_dir(tiny_fit(*FLOOR, "--trainer.max_epochs", "2000")))
    first = tiny_fit(*FLOOR, "--trainer.max_epochs", str(straight["epochs"] // 2))
    assert read_summary(log_dir(first))["convergence"]["converged"] is False  # stopped before
    resumed = tiny_fit(*FLOOR, "--trainer.max_epochs", "2000",
                       "--ckpt_path", str(log_dir(first) / "checkpoints/last.ckpt"))  # fmt: skip
    summary = read_summary(log_dir(resumed))
    assert summary["epochs"] == straight["epochs"]
    assert summary["convergence"] == straight["convergence"]
    assert summary["val"]["loss_best"] == pytest.approx(straight["val"]["loss_best"], rel=1e-5)


def test_stacked_replicas_stop_at_the_floor_each_as_its_separate_run(run_dir):
    folder = log_dir(tiny_fit(*FLOOR, "--trainer.max_epochs", "2000", "--data.seeds", "[0, 1, 2]"))
    best = state_dict_of(folder / "checkpoints/best.ckpt")
    ends = []
    for replica, seed in enumerate((0, 1, 2)):
        stacked = read_summary(folder / f"seed_{seed}")
        alone_folder = log_dir(tiny_fit(*FLOOR, "--trainer.max_epochs", "2000",
                                        "--seed_everything", str(seed)))  # fmt: skip
        alone = read_summary(alone_folder)
        assert stacked["convergence"] == alone["convergence"]
        assert stacked["convergence"]["converged_reason"] == "floor"
        assert stacked["epochs"] == alone["epochs"] == stacked["convergence"]["epoch"]
        errors = [key for key in alone["val"] if "error" in key]  # values and epochs
        assert {k: stacked["val"][k] for k in errors} == {k: alone["val"][k] for k in errors}
        assert stacked["val"]["loss_best"] == pytest.approx(alone["val"]["loss_best"], rel=1e-4)
        # the stacked best checkpoint holds each replica's best weights, from its own epochs
        for name, tensor in state_dict_of(alone_folder / "checkpoints/best.ckpt").items():
            if tensor.dim() == 0:  # num_batches_tracked
                continue
            mine = best[name].reshape(3, -1)[replica]
            torch.testing.assert_close(mine, tensor.reshape(-1), rtol=1e-4, atol=1e-5, msg=name)
        ends.append(stacked["epochs"])
    assert len(set(ends)) > 1  # they reached the floor at different epochs


def test_a_study_compared_on_a_loss_free_error_stops_at_the_floor_unless_told_otherwise():
    assert with_floor_stop({}, "bit_error") == {"convergence.stop_at_floor": True}
    assert with_floor_stop({}, "exact_match_error") == {"convergence.stop_at_floor": True}
    assert with_floor_stop({}, "val") == {} and with_floor_stop({}, None) == {}
    kept = {"convergence.stop_at_floor": False}
    assert with_floor_stop(kept, "bit_error") == kept
