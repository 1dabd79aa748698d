"""The objective of a step: TorchJD aggregation of the shared parameters' per-task gradients,
scalarizers, Cost-Out, and the conflict telemetry of a fit."""

import re

import pytest
import torch
import torchjd.aggregation
import torchjd.scalarization
from torchjd.aggregation import MGDA, Mean, UPGrad

from mtfilter import BitMappingModule, BitMLP, ConfigError, make_targets, per_bit_loss
from mtfilter.train.objective import aggregate, per_replica_jacobian, set_shared_gradients
from tests.helpers import log_dir, read_scalars, read_summary, state_dict_of, tiny_fit

BITS = 4
LAST = "checkpoints/last.ckpt"


def _model_and_losses(layout="mt", replicas=2):
    net = BitMLP(num_bits=BITS, num_samples=16, layout=layout, num_shared_layers=1 if
                 layout == "split" else None, in_dim=4, hidden_dim=8, num_replicas=replicas,
                 init_seeds=list(range(replicas)))  # fmt: skip
    indices = torch.stack([torch.randperm(16, generator=torch.Generator().manual_seed(r))[:8]
                           for r in range(replicas)])  # fmt: skip
    targets = torch.rand(replicas, 8, BITS, generator=torch.Generator().manual_seed(9)).round()
    return net, per_bit_loss(net(indices), targets, "l1")  # (R, T)


@pytest.mark.parametrize("sequential", [True, False], ids=["per-task", "vmapped"])
@pytest.mark.parametrize("layout", ["mt", "split"])
def test_per_replica_jacobian_holds_each_replicas_own_task_gradients(layout, sequential):
    net, losses = _model_and_losses(layout)
    shared = net.shared_parameters()
    matrices = per_replica_jacobian(losses, shared, 2, sequential)  # (R, T, P)
    replica_size = sum(p.numel() for p in shared) // 2
    assert matrices.shape == (2, BITS, replica_size)
    for replica in range(2):
        for task in range(BITS):
            grads = torch.autograd.grad(losses[replica, task], shared, retain_graph=True)
            # this replica's rows of every stacked parameter, in order
            own = torch.cat([g.reshape(2, -1)[replica] for g in grads])
            torch.testing.assert_close(matrices[replica, task], own)


def test_gramian_path_equals_torchjds_own_aggregation_per_replica():
    matrices = torch.randn(3, BITS, 50, generator=torch.Generator().manual_seed(0))
    for aggregator in (UPGrad(), MGDA()):
        expected = torch.stack([aggregator(m) for m in matrices])
        torch.testing.assert_close(aggregate(matrices, aggregator), expected)
    torch.testing.assert_close(aggregate(matrices, Mean()), matrices.mean(1))


def test_aggregated_directions_land_in_each_replicas_slices():
    net, _ = _model_and_losses("mt")
    shared = net.shared_parameters()
    size = sum(p.numel() for p in shared) // 2
    directions = torch.stack([torch.zeros(size), torch.arange(size, dtype=torch.float)])
    set_shared_gradients(directions, shared)
    assert all(p.grad.is_contiguous() for p in shared)  # fused Adam misreads a strided view
    assert all(float(p.grad.reshape(2, -1)[0].abs().sum()) == 0 for p in shared)
    flat = torch.cat([p.grad.reshape(2, -1)[1] for p in shared])
    torch.testing.assert_close(flat, directions[1])


AGGREGATORS = ["UPGrad", "MGDA", "PCGrad", "IMTLG", "AlignedMTL", "DualProj", "GradDrop", "Mean"]


def train_steps(**method) -> tuple[BitMappingModule, list[float]]:
    """A few training steps of the module's own multitask backward on one batch, no Trainer."""
    module = BitMappingModule(num_bits=BITS, num_samples=16, in_dim=4, hidden_dim=8, seeds=[0],
                              **method)  # fmt: skip
    gradients = module.objective
    gradients.setup("32-true", torch.device("cpu"))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    indices, targets = torch.arange(16)[None], make_targets(BITS, 16, "permutation", 0)[None]
    losses = []
    for step in range(8):
        loss_per_bit = per_bit_loss(module.net(indices), targets, "l1")
        optimizer.zero_grad()
        gradients.backward(loss_per_bit, step, 1, lambda objective: objective.backward(), None)
        optimizer.step()
        gradients.after_step(indices, targets, "l1")
        losses.append(float(loss_per_bit.detach().mean()))
    gradients.end_epoch()
    return module, losses


@pytest.mark.parametrize("name", AGGREGATORS)
def test_each_aggregator_trains_and_is_described(name):
    aggregator = getattr(torchjd.aggregation, name)()
    module, losses = train_steps(aggregator=aggregator)
    assert losses[-1] < losses[0]
    description = module.run_description(0)
    assert description["multitask"]["aggregated"] is True
    assert description["hparams"]["aggregator"].startswith(f"torchjd.aggregation.{name}")


def test_telemetry_is_logged_for_mt_and_not_for_st(run_dir):
    mt = read_scalars(log_dir(tiny_fit("--model.telemetry_interval", "10")))
    # 2 steps an epoch, 50 epochs: steps 0, 10, ..., 90 fall in epochs 1, 6, ..., 46
    assert [step for step, _ in mt["conflict/fraction"]] == list(range(1, 50, 5))
    assert {f"conflict/grad_norm/bit_{i}" for i in range(4)} <= set(mt)
    st = read_scalars(log_dir(tiny_fit("--model.layout", "st", "--model.telemetry_interval", "10")))
    assert not any(tag.startswith("conflict/") for tag in st)


def test_st_with_an_aggregator_trains_exactly_as_without(run_dir):
    plain = read_summary(log_dir(tiny_fit("--model.layout", "st")))
    with_upgrad = read_summary(log_dir(tiny_fit(
        "--model.layout", "st", "--model.aggregator.class_path", "torchjd.aggregation.UPGrad"
    )))  # fmt: skip
    assert with_upgrad["val"]["loss_best"] == plain["val"]["loss_best"]
    assert with_upgrad["multitask"]["aggregated"] is False


@pytest.mark.parametrize("fused", [False, True])  # fused Adam once stepped stacked replicas wrong
def test_stacked_replicas_are_aggregated_each_on_its_own(run_dir, fused):
    # No BatchNorm: the biases before it have a zero gradient up to rounding, which Adam
    # blows up to full steps in directions that differ between two ways of computing zero.
    common = ["--model.aggregator.class_path", "torchjd.aggregation.UPGrad",
              "--model.loss_dropout", "0.3", "--model.batch_norm", "false",
              "--model.optimizer.init_args.fused", str(fused).lower()]  # fmt: skip
    stacked_run = log_dir(tiny_fit(*common, "--data.seeds", "[0, 1]"))
    stacked = state_dict_of(stacked_run / LAST)
    alone = state_dict_of(log_dir(tiny_fit(*common, "--seed_everything", "1")) / LAST)
    for name, tensor in alone.items():
        torch.testing.assert_close(stacked[name].view(2, -1)[1], tensor.view(-1), msg=name)
    summary = read_summary(stacked_run / "seed_1")  # and the summary says how it trained
    assert summary["multitask"]["aggregated"] is True
    assert summary["hparams"]["model"]["aggregator"].startswith("torchjd.aggregation.UPGrad")


def test_something_else_as_aggregator_is_refused(run_dir):
    with pytest.raises(ConfigError, match="must be a torchjd.aggregation.Aggregator"):
        from mtfilter import BitMappingModule

        BitMappingModule(num_bits=4, num_samples=16, aggregator=torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="model.aggregator"):  # named before training
        tiny_fit("--model.aggregator.class_path", "torch.nn.Linear")


def test_an_aggregator_under_mixed_precision_is_refused(run_dir):
    with pytest.raises(ConfigError, match="does not support trainer.precision=bf16-mixed"):
        tiny_fit("--model.aggregator.class_path", "torchjd.aggregation.UPGrad",
                 "--trainer.precision", "bf16-mixed")  # fmt: skip


SCALARIZERS = [["Random"], ["UW", "4"], ["DWA"], ["FAMO", "4"], ["IMTLL", "4"]]


@pytest.mark.parametrize("spec", SCALARIZERS, ids=[s[0] for s in SCALARIZERS])
def test_each_scalarizer_trains_and_is_described(spec):
    kind = getattr(torchjd.scalarization, spec[0])
    scalarizer = kind(shape=int(spec[1])) if len(spec) > 1 else kind()
    module, losses = train_steps(scalarizer=scalarizer)
    assert losses[-1] < losses[0]
    recorded = module.run_description(0)["hparams"]["scalarizer"]
    assert recorded.startswith(f"torchjd.scalarization.{spec[0]}(")


def test_the_sum_scalarizer_trains_exactly_as_the_plain_sum(run_dir):
    plain = state_dict_of(log_dir(tiny_fit("--model.batch_norm", "false")) / LAST)
    summed = tiny_fit("--model.batch_norm", "false",
                      "--model.scalarizer.class_path", "torchjd.scalarization.Sum")  # fmt: skip
    for name, tensor in plain.items():
        torch.testing.assert_close(state_dict_of(log_dir(summed) / LAST)[name], tensor, msg=name)


def test_stacked_replicas_get_their_own_learned_task_weights(run_dir):
    common = ["--model.scalarizer.class_path", "torchjd.scalarization.UW",
              "--model.scalarizer.init_args.shape", "4", "--model.batch_norm", "false"]  # fmt: skip
    stacked = state_dict_of(log_dir(tiny_fit(*common, "--data.seeds", "[0, 1]")) / LAST)
    alone = state_dict_of(log_dir(tiny_fit(*common, "--seed_everything", "1")) / LAST)
    for name, tensor in alone.items():
        if name.startswith("scalarizers."):  # one copy per replica: scalarizers.<r>.log_var
            torch.testing.assert_close(stacked[name.replace(".0.", ".1.", 1)], tensor)
        else:
            torch.testing.assert_close(stacked[name].view(2, -1)[1], tensor.view(-1), msg=name)


def test_re_evaluating_a_batch_for_famo_leaves_batch_norm_statistics_alone():
    from mtfilter.train.objective import frozen_batch_norm_statistics

    net, _ = _model_and_losses("mt", replicas=1)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    with frozen_batch_norm_statistics(net):
        net(torch.arange(8)[None])
    for key, value in before.items():
        torch.testing.assert_close(net.state_dict()[key], value)
    net(torch.arange(8)[None])  # and it does move them otherwise
    assert any(not torch.equal(net.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.scalarizer.class_path", "torchjd.scalarization.UW",
          "--model.scalarizer.init_args.shape", "10"], "give it init_args.shape: 4"),
        (["--model.scalarizer.class_path", "torchjd.scalarization.DWA",
          "--model.aggregator.class_path", "torchjd.aggregation.UPGrad"], "choose one"),
        (["--model.scalarizer.class_path", "torchjd.scalarization.DWA",
          "--model.loss_dropout", "0.1"], "cannot be combined with model.loss_dropout"),
    ],
    ids=["wrong-shape", "with-aggregator", "with-loss-dropout"],
)  # fmt: skip
def test_scalarizers_with_what_they_cannot_support_are_refused(run_dir, args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):  # before anything is built
        tiny_fit(*args)
    assert not (run_dir / "lightning_logs").exists()


def test_a_resumed_fit_reports_the_uninterrupted_runs_conflict_figures(run_dir):
    # measured at epochs 1, 6 and 11; the resumed part (epochs 13-14) measures nothing
    common = ["--model.telemetry_interval", "10"]
    straight = read_summary(log_dir(tiny_fit(*common, "--trainer.max_epochs", "14")))
    first = log_dir(tiny_fit(*common, "--trainer.max_epochs", "12"))
    resumed = read_summary(log_dir(tiny_fit(
        *common, "--trainer.max_epochs", "14", "--ckpt_path", str(first / LAST)
    )))  # fmt: skip
    for figures in ("conflict_last", "conflict_mean", "conflict_at_best"):
        expected = straight["multitask"][figures]
        assert expected and resumed["multitask"][figures] == pytest.approx(expected, nan_ok=True)


def test_a_fit_resumed_into_a_new_folder_publishes_its_whole_conflict_curve_there(run_dir):
    common = ["--model.telemetry_interval", "10"]
    first = log_dir(tiny_fit(*common, "--trainer.max_epochs", "12"))  # measured at 1, 6, 11
    resumed = log_dir(tiny_fit(*common, "--trainer.max_epochs", "14", "--ckpt_path",
                               str(first / LAST)))  # fmt: skip
    before, after = read_scalars(first), read_scalars(resumed)
    assert resumed != first and sorted(after) == sorted(before)  # every tag, conflict/* too
    conflict = [tag for tag in before if tag.startswith("conflict/")]
    assert conflict
    for tag in conflict:
        assert [step for step, _ in after[tag]] == [step for step, _ in before[tag]] == [1, 6, 11]
        values = [value for _, value in before[tag]]
        assert [value for _, value in after[tag]] == pytest.approx(values, nan_ok=True), tag


def test_the_summary_holds_the_conflict_measured_at_or_before_the_best_epoch(run_dir):
    # a high rate: the best epoch (22 here) comes well before the last measurement
    run = log_dir(tiny_fit("--model.telemetry_interval", "10",
                           "--model.optimizer.init_args.lr", "0.3"))  # fmt: skip
    summary = read_summary(run)
    measured = read_scalars(run)["conflict/fraction"]  # epochs 1, 6, ..., 46
    assert summary["val"]["loss_best_epoch"] < measured[-1][0]
    expected = [v for epoch, v in measured if epoch <= summary["val"]["loss_best_epoch"]][-1]
    assert summary["multitask"]["conflict_at_best"]["conflict/fraction"] == pytest.approx(expected)
    cosine = summary["multitask"]["conflict_at_best"]["conflict/mean_cosine"]
    assert cosine != pytest.approx(summary["multitask"]["conflict_last"]["conflict/mean_cosine"])
