"""`MtfilterCLI`: LightningCLI over `BitMappingModule` and `BitMappingDataModule`, with mtfilter's
checkpoint, progress, summary and interrupt callbacks always on, every setting checked before
any work starts, and a closing account of what each command wrote. The `mtfilter` command
(`mtfilter.cli`) dispatches to it; the sweep's pre-flight (`preflight.py`) builds on it."""

import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from mtfilter import parse_errors
from mtfilter.errors import CheckpointMismatchError, ConfigError
from mtfilter.folders import SUMMARY_FILE, read_json, unwritable
from mtfilter.stop_signals import stopped_exit_status
from mtfilter.train import threads
from mtfilter.train.callbacks import (
    BestEpochCheckpoint,
    ConvergenceSchedule,
    EpochProgressBar,
    PredictionWriter,
    RunSummary,
    StopOnInterrupt,
)
from mtfilter.train.checkpoint_compat import check_checkpoint_compatible
from mtfilter.train.data import BitMappingDataModule
from mtfilter.train.fit_report import fit_report
from mtfilter.train.module import DEFAULT_OPTIMIZER, BitMappingModule
from mtfilter.train.multilabel_data import MultiLabelDataModule

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 10000,  # the original experiment's
    "num_sanity_val_steps": 0,  # fit evaluates every epoch itself (see BitMappingModule)
    # one module, whose parameter counts the fit prints itself (shared, per task, ...)
    "enable_model_summary": False,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        # lightning_logs/<name>/version_N; no placeholder hp_metric (summaries log real ones)
        "init_args": {"save_dir": "lightning_logs", "name": "", "default_hp_metric": False},
    },
}

# Checkpoint paths Lightning resolves itself rather than reading a file.
_SPECIAL_CKPT_PATHS = {"best", "last", "hpc", "registry"}


class MtfilterCLI(LightningCLI):
    """LightningCLI with the data module's sizes, fingerprint and seeds linked into the model.

    The data module is `BitMappingDataModule`, or `MultiLabelDataModule` where the command
    line or a config file sets `data.dataset` (real data: yeast or a file); then the model
    reads its features (`model.encoding: linear`, `model.in_dim` linked from the data).

    Configuration errors raise `ConfigError` with one line naming the key, the value and where
    it was given (see `parse_errors`; `origin` can say where instead); nothing is written before
    every check has passed.
    """

    def __init__(
        self, args: Any = None, origin: parse_errors.Origin | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        # exit_on_error=False: errors reach `parse_arguments` below as exceptions
        kwargs.setdefault("parser_kwargs", {"default_env": False, "exit_on_error": False})
        # The optimizer is the model's `optimizer` argument; no second, top-level way to set it.
        kwargs.setdefault("auto_configure_optimizers", False)
        # A new run gets a new log folder anyway; a resumed sweep run continues in its own.
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        self._args = list(args) if args is not None else None
        # where a key was set, for error messages (default: the command line or a config file)
        self._origin = origin or parse_errors.origin_in(self._args or [])
        self.exit_status = 0  # 128 + N when a fit was stopped by signal N (see mtfilter.cli)
        self.real_data = parse_errors.origin_in(self._args or [])("data.dataset") is not None
        data = MultiLabelDataModule if self.real_data else BitMappingDataModule
        super().__init__(BitMappingModule, data, args=args, **kwargs)

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Given once, on the data module; the model receives the resolved values.
        for source, target in [
            ("data.num_bits", "model.num_bits"),
            ("data.num_samples", "model.num_samples"),
            ("data.fingerprint", "model.data_fingerprint"),
            ("data.seeds", "model.seeds"),
            *([("data.num_features", "model.in_dim"), ("data.label_figures", "model.label_figures")]
              if self.real_data else []),
        ]:  # fmt: skip
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.add_argument(
            "--float32_matmul_precision",
            type=Literal["highest", "high", "medium"],
            default="highest",
            help="torch.set_float32_matmul_precision: 'high' allows TF32 matmuls on Ampere and "
            "newer GPUs (about 2x on large widths, ~1e-3 relative error); no effect on CPUs. "
            "For bf16 autocast use --trainer.precision bf16-mixed.",
        )
        parser.add_argument(
            "--num_threads",
            type=int | None,
            default=None,
            help="CPU threads for training (torch.set_num_threads). Default: chosen from the "
            "model's size, one thread for small models, where more threads only wait on each "
            "other (docs/benchmarks.md). No effect on GPU runs.",
        )
        parser.add_lightning_class_args(BestEpochCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ConvergenceSchedule, "convergence")
        parser.add_lightning_class_args(EpochProgressBar, "progress")
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.set_defaults({"model.optimizer": DEFAULT_OPTIMIZER})
        if self.real_data:  # features in, not sample indices
            parser.set_defaults({"model.encoding": "linear"})

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            raise ConfigError(self._explain(parser, str(error))) from None

    def _explain(self, parser: LightningArgumentParser, message: str) -> str:
        args = self._args or []
        subcommand = next((a for a in args if not a.startswith("-")), None)
        subparsers = getattr(parser, "_subcommands_action", None)
        target = subparsers._name_parser_map.get(subcommand) if subparsers else None
        valid = (target or parser).get_defaults().keys()
        return parse_errors.explain(message, valid, self._origin)

    @override
    def before_instantiate_classes(self) -> None:
        config = self._subconfig()
        if config.num_threads is not None and config.num_threads < 1:
            raise ConfigError(f"num_threads must be at least 1, got {config.num_threads}")
        _check_accelerator(config.trainer.accelerator, config.trainer.devices)
        if config.trainer.sync_batchnorm and config.model.batch_norm_chunks > 1:
            raise ConfigError(
                f"model.batch_norm_chunks {config.model.batch_norm_chunks} and "
                "trainer.sync_batchnorm cannot be combined: synchronised BatchNorm computes its "
                "statistics over every device's whole batch, not per chunk"
            )
        encoding = config.model.encoding
        if self.real_data and encoding != "linear":
            raise ConfigError(
                f"model.encoding={encoding} reads sample indices; data.dataset "
                f"{config.data.dataset!r} has features: use model.encoding linear"
            )
        if config.convergence.stop_at_floor and self.real_data:
            raise ConfigError(
                "convergence.stop_at_floor compares the validation split's errors with the "
                "floor of the training split's labels, which does not bound them: leave it off "
                "with data.dataset"
            )
        torch.set_float32_matmul_precision(config.float32_matmul_precision)
        logger = config.trainer.logger
        root = config.trainer.default_root_dir
        save_dir = _logger_save_dir(logger)
        if root is not None and save_dir is not None and not os.path.isabs(save_dir):
            # as Lightning's own default logger: the logs go under default_root_dir too
            logger.init_args.save_dir = save_dir = os.path.join(root, save_dir)
        if self.subcommand != "fit" and _is_default_logger(logger):
            # validate/test/predict get their own folders, apart from the numbered fit runs
            logger.init_args.name = self.subcommand
        if self.subcommand is not None:  # a command that writes (not the sweep's pre-flight)
            for key, folder in [("trainer.logger.init_args.save_dir", save_dir),
                                ("trainer.default_root_dir", root),
                                ("checkpoint.dirpath", config.checkpoint.dirpath)]:  # fmt: skip
                problem = None if folder is None else unwritable(str(folder))
                if problem:
                    raise ConfigError(f"{key} {folder}: {problem}")

    @override
    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except MisconfigurationException as error:  # Lightning's own checks of the trainer
            raise ConfigError(f"trainer: {error}") from None

    @override
    def after_instantiate_classes(self) -> None:
        if not isinstance(self.trainer.accelerator, CPUAccelerator):
            return
        config = self._subconfig()
        work = threads.multiply_adds_per_step(self.model.net, self.datamodule.batch_size)
        chosen = config.num_threads or threads.choose(work, torch.get_num_threads())
        torch.set_num_threads(chosen)
        how = "set" if config.num_threads else f"auto: ~{work:.1e} multiply-adds per step"
        if self.subcommand == "fit":
            rank_zero_info(f"CPU threads: {chosen} ({how}; --num_threads to override)")

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # `progress.*` always adds the epoch progress bar, which Lightning refuses beside
        # `enable_progress_bar: false`; that setting switches the bar off instead.
        quiet = self._subconfig().trainer.enable_progress_bar is False
        progress = {"enable_progress_bar": True} if quiet else {}
        trainer = super().instantiate_trainer(**{**kwargs, **progress, **_slurm_plugins(kwargs)})
        if quiet:
            trainer.progress_bar_callback.disable()
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

    def _subconfig(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config  # run=False

    def _check_ckpt_path(self) -> None:
        path = self._subconfig().get("ckpt_path")
        if path is None or path in _SPECIAL_CKPT_PATHS:
            return
        if not os.path.isfile(path):
            raise ConfigError(f"--ckpt_path {path}: no such file")
        if not zipfile.is_zipfile(path):  # what torch.save has written since torch 1.6
            raise CheckpointMismatchError(
                f"--ckpt_path {path}: not a checkpoint (not a file written by torch.save)"
            )
        try:
            checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as error:  # any unpickling failure means the same to the user
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            raise CheckpointMismatchError(
                f"--ckpt_path {path}: not a readable checkpoint ({type(error).__name__}: {reason})"
            ) from None
        check_checkpoint_compatible(
            checkpoint,
            {**self.model.hparams, "data_fingerprint": self.datamodule.fingerprint},
            data=self.datamodule.hparams,
        )

    # Checked before the trainer creates a log folder or touches anything.
    def before_fit(self) -> None:
        chunks = self.model.hparams.batch_norm_chunks
        self.datamodule.check_batch_size(self.trainer.world_size, chunks)
        self._check_ckpt_path()

    def before_validate(self) -> None:
        self._check_ckpt_path()

    def before_test(self) -> None:
        self._check_ckpt_path()

    def before_predict(self) -> None:
        self._check_ckpt_path()

    # What each command wrote, printed last.
    def after_fit(self) -> None:
        folder = self.trainer.log_dir  # a collective under DDP: every rank asks
        if not self.trainer.is_global_zero or folder is None:
            return
        summary = read_json(Path(folder) / SUMMARY_FILE) or {}
        stop = next(c for c in self.trainer.callbacks if isinstance(c, StopOnInterrupt))
        if summary.get("status") == "stopped" and stop.signal is not None:  # cleanly: resumable
            self.exit_status = stopped_exit_status(stop.signal)
        batch = self._subconfig().checkpoint.monitor == "train/batch_loss_min"
        print(fit_report(Path(folder), summary, batch), flush=True)

    def after_validate(self) -> None:
        self._print_metrics_folder("validate")

    def after_test(self) -> None:
        self._print_metrics_folder("test")

    def after_predict(self) -> None:
        writer = next(c for c in self.trainer.callbacks if isinstance(c, PredictionWriter))
        if self.trainer.is_global_zero and writer.path is not None:
            print(f"predict: wrote {writer.path}", flush=True)

    def _print_metrics_folder(self, command: str) -> None:
        if self.trainer.is_global_zero and self.trainer.log_dir is not None:
            print(f"{command}: metrics logged to {self.trainer.log_dir} (TensorBoard)", flush=True)


def _slurm_plugins(trainer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Inside a SLURM job, Lightning's own requeueing off, unless the config sets plugins: on
    SIGUSR1 it would write an `hpc_ckpt` and requeue the job from inside the fit. A stop signal
    makes the fit write `last.ckpt` and stop instead (`StopOnInterrupt`), and a sweep's job
    requeues itself once the fit has stopped (mtfilter.sweep._cluster_job)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    if trainer_kwargs.get("plugins") or not SLURMEnvironment.detect():
        return {}
    return {"plugins": [SLURMEnvironment(auto_requeue=False)]}


def _check_accelerator(accelerator: Any, devices: Any) -> None:
    """A GPU asked for where there is none: one line instead of Lightning's traceback."""
    if not isinstance(accelerator, str) or accelerator not in ("gpu", "cuda"):
        return
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no CUDA GPU is visible on this machine "
            f"(torch {torch.__version__}, {build}); use --trainer.accelerator cpu or auto"
        )
    if isinstance(devices, int) and devices > available:
        raise ConfigError(
            f"trainer.devices={devices}: only {available} CUDA GPU(s) are visible on this machine"
        )


def _logger_save_dir(logger: Any) -> str | None:
    try:
        return logger.init_args.save_dir
    except AttributeError:  # no logger, or one without a folder
        return None


def _is_default_logger(logger: Any) -> bool:
    try:
        return logger.class_path.endswith("TensorBoardLogger") and logger.init_args.name == ""
    except AttributeError:
        return False


# Lightning's one-time notice of its seed, printed before any check has run: the seed is in
# the run's config and summary.
logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
