"""Helpers the tests share: tiny CPU fits through the CLI in-process, and readers for what a run
writes. Fixtures are in conftest.py; sweep folders of fake summaries in `fake_sweeps`; callbacks
that send signals during a fit in `signals`."""

import json
from pathlib import Path
from typing import Any

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtfilter.cli.main import cli_main
from mtfilter.train.cli import MtfilterCLI

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
CONFIGS = REPO / "configs"
TINY = CONFIGS / "tiny.yaml"
DATA = TESTS / "data"  # files the tests read: checkpoints of earlier versions


def tiny_fit(*args: str) -> MtfilterCLI:
    """Fit configs/tiny.yaml in-process (4 bits, 16 samples, hidden 8) with extra CLI args."""
    return cli(["fit", *args])


def cli(args: list[str]) -> MtfilterCLI:
    return cli_main(
        [args[0], "--config", str(TINY), "--trainer.enable_model_summary", "false", *args[1:]]
    )


def log_dir(cli_run: MtfilterCLI) -> Path:
    return Path(cli_run.trainer.log_dir)


def read_summary(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text())


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's TensorBoard files, read with TensorBoard's own reader."""
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
