"""Lightning notices that say nothing to an mtfilter user, silenced wherever mtfilter's module is
used (the CLI and library code alike). Each is narrow: one message, not a category."""

import logging
import warnings

# Fit hands Lightning one batch per epoch and logs per epoch itself, so Lightning's advice about
# `log_every_n_steps` does not apply; the pytree deprecation is inside Lightning's own code.
warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# On any machine with SLURM installed (a cluster's login node, a sweep's job) Lightning advises
# launching with `srun`; a fit is one process, and a sweep's jobs run theirs (README, "Running
# on SLURM").
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")


# Lightning's start-up banner: accelerators this package never uses, and the GPU line where
# there is no GPU (with one, its line stays: which device trains is worth a line).
_BANNER = ("TPU available:", "HPU available:", "IPU available:", "GPU available: False")


class _NoAdvertisements(logging.Filter):
    """Drops Lightning's "Tip: try installing ..." suggestions of its cloud products and the
    banner lines above."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return "Tip: For seamless cloud" not in message and not message.startswith(_BANNER)


# Lightning's rank-zero messages go through one of these loggers, whichever was imported last.
for _name in (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
):
    logging.getLogger(_name).addFilter(_NoAdvertisements())
