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

from mtfilter.stop_signals import STOP_SIGNALS, leave_closed_terminal, terminal_outputs
from mtfilter.sweep._execute import execute, threads_env
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
) -> int | None:
    """Run every folder; returns None when all of them ran, else the signal that stopped it.

    The first Ctrl-C (or a scheduler's SIGTERM, see `STOP_SIGNALS`) is passed on to the running
    fits, which stop cleanly (they keep `last.ckpt`, so running the sweep again continues them);
    no new run starts. A second Ctrl-C aborts them. A folder still held by a fit of an earlier
    sweep is waited for (`on_wait`), taking a worker meanwhile.
    """
    gpus = torch.cuda.device_count()
    slots: queue.Queue[dict[str, str]] = queue.Queue()
    if gpus:
        for index in range(gpus * runs_per_gpu):
            slots.put({"CUDA_VISIBLE_DEVICES": str(index % gpus)})
    else:
        threads = max(1, (torch.get_num_threads() or 1) // workers)
        for _ in range(workers):
            slots.put(threads_env(threads))
    stopping = threading.Event()
    stopped_by: list[int] = []  # the signals received, in order
    running: set[subprocess.Popen] = set()
    lock = threading.Lock()

    def started(process: subprocess.Popen) -> None:
        with lock:
            running.add(process)
            if stopping.is_set():  # the signal came while it was starting
                process.send_signal(stopped_by[0])

    def task(folder: Path) -> RunState | None:
        if stopping.is_set():
            return None
        env = slots.get()
        try:
            return execute(folder, env, started, on_wait, should_stop=stopping.is_set)
        finally:
            slots.put(env)

    def pass_on(signum: int) -> None:
        with lock:
            stopped_by.append(signum)
            stopping.set()
            for process in running:
                if process.poll() is None:
                    process.send_signal(signum)

    order = largest_first(folders)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C must reach us even when started from a shell that ignores it in background
        # jobs; the other stop signals end the sweep as it does.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        outputs = terminal_outputs()

        def raise_stop(signum: int, frame: object) -> None:
            if signum == getattr(signal, "SIGHUP", None):
                leave_closed_terminal(outputs)
            raise _StopSignal(signum)

        for signum in STOP_SIGNALS:
            if signum != signal.SIGINT:
                signal.signal(signum, raise_stop)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures: dict[Future, Path] = {pool.submit(task, folder): folder for folder in order}
        pending = set(futures)
        while pending:
            try:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:  # first: finish the epoch; second: abort the fits
                pass_on(signal.SIGINT)
                continue
            except _StopSignal as stop:
                pass_on(stop.signum)
                continue
            for future in done:
                state = future.result()
                if state is not None:
                    on_done(futures[future], state)
    return stopped_by[0] if stopped_by else None


class _StopSignal(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum
