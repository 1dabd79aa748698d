"""A scheduler's signals (SIGTERM at a time limit or preemption, SIGUSR1/2 ahead of it, SIGHUP)
stop a fit as the first Ctrl-C does: status `stopped`, `last.ckpt` written, exit status 128 + N,
and resuming gives the uninterrupted run's figures. An epoch that could not end in time is left
inside, from the last checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mtfilter.cli.main import main
from mtfilter.train.callbacks import _interrupt
from tests.helpers import REPO, TINY, log_dir, read_summary, state_dict_of, tiny_fit

# the figures a resumed run must share with the uninterrupted one
BEST = [("val", "loss_best"), ("val", "loss_best_epoch"), ("val", "bit_error_best"),
        ("val", "bit_error_best_epoch"), ("train", "loss_best")]  # fmt: skip


def callback(name: str, **init_args: object) -> str:
    return json.dumps([{"class_path": f"tests.helpers.signals.{name}", "init_args": init_args}])


def fit_exit_status(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(TINY), "--trainer.enable_model_summary", "false", *args])
    return int(exit_info.value.code)


def assert_resumes_to_the_uninterrupted_run(folder: Path) -> None:
    resumed = tiny_fit("--ckpt_path", str(folder / "checkpoints" / "last.ckpt"))
    straight = tiny_fit()
    got, expected = read_summary(log_dir(resumed)), read_summary(log_dir(straight))
    assert got["status"] == expected["status"] == "completed"
    assert [got[a][b] for a, b in BEST] == [expected[a][b] for a, b in BEST]
    a = state_dict_of(log_dir(resumed) / "checkpoints" / "best.ckpt")
    b = state_dict_of(log_dir(straight) / "checkpoints" / "best.ckpt")
    assert all(a[name].equal(b[name]) for name in a)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2"])
def test_a_scheduler_signal_finishes_the_epoch_and_stops_cleanly(run_dir, capsys, name):
    flag = str(run_dir / "sent")
    status = fit_exit_status(
        "--trainer.callbacks", callback("StopSignalAtEpoch", flag=flag, at_epoch=5, signal=name)
    )
    assert status == 128 + getattr(signal, name)  # 143 for SIGTERM, as a shell would say
    folder = run_dir / "lightning_logs" / "version_0"
    summary = read_summary(folder)
    assert summary["status"] == "stopped" and summary["epochs"] == 5
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["mtfilter"]["epoch_log"]["epochs"].tolist() == [1, 2, 3, 4, 5]  # at the stop
    printed = capsys.readouterr()
    assert f"{name}: stopping after this epoch" in printed.err
    assert "resume: mtfilter fit --config" in printed.out
    if name == "SIGTERM":
        assert_resumes_to_the_uninterrupted_run(folder)


def test_a_second_scheduler_signal_changes_nothing(run_dir):
    """SLURM may signal a job more than once (every process of its step, again at the end)."""
    flag = str(run_dir / "sent")
    twice = json.loads(callback("StopSignalAtEpoch", flag=flag, at_epoch=5, signal="SIGTERM"))
    twice.append({**twice[0], "init_args": {**twice[0]["init_args"], "flag": flag + "2"}})
    assert fit_exit_status("--trainer.callbacks", json.dumps(twice)) == 143
    assert read_summary(run_dir / "lightning_logs" / "version_0")["status"] == "stopped"


@pytest.mark.slow
def test_kill_term_on_a_running_fit_process(run_dir):
    """`kill -TERM` from outside, as a scheduler sends it, on a fit in its own process."""
    flag = run_dir / "ready"
    stop = callback("StopSignalAtEpoch", flag=str(flag), at_epoch=7, sender="test")
    command = [sys.executable, "-m", "mtfilter.cli", "fit", "--config", str(TINY),
               "--trainer.max_epochs", "50", "--trainer.callbacks", stop]  # fmt: skip
    fit = subprocess.Popen(command, cwd=run_dir, env={**os.environ, "PYTHONPATH": str(REPO)},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert fit.poll() is None and time.monotonic() < deadline, fit.stdout and fit.stdout.read()
        time.sleep(0.05)
    assert int(flag.read_text().split()[0]) == fit.pid
    fit.send_signal(signal.SIGTERM)
    output, _ = fit.communicate(timeout=120)
    assert fit.returncode == 143, output[-2000:]
    folder = run_dir / "lightning_logs" / "version_0"
    summary = read_summary(folder)
    assert summary["status"] == "stopped" and summary["epochs"] == 7
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert_resumes_to_the_uninterrupted_run(folder)


@pytest.mark.parametrize("where", ["between steps", "in a step"])
def test_an_epoch_that_would_not_end_in_time_is_left_inside(run_dir, capsys, monkeypatch, where):
    """A scheduler kills SLURM_KILL_WAIT seconds after its SIGTERM; an epoch longer than the
    grace is not finished: the fit stops where it is, keeping last.ckpt as written at the end
    of the epoch before, and resumes from there exactly."""
    monkeypatch.setattr(_interrupt, "GRACE_S", 0.0)  # every epoch is too long for it
    status = fit_exit_status(
        "--checkpoint.every_n_seconds", "0",  # last.ckpt written every few epochs
        "--trainer.callbacks", callback("StopSignalInsideEpoch", at_epoch=10, where=where),
    )  # fmt: skip
    assert status == 143
    folder = run_dir / "lightning_logs" / "version_0"
    summary = read_summary(folder)
    assert summary["status"] == "stopped" and "inside epoch 10" in summary["error"]
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    epochs = last["mtfilter"]["epoch_log"]["epochs"].tolist()  # as last written, before epoch 10
    assert epochs == list(range(1, len(epochs) + 1)) and 1 <= len(epochs) <= 9
    printed = capsys.readouterr().err
    assert "SIGTERM inside epoch 10" in printed and "--ckpt_path" in printed
    monkeypatch.setattr(_interrupt, "GRACE_S", 20.0)
    assert_resumes_to_the_uninterrupted_run(folder)


def test_a_signal_before_any_epoch_ended_says_the_run_starts_over(run_dir, capsys):
    status = fit_exit_status(
        "--trainer.callbacks", callback("StopSignalInsideEpoch", at_epoch=1, where="in a step")
    )
    assert status == 143
    assert "no checkpoint was written yet" in capsys.readouterr().err
    assert read_summary(run_dir / "lightning_logs" / "version_0")["status"] == "stopped"


@pytest.mark.slow
def test_closing_the_terminal_stops_a_fit_cleanly(run_dir):
    """A fit whose terminal closes gets SIGHUP, and its terminal is gone: what it prints next
    must not fail (EIO) halfway through the stop."""
    import fcntl
    import pty
    import select
    import termios

    flag = run_dir / "ready"
    stop = callback("StopSignalAtEpoch", flag=str(flag), at_epoch=7, sender="test")
    command = [sys.executable, "-m", "mtfilter.cli", "fit", "--config", str(TINY),
               "--trainer.max_epochs", "50", "--trainer.callbacks", stop]  # fmt: skip
    master, terminal = pty.openpty()

    def own_the_terminal() -> None:  # the fit leads a session whose terminal this is
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)

    fit = subprocess.Popen(command, cwd=run_dir, env={**os.environ, "PYTHONPATH": str(REPO)},
                           stdin=terminal, stdout=terminal, stderr=terminal,
                           start_new_session=True, preexec_fn=own_the_terminal)  # fmt: skip
    os.close(terminal)
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert fit.poll() is None and time.monotonic() < deadline
        if select.select([master], [], [], 0.05)[0]:  # drained, as a terminal window would
            os.read(master, 65536)
    os.close(master)  # the window closes: the kernel sends the session SIGHUP
    assert fit.wait(timeout=120) == 129
    summary = read_summary(run_dir / "lightning_logs" / "version_0")
    assert summary["status"] == "stopped" and summary["epochs"] == 7
