"""Cluster execution through submitit: the runs as one SLURM job array (or submitit's local mode
for trying it out), each job running one run folder exactly as the local executor would."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mtfilter.errors import ConfigError
from mtfilter.sweep._execute import execute_job
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
        execute_job, [str(folder) for folder in order], [options.cpus_per_task] * len(order)
    )
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
