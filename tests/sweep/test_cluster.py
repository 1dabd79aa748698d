"""Sweeps through submitit: a job whose fit is stopped by a scheduler's signal is requeued and
resumes from `last.ckpt`, and the sweep's results equal the local executor's. In submitit's local
mode everywhere; on a real single-node SLURM where one runs (`.ci/slurm-up`, tests marked
`slurm`)."""

import csv
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, TINY

pytest.importorskip("submitit")

GRID = {"model.hidden_dim": [4, 8]}
# Converges by itself (tiny.yaml's default convergence) in ~2,000 epochs
SETTINGS = {"trainer.max_epochs": 6000}
# Every figure of results.csv but the time a run took and where it is
NOT_FIGURES = {"wall_time_s", "log_dir", "error"}


def write_sweep(folder: Path, name: str, settings: dict, **extra: object) -> Path:
    config = {"base": str(TINY), "folder": str(folder / name), "settings": settings,
              "grid": GRID, **extra}  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_sweep(config: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mtfilter.cli", "sweep", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the fits import tests.helpers.signals
    return subprocess.run(command, cwd=config.parent, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def stop_at_epoch(flag: Path, **init_args: object) -> dict:
    return {"class_path": "tests.helpers.signals.StopSignalAtEpoch",
            "init_args": {"flag": str(flag), "at_epoch": 300, **init_args}}  # fmt: skip


def figures(sweep: Path) -> dict[str, dict[str, str]]:
    with open(sweep / "results.csv") as f:
        rows = list(csv.DictReader(f))
    return {row["run"]: {k: v for k, v in row.items() if k not in NOT_FIGURES} for row in rows}


def states(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/run.json")}


@pytest.fixture(scope="module")
def local_figures(tmp_path_factory) -> dict[str, dict[str, str]]:
    """The grid through the local executor, uninterrupted: what every other way must give."""
    folder = tmp_path_factory.mktemp("local")
    done = run_sweep(write_sweep(folder, "sweep", SETTINGS, workers=2))
    assert done.returncode == 0, done.stderr[-3000:]
    return figures(folder / "sweep")


def assert_one_requeued_then_all_completed(sweep: Path, exit_code: int = 143) -> dict:
    found = states(sweep)
    assert {s["status"] for s in found.values()} == {"completed"}
    attempts = sorted(s["attempts"] for s in found.values())
    assert attempts == [1, 2]  # one run stopped and resumed, the other ran once
    stopped = next(s for s in found.values() if s["attempts"] == 2)
    assert [h["status"] for h in stopped["history"]] == ["stopped", "completed"]
    assert stopped["history"][0]["exit_code"] == exit_code  # a clean stop on the signal
    return stopped


@pytest.mark.slow
def test_submitit_local_mode_requeues_a_job_its_fit_stopped(tmp_path, local_figures):
    """submitit's local mode requeues a job by starting it again: the fit resumes."""
    settings = {**SETTINGS, "trainer.callbacks": [stop_at_epoch(tmp_path / "stop")]}
    config = write_sweep(tmp_path, "sweep", settings, executor="submitit",
                         submitit={"cluster": "local", "timeout_min": 10})  # fmt: skip
    done = run_sweep(config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_one_requeued_then_all_completed(tmp_path / "sweep")
    assert figures(tmp_path / "sweep") == local_figures


def slurm_problem() -> str | None:
    """Why no SLURM controller answers here (start one: `.ci/slurm-up`), or None."""
    if shutil.which("sbatch") is None:
        return "no SLURM here (sbatch not found; .ci/slurm-up installs and starts one)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    if "UP" not in ping.stdout:
        return f"no SLURM controller answers ({ping.stdout.strip() or ping.stderr.strip()})"
    return None


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.5)


def lock_is_free(run: Path) -> bool:
    """Whether no process holds the run folder's lock (see mtfilter.sweep._state.RunLock)."""
    with open(run / "run.lock") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def squeue_state(job: str) -> str:
    found = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                           text=True, timeout=30)  # fmt: skip
    return found.stdout.strip()


def start_slurm_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A 2-run sweep through SLURM whose fits wait at epoch 300 (the first to get there) for
    the test's signal; returns the sweep's process and the file that will name the job."""
    problem = slurm_problem()
    if problem:
        pytest.skip(problem)
    flag = tmp_path / "job"
    settings = {**SETTINGS, "trainer.callbacks": [stop_at_epoch(flag, sender="test")]}
    config = write_sweep(tmp_path, "sweep", settings, executor="submitit",
                         submitit={"cluster": "slurm", "partition": "debug", "timeout_min": 10,
                                   "mem_gb": 1})  # fmt: skip
    command = [sys.executable, "-m", "mtfilter.cli", "sweep", "--config", str(config)]
    sweep = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    return sweep, flag


def finish(sweep: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    try:
        return sweep.communicate(timeout=timeout)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            subprocess.run(["scancel", "--name", "submitit"], timeout=30)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["SIGTERM", "SIGUSR2"],  # preemption; the warning submitit asks for before a time limit
)
def test_a_sweep_through_slurm_requeues_a_signalled_job_and_equals_the_local_one(
    tmp_path, local_figures, name
):
    sweep, flag = start_slurm_sweep(tmp_path)
    try:
        wait_for(flag.exists, "a fit to reach epoch 300")
        job, run = flag.read_text().split("\n")
        # `scancel --signal` signals every process of the job's steps, as SLURM does
        subprocess.run(["scancel", f"--signal={name.removeprefix('SIG')}", job], check=True,
                       timeout=30)  # fmt: skip
        wait_for(lambda: squeue_state(job) == "PENDING", f"job {job} to be requeued")
        # SLURM holds a requeued job for two minutes before it may start again, so that the
        # node is done with its last run; here: until the last run's processes have ended
        # (they hold the run's lock), then a moment for SLURM to clean up after them
        wait_for(lambda: lock_is_free(Path(run)), f"job {job}'s processes to end")
        time.sleep(5)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True,
                       timeout=30)  # fmt: skip
    finally:
        out, err = finish(sweep)
    assert sweep.returncode == 0, err[-3000:]
    signum = 15 if name == "SIGTERM" else 12
    stopped = assert_one_requeued_then_all_completed(tmp_path / "sweep", 128 + signum)
    assert [h["job"] for h in stopped["history"]] == [job, job]  # the same job, requeued
    assert figures(tmp_path / "sweep") == local_figures
    # no stream of sacct warnings on a cluster without accounting: one line instead
    assert "Bypassing sacct error" not in out + err
    assert out.count("job states come from squeue") == 1


@pytest.mark.slurm
@pytest.mark.slow
def test_a_cancelled_job_is_not_requeued(tmp_path):
    """`scancel JOB` (no --signal) cancels: the fit stops cleanly, and the job stays gone."""
    sweep, flag = start_slurm_sweep(tmp_path)
    try:
        wait_for(flag.exists, "a fit to reach epoch 300")
        job = flag.read_text().split("\n")[0]
        subprocess.run(["scancel", job], check=True, timeout=30)
    finally:
        out, err = finish(sweep)
    assert sweep.returncode == 1, err[-3000:]  # one run did not finish
    found = states(tmp_path / "sweep")
    cancelled = next(s for s in found.values() if s["history"][0].get("job") == job)
    assert cancelled["status"] == "stopped" and cancelled["attempts"] == 1
    assert cancelled["history"][0]["exit_code"] == 143
    assert "did not finish" in err
    assert squeue_state(job) in ("", "CANCELLED", "COMPLETED")


def test_the_slurm_example_is_the_readme_s_and_plans_without_a_cluster(capsys):
    from mtfilter.cli.sweep_report import sweep_or_report

    config = REPO / "configs" / "sweep" / "slurm.yaml"
    readme = (REPO / "README.md").read_text()
    shown = readme.split("## Running on SLURM", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(shown) == yaml.safe_load(config.read_text())
    assert sweep_or_report(["sweep", "--config", str(config), "--dry_run", "true"]) == 0
    assert "6 runs in lightning_logs/sweeps/slurm" in capsys.readouterr().out  # seeds stacked
