"""CUDA paths; skipped where no GPU is present."""

import lightning as L
import pytest
import torch

from mtfilter.train.cli import TRAINER_DEFAULTS, MtfilterCLI
from tests.helpers import TINY, log_dir, read_summary, tiny_fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_fit_on_gpu_keeps_data_on_the_device(run_dir):
    run = tiny_fit("--trainer.accelerator", "gpu", "--trainer.devices", "1")
    assert run.datamodule.full_batch()[1].is_cuda
    assert read_summary(log_dir(run))["status"] == "completed"


class _NoSyncWindow(L.Callback):
    """Turns any host-device synchronisation into an error during epochs [first, last)."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.first:
            pl_module.publisher.interval_s = float("inf")  # publishing is the one planned sync
            torch.cuda.set_sync_debug_mode("error")

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.last - 1:
            torch.cuda.set_sync_debug_mode(0)


def test_training_epochs_make_no_host_device_syncs(run_dir):
    try:
        run = MtfilterCLI(
            args=[
                "fit",
                "--config",
                str(TINY),
                "--trainer.accelerator",
                "gpu",
                "--trainer.devices",
                "1",
                "--trainer.max_epochs",
                "30",
                "--progress.refresh_s",
                "1e9",
                "--trainer.enable_model_summary",
                "false",
            ],
            trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [_NoSyncWindow(3, 25)]},
        )
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert read_summary(log_dir(run))["epochs"] == 30
