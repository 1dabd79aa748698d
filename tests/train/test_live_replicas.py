"""Stacks whose cost follows the live replicas: a replica whose run ended leaves the batched
computation, its weights kept; the survivors train on exactly as their separate runs, a resumed
compacted stack as an uninterrupted one."""

import pytest
import torch

from tests.helpers import log_dir, read_summary, state_dict_of, tiny_fit

# bce at lr 0.03 takes tiny's mt to bit error 0, the floor, in 40-70 epochs, seed by seed
FLOOR = ["--convergence.stop_at_floor", "true", "--convergence.check_every", "10",
         "--convergence.patience", "100000", "--model.loss", "bce",
         "--model.optimizer.init_args.lr", "0.03", "--model.telemetry_interval", "10"]  # fmt: skip


def _figures(summary: dict) -> dict:
    """What must agree between a stacked replica and its separate run: when and why it
    stopped, its errors (values and epochs), and its loss to rounding."""
    errors = {key: value for key, value in summary["val"].items() if "error" in key}
    return {"convergence": summary["convergence"], "epochs": summary["epochs"], **errors,
            "loss_best": pytest.approx(summary["val"]["loss_best"], rel=1e-4)}  # fmt: skip


def test_survivors_train_as_their_separate_runs_and_the_stopped_keep_their_weights(run_dir):
    stacked = tiny_fit(*FLOOR, "--trainer.max_epochs", "2000", "--data.seeds", "[0, 1, 2]",
                       "--model.learning_rates", "[0.03, 0.01]")  # fmt: skip
    folder = log_dir(stacked)
    last = state_dict_of(folder / "checkpoints/last.ckpt")
    ends = {}
    for replica, name in enumerate(r.name for r in stacked.model.replicas):
        seed, rate = (
            stacked.model.replicas[replica].seed,
            stacked.model.replicas[replica].learning_rate,
        )
        own = ["--seed_everything", str(seed), "--model.optimizer.init_args.lr", str(rate)]
        alone = log_dir(tiny_fit(*FLOOR, "--trainer.max_epochs", "2000", *own))
        mine = read_summary(folder / name)
        assert _figures(mine) == _figures(read_summary(alone)), name
        conflicts = mine["multitask"]["conflict_last"]
        assert conflicts == pytest.approx(read_summary(alone)["multitask"]["conflict_last"],
                                          rel=1e-3, abs=1e-5)  # fmt: skip
        # the stack's last.ckpt holds each replica's weights as its run ended
        for key, tensor in state_dict_of(alone / "checkpoints/last.ckpt").items():
            if tensor.dim() == 0:  # num_batches_tracked
                continue
            torch.testing.assert_close(last[key].reshape(6, -1)[replica], tensor.reshape(-1),
                                       rtol=1e-4, atol=1e-5, msg=f"{name} {key}")  # fmt: skip
        ends[replica] = mine["epochs"]
    survivors = [r for r, end in ends.items() if end == max(ends.values())]
    assert len(survivors) < 6  # some stopped first: the stack shrank to the others
    assert stacked.model.live.live == survivors
    assert stacked.model.live.net.num_replicas == len(survivors)


def test_a_resumed_compacted_stack_ends_as_an_uninterrupted_one(run_dir):
    seeds = ["--data.seeds", "[0, 1, 2]"]  # at the floor at epochs 70, 50 and 40
    straight = log_dir(tiny_fit(*FLOOR, *seeds, "--trainer.max_epochs", "2000"))
    first = tiny_fit(*FLOOR, *seeds, "--trainer.max_epochs", "60")
    assert first.model.live.live == [0]  # seeds 1 and 2 had stopped: compacted when saved
    resumed = tiny_fit(*FLOOR, *seeds, "--trainer.max_epochs", "2000",
                       "--ckpt_path", str(log_dir(first) / "checkpoints/last.ckpt"))  # fmt: skip
    assert resumed.model.live.live == [0]  # stopped again before its first step
    for seed in (0, 1, 2):
        again = read_summary(log_dir(resumed) / f"seed_{seed}")
        assert _figures(again) == _figures(read_summary(straight / f"seed_{seed}")), seed


def test_without_compaction_stopped_replicas_stay_frozen_in_the_stack(run_dir):
    seeds = ["--data.seeds", "[0, 1, 2]"]  # at the floor at epochs 70, 50 and 40
    compacted = tiny_fit(*FLOOR, *seeds, "--trainer.max_epochs", "2000")
    whole = tiny_fit(*FLOOR, *seeds, "--trainer.max_epochs", "2000",
                     "--convergence.compact_stack", "false")  # fmt: skip
    assert not whole.model.live.compacted and whole.model.live.net.num_replicas == 3
    for name in (r.name for r in whole.model.replicas):  # the same runs, at the cost of three
        kept, dropped = (read_summary(log_dir(fit) / name) for fit in (whole, compacted))
        assert _figures(kept) == _figures(dropped), name


def test_a_compacted_upgrad_stack_written_out_trains_as_its_separate_runs(run_dir):
    """The written-out step (which UPGrad takes by default) rebuilt for the compacted stack."""
    upgrad = [*FLOOR, "--model.aggregator.class_path", "torchjd.aggregation.UPGrad",
              "--model.gradients", "explicit", "--trainer.max_epochs", "2000"]  # fmt: skip
    # at the floor at epochs 50, 50, 90 and 220: the last two train on in smaller stacks
    stacked = tiny_fit(*upgrad, "--data.seeds", "[0, 1]", "--model.learning_rates", "[0.03, 0.01]")
    ends = []
    for replica in stacked.model.replicas:
        own = ["--seed_everything", str(replica.seed),
               "--model.optimizer.init_args.lr", str(replica.learning_rate)]  # fmt: skip
        alone = log_dir(tiny_fit(*upgrad, *own))
        mine = read_summary(log_dir(stacked) / replica.name)
        assert _figures(mine) == _figures(read_summary(alone)), replica.name
        ends.append(mine["epochs"])
    assert len(set(ends)) > 2 and stacked.model.live.compacted  # the stack did shrink
    assert stacked.model.objective.explicit is not None
    assert stacked.model.objective.explicit.net is stacked.model.live.net
