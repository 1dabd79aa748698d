"""The CPU thread count of a fit: one thread for small steps, every core for large ones."""

import logging

import pytest
import torch

from mtfilter import BitMLP
from mtfilter.train import threads
from mtfilter.train.cli import MtfilterCLI
from tests.helpers import CONFIGS, cli


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_choice_follows_the_work_of_one_step():
    assert threads.choose(threads.MIN_WORK_FOR_THREADS - 1, available=2) == 1
    assert threads.choose(threads.MIN_WORK_FOR_THREADS, available=2) == 2
    assert threads.choose(10**12, available=1) == 1


def test_the_work_of_a_step_counts_weights_outside_the_input_tables():
    net = BitMLP(num_bits=4, num_samples=16, layout="st", in_dim=4, hidden_dim=8, num_replicas=2)
    weights = sum(p.numel() for p in net.parameters()) - net.embedding.weight.numel()
    assert threads.multiply_adds_per_step(net, batch_size=8) == weights * 8


def test_a_small_fit_runs_on_one_thread_and_says_so(run_dir, caplog):
    caplog.set_level(logging.INFO)
    cli(["fit", "--trainer.max_epochs", "1"])
    assert torch.get_num_threads() == 1
    assert "CPU threads: 1 (auto" in caplog.text


def test_the_config_overrides_the_choice(run_dir):
    torch.set_num_threads(1)  # neither what is asked nor what tiny's auto choice would set
    cli(["fit", "--trainer.max_epochs", "1", "--num_threads", "3"])
    assert torch.get_num_threads() == 3


def test_a_large_model_keeps_every_thread(monkeypatch):
    available = torch.get_num_threads()
    chosen: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    # hidden 1024 st: ~1e7 weights outside the tables, 512 samples a step; built, not trained
    MtfilterCLI(args=["--config", str(CONFIGS / "st.yaml"), "--trainer.accelerator", "cpu"],
                run=False)  # fmt: skip
    assert chosen == [available]
