"""The `mtfilter` command: LightningCLI over `BitMappingModule` and `BitMappingDataModule`, with
mtfilter's checkpoint, progress, summary and interrupt callbacks always on."""

import os
import sys
import warnings
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from mtfilter.callbacks import (
    BestEpochCheckpoint,
    EpochProgressBar,
    PredictionWriter,
    RunSummary,
    StopOnInterrupt,
)
from mtfilter.data import BitMappingDataModule
from mtfilter.errors import CheckpointMismatchError, ConfigError, MtfilterError
from mtfilter.module import DEFAULT_OPTIMIZER, BitMappingModule, check_checkpoint_compatible

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 10000,  # the original experiment's
    "num_sanity_val_steps": 0,  # fit evaluates every epoch itself (see BitMappingModule)
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        # lightning_logs/<name>/version_N; no placeholder hp_metric (summaries log real ones)
        "init_args": {"save_dir": "lightning_logs", "name": "", "default_hp_metric": False},
    },
}

# Lightning notices that don't apply here: fit logs per epoch, not every N steps, and its pytree
# helper's deprecation is Lightning's own.
warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

# Checkpoint paths Lightning resolves itself rather than reading a file.
_SPECIAL_CKPT_PATHS = {"best", "last", "hpc", "registry"}


class MtfilterCLI(LightningCLI):
    """LightningCLI with the data module's sizes, fingerprint and seeds linked into the model."""

    def __init__(self, args: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        # The optimizer is the model's `optimizer` argument; no second, top-level way to set it.
        kwargs.setdefault("auto_configure_optimizers", False)
        # A new run gets a new log folder anyway; a resumed sweep run continues in its own.
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(BitMappingModule, BitMappingDataModule, args=args, **kwargs)

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Given once, on the data module; the model receives the resolved values.
        for source, target in [
            ("data.num_bits", "model.num_bits"),
            ("data.num_samples", "model.num_samples"),
            ("data.fingerprint", "model.data_fingerprint"),
            ("data.seeds", "model.seeds"),
        ]:
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.add_argument(
            "--float32_matmul_precision",
            type=Literal["highest", "high", "medium"],
            default="highest",
            help="torch.set_float32_matmul_precision: 'high' allows TF32 matmuls on Ampere and "
            "newer GPUs (about 2x on large widths, ~1e-3 relative error); no effect on CPUs. "
            "For bf16 autocast use --trainer.precision bf16-mixed.",
        )
        parser.add_lightning_class_args(BestEpochCheckpoint, "checkpoint")
        parser.add_lightning_class_args(EpochProgressBar, "progress")
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.set_defaults({"model.optimizer": DEFAULT_OPTIMIZER})

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        torch.set_float32_matmul_precision(config.float32_matmul_precision)

    @override
    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ConfigError as error:  # cross-field checks of the constructors
            self.parser.error(str(error))

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = super().instantiate_trainer(**kwargs)
        # Each callback costs ~30 us an epoch in hook calls at small widths: only what is used.
        trainer.callbacks.append(
            PredictionWriter() if self.subcommand == "predict" else StopOnInterrupt()
        )
        return trainer

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would replace the configured model with the checkpoint's hyperparameters,
        # silently ignoring what the user set. Here the configuration stays authoritative and a
        # checkpoint that disagrees with it is refused, naming the difference (see below).
        return

    def _check_ckpt_path(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False
        path = config.get("ckpt_path")
        if path is None or path in _SPECIAL_CKPT_PATHS:
            return
        if not os.path.isfile(path):
            raise ConfigError(f"--ckpt_path {path}: no such file")
        try:
            checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as error:  # any unpickling failure means the same to the user
            raise CheckpointMismatchError(
                f"--ckpt_path {path}: not a readable checkpoint ({error})"
            ) from None
        check_checkpoint_compatible(
            checkpoint, {**self.model.hparams, "data_fingerprint": self.datamodule.fingerprint}
        )

    # Checked before the trainer creates a log folder or touches anything.
    def before_fit(self) -> None:
        self._check_ckpt_path()

    def before_validate(self) -> None:
        self._check_ckpt_path()

    def before_test(self) -> None:
        self._check_ckpt_path()

    def before_predict(self) -> None:
        self._check_ckpt_path()


def cli_main(args: Any = None) -> MtfilterCLI:
    """Run the CLI in-process (tests, notebooks); errors propagate as exceptions."""
    return MtfilterCLI(args=args)


# Subcommands that are not a Trainer method: parsed from their functions' signatures.
SWEEP_COMMANDS = ("sweep", "report")


def sweep_main(args: list[str]) -> int:
    """`mtfilter sweep ...` or `mtfilter report ...` in-process; returns the exit status."""
    from jsonargparse import CLI

    from mtfilter.report import report
    from mtfilter.sweep import sweep

    result = CLI([sweep, report], args=args, prog="mtfilter", parser_mode="yaml")
    return result if isinstance(result, int) else 0


def main() -> None:
    """Console entry point: mtfilter's own errors become one line on stderr and exit status 2
    (bad input) or 1 (a run that stopped, e.g. on a NaN loss)."""
    args = sys.argv[1:]
    try:
        if args and args[0] in SWEEP_COMMANDS:
            sys.exit(sweep_main(args))
        cli_main()
    except MtfilterError as error:
        print(f"mtfilter: error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, ValueError) else 1)


if __name__ == "__main__":
    main()
