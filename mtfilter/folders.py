"""What a sweep folder holds on disk: file names, run names and the JSON files' reading and
writing. A leaf module (standard library only), shared by the sweep, the report and the fit's
summary, so that reading a sweep back never loads torch or the sweep machinery."""

import contextlib
import fcntl
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SWEEP_FILE = "sweep.json"  # the sweep's definition and its runs' names
RUN_FILE = "run.json"  # one run's state: status, attempts, error
FIT_CONFIG = "fit.yaml"  # one run's resolved fit configuration
LOG_FILE = "log.txt"  # one run's console output
LOCK_FILE = "run.lock"  # held by the process that writes the run folder
SUMMARY_FILE = "summary.json"  # written by the fit itself (RunSummary)
REPORT_LOCK = ".report.lock"  # held while a report is written (two sweeps ending together)
SEED_KEY = "seed_everything"  # the grid axis of seeds
LEARNING_RATE_KEY = "model.optimizer.init_args.lr"  # the grid axis of learning rates

Grid = dict[str, list[Any]]


def grid_keys(grid: Grid | list[Grid]) -> list[str]:
    """The varied keys, in the order they first appear."""
    grids = grid if isinstance(grid, list) else [grid]
    return list(dict.fromkeys(key for one in grids for key in one))


def run_name(values: dict[str, Any]) -> str:
    """A folder name a person can read: `hidden_dim=8-layout=st`, full keys only if needed."""
    short = {key: key.rsplit(".", 1)[-1] for key in values}
    if len(set(short.values())) != len(short):  # two axes share a last segment
        short = {key: key for key in values}
    parts = [f"{short[key]}={short_value(value)}" for key, value in values.items()]
    return "-".join(parts) or "run"


def short_value(value: Any) -> str:
    """A value as a few filename-safe characters: `Adam,lr=0.003` for an optimizer mapping."""
    if isinstance(value, dict) and "class_path" in value:
        text = value["class_path"].rsplit(".", 1)[-1]
        args = value.get("init_args") or {}
        text += "".join(f",{k}={short_value(v)}" for k, v in args.items())
    elif isinstance(value, list | tuple):
        text = "+".join(short_value(v) for v in value)
    elif isinstance(value, dict):
        text = ",".join(f"{k}={short_value(v)}" for k, v in value.items())
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9_.,=+]", "_", text)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or half-written."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: str | Path, content: Any) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as temporary:
        temporary.write_text(json.dumps(_strict(content), indent=2, default=str))


def _strict(value: Any) -> Any:
    """NaN and infinities as null: strict JSON readers refuse Python's `NaN`."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def unwritable(path: str | Path) -> str | None:
    """Why a folder cannot be created or written at `path`, or None when it can. Checked by
    creating and removing an empty folder in the nearest one that exists, so nothing is left
    behind either way (permission bits do not say it for root or read-only filesystems)."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".mtfilter-write-check-"))
    except OSError as error:
        return f"cannot write in {existing} ({error.strerror})"
    return None


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write into; it replaces `path` in one step when the
    block ends without an error (readers see the old file or the new one, whole), and is
    removed otherwise. It keeps the suffix, for writers that choose a format by it."""
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the block: a second process
    waits for the first (the kernel frees it however the holder ends)."""
    with open(path, "a") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        yield
