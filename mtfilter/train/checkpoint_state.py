"""What a fit's checkpoint holds beyond Lightning's own: the epoch log and the folder it was
published in, the conflict record, each replica's learning-rate factor, the accumulated
gradients of the faithful mode, the whole stack's optimizer state; and all of it restored on
resume, so that a resumed run reports and trains as the uninterrupted one."""

import os
from typing import TYPE_CHECKING, Any

from lightning.pytorch.utilities import rank_zero_info

from mtfilter.train.checkpoint_compat import check_checkpoint_compatible
from mtfilter.train.checkpoint_upgrade import fold_biases_before_batch_norm

if TYPE_CHECKING:
    from mtfilter.train.module import BitMappingModule


def check_and_upgrade(
    module: "BitMappingModule", checkpoint: dict[str, Any], data: Any | None
) -> None:
    """Refuse a checkpoint of another dataset or model (`check_checkpoint_compatible`; `data`:
    the data module's hparams, to name the setting that differs), and fold an earlier
    checkpoint's biases before BatchNorm away."""
    check_checkpoint_compatible(checkpoint, module.hparams, data)
    names = [name for name, _ in module.named_parameters()]
    folded = fold_biases_before_batch_norm(checkpoint, names, len(module.replicas))
    if folded:
        rank_zero_info(
            f"the checkpoint's {folded} biases before BatchNorm (which have no effect) are "
            "folded into the BatchNorm running means: the same outputs, without the noise"
        )


def save_training_state(module: "BitMappingModule", checkpoint: dict[str, Any]) -> None:
    """Add the module's training state to `checkpoint` (its `mtfilter` entry)."""
    state: dict[str, Any] = {
        "epoch_log": module.epoch_log.state_dict(),
        "log_dir": log_dir(module),  # where that history was published
    }
    if module.objective.conflicts.latest_row is not None:
        state["conflicts"] = module.objective.conflicts.state_dict()
    if module.learning_rates.scaled:  # each replica's factor, its stacked rate's included
        state["lr_scale"] = module.learning_rates.state_dict()
    if module.train_config.accumulate_gradients:  # the running sum is training state here
        state["gradients"] = {
            name: p.grad.detach().clone() for name, p in module.named_parameters()
            if p.grad is not None
        }  # fmt: skip
    checkpoint["mtfilter"] = state
    if module.live.compacted and checkpoint.get("optimizer_states"):  # the whole stack's
        checkpoint["optimizer_states"] = [
            module.live.full_optimizer_state(s) for s in checkpoint["optimizer_states"]
        ]


def restore_training_state(module: "BitMappingModule", checkpoint: dict[str, Any]) -> None:
    """Resuming a fit: the saved history, conflict record and rate factors back in `module`;
    the accumulated gradients kept for `on_train_start` (after the Trainer's own zero_grad)."""
    saved = checkpoint.get("mtfilter", {})
    if saved.get("epoch_log") is None:
        return
    # Resumed in the folder that already shows this history (a sweep's run, say): publish
    # only what comes next, and hide what the stopped process wrote after the checkpoint.
    # In a new folder, the whole curve is published again.
    here = saved.get("log_dir") is not None and saved.get("log_dir") == log_dir(module)
    module.epoch_log.load_state_dict(saved["epoch_log"], published=here)
    if here and module.epoch_log.num_epochs:
        module.publisher.purge_from = module.epoch_log.last_epoch + 1
    module.restored_gradients = saved.get("gradients")
    if saved.get("conflicts") is not None:
        module.objective.conflicts.load_state_dict(
            saved["conflicts"], module.device, published=here
        )
    module.learning_rates.load_state_dict(saved.get("lr_scale"))  # drops on a plateau


def restore_gradients(module: "BitMappingModule") -> None:
    """The faithful mode's accumulated gradients back on the parameters, once training starts
    (a Trainer zeroes gradients after restoring a checkpoint, so they wait until then)."""
    for name, gradient in (module.restored_gradients or {}).items():
        parameter = module.get_parameter(name)
        # contiguous: a checkpoint keeps a view's strides, which fused Adam misreads
        parameter.grad = gradient.to(parameter.device).contiguous()
    module.restored_gradients = None


def log_dir(module: "BitMappingModule") -> str | None:
    folder = module.trainer.log_dir  # a collective under DDP: every rank asks
    return None if folder is None else os.path.abspath(folder)
