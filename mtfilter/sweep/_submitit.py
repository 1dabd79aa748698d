"""Cluster execution through submitit: the runs as one SLURM job array (or submitit's local mode
for trying it out), each job running one run folder exactly as the local executor would, and
requeued to resume when it is preempted or its time limit nears (see `_cluster_job`)."""

import getpass
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mtfilter.errors import ConfigError
from mtfilter.sweep._cluster_job import FitJob
from mtfilter.sweep._state import RunState, largest_first


@dataclass
class SubmititOptions:
    """Where and how the jobs run.

    Args:
        cluster: `slurm`, or `local` to run the jobs as local processes through submitit (for
            trying a sweep before sending it to a cluster). Default: what submitit detects.
        partition: SLURM partition.
        timeout_min: Time limit of each job, in minutes.
        gpus_per_node: GPUs per job (one run per job).
        cpus_per_task: CPU cores per job; the run uses as many threads.
        array_parallelism: Most jobs of the array running at once.
        mem_gb: Memory per job.
        additional: Any other `slurm_*` parameter of submitit, without the prefix.
    """

    cluster: Literal["slurm", "local"] | None = None
    partition: str | None = None
    timeout_min: int = 60
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    array_parallelism: int = 64
    mem_gb: float | None = None
    additional: dict[str, Any] = field(default_factory=dict)


def run_with_submitit(
    folders: list[Path],
    sweep_folder: Path,
    options: SubmititOptions,
    on_done: Callable[[Path, RunState], None],
) -> bool:
    """Submit every folder as one job array and wait for the jobs; returns True when all ran."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "executor=submitit needs submitit: pip install 'mtfilter[slurm]'"
        ) from None
    executor = submitit.AutoExecutor(folder=sweep_folder / "submitit", cluster=options.cluster)
    parameters: dict[str, Any] = {
        "timeout_min": options.timeout_min,
        "cpus_per_task": options.cpus_per_task,
        "gpus_per_node": options.gpus_per_node,
        "slurm_array_parallelism": options.array_parallelism,
        **{f"slurm_{k}": v for k, v in options.additional.items()},
    }
    if options.partition is not None:
        parameters["slurm_partition"] = options.partition
    if options.mem_gb is not None:
        parameters["mem_gb"] = options.mem_gb
    executor.update_parameters(**parameters)
    order = largest_first(folders)
    jobs = executor.map_array(
        FitJob(), [str(folder) for folder in order], [options.cpus_per_task] * len(order)
    )
    if executor.cluster == "slurm":
        _read_states_without_sacct(jobs)
    by_job = {job.job_id: folder for job, folder in zip(jobs, order, strict=True)}
    try:
        for job in submitit.helpers.as_completed(jobs, poll_frequency=1):
            folder = by_job[job.job_id]
            state = RunState.load(folder)
            try:
                job.result()
            except Exception as error:  # the job died around the fit (time limit, node loss)
                if state.status in ("pending", "running"):
                    state.status, state.error = "failed", f"job {job.job_id}: {error}"
                    state.save(folder)
            on_done(folder, state)
    except KeyboardInterrupt:
        for job in jobs:  # no run should go on unwatched: running the sweep again resumes them
            if not job.done():
                job.cancel(check=False)
        return False
    return True


def _read_states_without_sacct(jobs: list[Any]) -> None:
    """submitit reads job states from sacct, which fails on a cluster without SLURM's accounting
    database, with a warning at every poll and no state ever read. There, these jobs read
    theirs from squeue instead (one line says so). submitit has no option for this: each job
    gets its own watcher (`watcher`, a class attribute of submitit's jobs, shadowed here)."""
    problem = _sacct_problem()
    if problem is None:
        return
    print(f"job states come from squeue (sacct is unavailable: {problem})", flush=True)
    watcher = _squeue_watcher()
    for job in jobs:
        job.watcher = watcher
        watcher.register_job(job.job_id)


def _sacct_problem() -> str | None:
    """Why sacct cannot report job states here (its own words), or None when it can."""
    if shutil.which("sacct") is None:
        return "no sacct command"
    try:
        done = subprocess.run(["sacct", "-n", "-X", "-j", "1", "-o", "JobID"], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[0] if lines else f"exit status {done.returncode}"


def _squeue_watcher() -> Any:
    """A submitit watcher of SLURM job states that asks squeue."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueInfoWatcher(SlurmInfoWatcher):
        """Job states from `squeue`: every job of this user, one line per array task. A job
        squeue no longer lists has ended (it keeps ended jobs for MinJobAge, 300 s by default);
        whether it succeeded is in the job's result file, which submitit reads first."""

        def _make_command(self) -> list[str] | None:
            if not self._registered - self._finished:
                return None
            return ["squeue", "-h", "-r", "--states=all", "-u", getpass.getuser(), "-o", "%i|%T|%N"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            info = super().read_info("JobID|State|NodeList\n" + text)
            for job_id in self._registered - self._finished:
                info.setdefault(job_id, {"JobID": job_id, "State": "ENDED", "NodeList": ""})
            return info

    return SqueueInfoWatcher(delay_s=60)
