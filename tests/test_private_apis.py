"""Every private or undocumented API of another package that mtfilter uses (the inventory is
docs/private-apis.md), each checked here so that an upgrade that changes one fails loudly,
naming it, instead of silently changing behaviour. pyproject.toml bounds these packages to the
versions this was checked against."""

import inspect

import lightning as L
import torch
import torch.distributed as dist
from jsonargparse import ArgumentParser, DefaultHelpFormatter
from lightning.pytorch.cli import LightningCLI
from tensorboard.summary.writer import record_writer
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from torchjd.aggregation import GramianWeightedAggregator, UPGrad


def test_lightning_checkpoint_connector_dumps_checkpoints():
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    dump = trainer._checkpoint_connector.dump_checkpoint
    assert "weights_only" in inspect.signature(dump).parameters


def test_lightning_cli_hooks_mtfilter_overrides_exist():
    for name in ("_parse_ckpt_path", "_add_instantiators"):
        assert callable(getattr(LightningCLI, name, None)), name
    assert list(inspect.signature(LightningCLI._parse_ckpt_path).parameters) == ["self"]


def test_lightning_module_private_attributes():
    module = L.LightningModule()
    assert module._trainer is None  # what on_load_checkpoint reads outside a Trainer
    assert hasattr(module, "_current_fx_name")


def test_jsonargparse_parser_internals():
    assert "prepend" in inspect.signature(ArgumentParser.add_instantiator).parameters
    parser = ArgumentParser()
    subcommands = parser.add_subcommands()
    subcommands.add_subcommand("fit", ArgumentParser())
    assert "fit" in parser._subcommands_action._name_parser_map
    assert callable(getattr(DefaultHelpFormatter, "_get_type_str", None))


def test_tensorboard_record_checksum_is_a_module_function():
    assert callable(record_writer.masked_crc32c)
    from mtfilter.record.tensorboard import masked_crc32c

    assert masked_crc32c(b"mtfilter") == record_writer.masked_crc32c(b"mtfilter")


def test_summary_writer_file_writer(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    assert callable(writer._get_file_writer().add_summary)
    # where write_scalar_rows hands its encoded events, as EventFileWriter.add_event does
    assert callable(writer._get_file_writer().event_writer._async_writer.write)
    writer.close()


def test_torch_foreach_internals():
    a, b = [torch.zeros(2)], [torch.ones(2)]
    torch._foreach_lerp_(a, b, [torch.full((2,), 0.5)])
    torch._foreach_copy_(b, a)
    assert b[0].tolist() == [0.5, 0.5]
    assert nn.Linear(1, 1)._forward_hooks == {} and nn.Linear(1, 1)._forward_pre_hooks == {}


def test_torch_batch_norm_backward_kernel_is_autograds():
    """`ExplicitGradients` calls BatchNorm's backward kernel with the batch statistics."""
    x = torch.randn(1, 3, 8, requires_grad=True)
    norm = nn.BatchNorm1d(3)
    grad = torch.randn(1, 3, 8)
    norm(x).backward(grad)
    mean = x.detach().mean((0, 2))
    inv_std = (x.detach().var((0, 2), correction=0) + norm.eps).rsqrt()
    dx, dw, db = torch.ops.aten.native_batch_norm_backward(
        grad, x.detach(), norm.weight, None, None, mean, inv_std, True, norm.eps, [True] * 3
    )
    torch.testing.assert_close(dx, x.grad)
    torch.testing.assert_close(dw, norm.weight.grad)
    torch.testing.assert_close(db, norm.bias.grad)


def test_ddp_skips_its_all_reduce_when_require_backward_grad_sync_is_false(tmp_path):
    """The module sets it once for good (a permanent `no_sync`) and all-reduces by itself."""
    store = f"file://{tmp_path / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(nn.Linear(2, 1))
        reductions = []

        def count(state, bucket):  # DDP's communication hook: called for each bucket it reduces
            reductions.append(1)
            done = torch.futures.Future()
            done.set_result(bucket.buffer())
            return done

        ddp.register_comm_hook(None, count)
        ddp(torch.ones(1, 2)).sum().backward()
        assert reductions == [1]
        ddp.require_backward_grad_sync = False
        ddp(torch.ones(1, 2)).sum().backward()
        assert reductions == [1]
    finally:
        dist.destroy_process_group()


def test_torchjd_gramian_weighting():
    aggregator = UPGrad()
    assert isinstance(aggregator, GramianWeightedAggregator)
    weights = aggregator.gramian_weighting(torch.eye(3))
    assert weights.shape == (3,)


def test_submitit_watcher_and_requeue_handler():
    import signal

    from submitit.core import job_environment
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

    from mtfilter.sweep import _cluster_job, _submitit

    assert isinstance(SlurmJob.watcher, SlurmInfoWatcher)  # a class attribute, shadowed per job
    watcher = _submitit._squeue_watcher()
    assert watcher._make_command() is None  # nothing registered: nothing to ask
    watcher.register_job("12_0")
    watcher.register_job("12_1")
    assert {"12_0", "12_1"} <= watcher._registered and not watcher._finished
    assert watcher._make_command()[0] == "squeue"
    info = watcher.read_info("12_0|RUNNING|vm\n13|PENDING|\n")
    assert info["12_0"]["State"] == "RUNNING" and info["12_1"]["State"] == "ENDED"
    assert job_environment.SignalHandler.__name__ == "SignalHandler"
    handler = job_environment.SignalHandler.checkpoint_and_try_requeue
    assert list(inspect.signature(handler).parameters) == ["self", "signum", "frame"]
    assert _cluster_job._requeue_signal() == signal.SIGUSR2  # submitit's default
