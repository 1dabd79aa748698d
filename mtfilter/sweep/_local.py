"""Local execution: the runs in parallel over this machine's devices, largest first.

On a CPU each worker is one process with one thread: on a 2-core machine two such processes did
1.3-2.2x the training steps per second of one process with two threads (docs/benchmarks.md).
On GPUs several small runs may share a device (`runs_per_gpu`).
"""

import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import torch

from mtfilter.sweep._execute import execute
from mtfilter.sweep._state import RunState, largest_first


def default_workers(runs_per_gpu: int) -> int:
    gpus = torch.cuda.device_count()
    return gpus * runs_per_gpu if gpus else max(1, (torch.get_num_threads() or 1))


def run_locally(
    folders: list[Path],
    workers: int,
    runs_per_gpu: int,
    on_done: Callable[[Path, RunState], None],
    on_wait: Callable[[Path, int | None], None] | None = None,
) -> bool:
    """Run every folder; returns False if interrupted (Ctrl-C) before all of them ran.

    The first Ctrl-C lets running fits finish their current epoch and stop cleanly (they keep
    `last.ckpt`, so running the sweep again continues them); no new run starts. A folder still
    held by a fit of an earlier sweep is waited for (`on_wait`), taking a worker meanwhile.
    """
    gpus = torch.cuda.device_count()
    slots: queue.Queue[dict[str, str]] = queue.Queue()
    if gpus:
        for index in range(gpus * runs_per_gpu):
            slots.put({"CUDA_VISIBLE_DEVICES": str(index % gpus)})
    else:
        threads = max(1, (torch.get_num_threads() or 1) // workers)
        for _ in range(workers):
            slots.put({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    stopping = threading.Event()
    running: set[subprocess.Popen] = set()
    lock = threading.Lock()

    def started(process: subprocess.Popen) -> None:
        with lock:
            running.add(process)
            if stopping.is_set():  # Ctrl-C came while it was starting
                process.send_signal(signal.SIGINT)

    def task(folder: Path) -> RunState | None:
        if stopping.is_set():
            return None
        env = slots.get()
        try:
            return execute(folder, env, started, on_wait, should_stop=stopping.is_set)
        finally:
            slots.put(env)

    def interrupt_running() -> None:
        stopping.set()
        with lock:
            for process in running:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)

    order = largest_first(folders)
    interrupted = False
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C must reach us even when started from a shell that ignores it in background jobs
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures: dict[Future, Path] = {pool.submit(task, folder): folder for folder in order}
        pending = set(futures)
        while pending:
            try:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:  # first: finish the epoch; second: abort the fits
                interrupted = True
                interrupt_running()
                continue
            for future in done:
                state = future.result()
                if state is not None:
                    on_done(futures[future], state)
    return not interrupted
