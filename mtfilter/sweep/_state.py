"""The sweep folder's runs and their state: one subfolder per run with its resolved fit
configuration, `run.json`, and a lock held by the one process that writes it.

The fit's own `summary.json` is the truth about a run. `run.json` records the sweep's side
(attempts, timings, the last error) and is re-derived from the summary whenever the sweep
starts, so a state left behind by an interrupted or killed sweep never sticks.
"""

import fcntl
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from mtfilter.errors import ConfigError
from mtfilter.folders import (
    FIT_CONFIG,
    LOCK_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    read_json,
    write_json,
)
from mtfilter.record import summaries
from mtfilter.sweep._plan import Run, config_digest

FINISHED = "completed"
# Outcomes that count as a failure in the sweep's tally (stopped and interrupted runs resume).
FAILED = ("failed", "diverged")


@dataclass
class RunState:
    """What `run.json` records about one run."""

    name: str
    values: dict[str, Any]
    seeds: list[int]
    settings: dict[str, Any]
    config_digest: str
    parameters: int
    cost: float
    learning_rates: list[float] = field(default_factory=list)  # stacked, with every seed
    status: str = "pending"  # pending, running, completed, stopped, interrupted, failed, diverged
    error: str | None = None
    attempts: int = 0
    started: float | None = None
    ended: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path) -> "RunState":
        content = read_json(folder / RUN_FILE)
        if content is None:
            raise ConfigError(f"{folder / RUN_FILE} is missing or unreadable")
        return cls(**content)

    def save(self, folder: Path) -> None:
        write_json(folder / RUN_FILE, asdict(self))


class RunLock:
    """An advisory lock on a run folder (`flock` on `run.lock`), held while a fit writes it.

    The kernel releases it when the last process holding it ends, however it ends, so a lock is
    never stale: a folder whose writer died is free. The sweep takes the lock and hands its file
    to the fit's process (`pass_fds`), so a fit that outlives a killed sweep still holds it.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self.file: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free; False if a live process holds it."""
        file = open(self.path, "a+")  # noqa: SIM115 (held open as long as the lock)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        self.file = file
        self.record_owner(os.getpid())
        return True

    def record_owner(self, pid: int) -> None:
        assert self.file is not None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{pid}\n")
        self.file.flush()

    def fileno(self) -> int:
        assert self.file is not None
        return self.file.fileno()

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # our copy; a fit still running keeps its own
            self.file = None

    def owner(self) -> int | None:
        """The pid recorded by the holder, where one is recorded."""
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def is_locked(folder: Path) -> bool:
    """Whether a live process holds the run folder's lock (checked by trying to take it)."""
    lock = RunLock(folder)
    if lock.acquire():
        lock.release()
        return False
    return True


def reconcile(folder: Path) -> RunState:
    """The run's state re-derived from its own summary, saved to `run.json` if it changed.

    A completed summary means completed, whatever `run.json` says (a Ctrl-C that reached a fit
    just after it finished, say). Otherwise, unless a live process is writing the folder, a
    `run.json` that says `running` or `completed` is not the fit's last word (the sweep was
    killed, or the summary removed): the summary's status is taken, or `failed` without one.
    """
    state = RunState.load(folder)
    before = asdict(state)
    outcome, error = summaries.read_status(folder)
    if outcome == FINISHED:
        state.status, state.error = FINISHED, None
    elif state.status in ("running", FINISHED) and not is_locked(folder):
        state.status = outcome or "failed"
        state.error = error or (
            f"no {SUMMARY_FILE}: the fit ended without writing one (killed?), or it was removed"
        )
    if asdict(state) != before:
        state.save(folder)
    return state


# Options that choose a computation's path, not its result: `model.gradients` gives autograd's
# gradients to float32 rounding either way (tests/nn/test_explicit_gradients.py).
HOW_NOT_WHAT = {"model.gradients"}


def _differences(recorded: Path, config: str, explicit: set[str]) -> list[str]:
    """The keys in which the run folder's configuration and `config` differ; none if they hold
    the same settings, in whatever order (a newer mtfilter may write its keys in another order).

    A key only `config` has is an option added since the run was made (by mtfilter, Lightning or
    torch: a new optimizer argument, say), at its default unless the sweep sets it (`explicit`:
    the keys its base config, grid and settings name). Options are added with the old behaviour
    as their default and a resumed fit reads the run's own configuration, so such a key is no
    difference: a finished sweep stays finished, and an unfinished one resumes, after an upgrade.
    So is a new default of an option that chooses how a run computes, not what
    (`HOW_NOT_WHAT`), unless the sweep sets that option.
    """
    try:
        old = _flatten(yaml.safe_load(recorded.read_text()) or {})
    except (OSError, yaml.YAMLError):
        return [f"{recorded.name} (unreadable)"]
    new = _flatten(yaml.safe_load(config) or {})
    changed = [key for key in old if key not in new or (
        old[key] != new[key] and (key not in HOW_NOT_WHAT or _named(key, explicit)))]  # fmt: skip
    added = [key for key in new if key not in old and _named(key, explicit)]
    return sorted(changed + added)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys -> leaf values (lists are leaves); dotted keys stay dotted."""
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _named(key: str, explicit: set[str]) -> bool:
    """Whether `key` or a mapping above it is among the `explicit` keys."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in explicit for i in range(1, len(parts) + 1))


def largest_first(folders: list[Path]) -> list[Path]:
    """Run folders by their estimated work, largest first: the long runs start early, so the
    last to finish is a short one."""
    return sorted(folders, key=lambda f: RunState.load(f).cost, reverse=True)


def prepare(folder: Path, runs: list[Run], definition: dict[str, Any]) -> list[Path]:
    """Create or check the sweep folder; returns the run folders not finished yet.

    A run folder that exists must hold the same settings (see `_differences`: an option added
    since is none), else the folder holds a different sweep and nothing is touched. New runs (a
    grid that grew) are added; every existing run's state is reconciled with its summary;
    finished runs are left as they are.
    """
    existing = folder / SWEEP_FILE
    if folder.exists() and not existing.is_file() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not a sweep folder: choose another folder")
    base_keys = set(_flatten(yaml.safe_load(definition.get("base_config") or "") or {}))
    for run in runs:
        run_file = folder / run.name / RUN_FILE
        if run_file.is_file() and RunState.load(run_file.parent).config_digest != config_digest(
            run.config
        ):
            differences = _differences(
                run_file.parent / FIT_CONFIG, run.config, base_keys | set(_flatten(run.settings))
            )
            if differences:
                shown = ", ".join(differences[:5]) + (", ..." if len(differences) > 5 else "")
                raise ConfigError(
                    f"{folder} holds a different sweep: its run {run.name} was made from another "
                    f"configuration (it differs in {shown}). Give this sweep another folder, or "
                    "delete that one."
                )
    folder.mkdir(parents=True, exist_ok=True)
    previous = read_json(existing) or {}
    names = sorted({*previous.get("runs", []), *(run.name for run in runs)})
    write_json(existing, {**definition, "runs": names, "updated": time.time()})
    todo = []
    for run in runs:
        run_folder = folder / run.name
        run_folder.mkdir(parents=True, exist_ok=True)
        if not (run_folder / RUN_FILE).is_file():
            (run_folder / FIT_CONFIG).write_text(run.config)
            RunState(
                name=run.name,
                values=run.values,
                seeds=run.seeds,
                settings=run.settings,
                config_digest=config_digest(run.config),
                parameters=run.parameters,
                cost=run.cost,
                learning_rates=run.learning_rates,
            ).save(run_folder)
        if reconcile(run_folder).status != FINISHED:
            todo.append(run_folder)
    return todo
