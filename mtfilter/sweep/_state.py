"""The sweep folder on disk: one subfolder per run with its resolved fit configuration and its
state, and the check that an existing folder holds this same sweep."""

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtfilter.errors import ConfigError
from mtfilter.sweep._plan import Run, config_digest

SWEEP_FILE = "sweep.json"
RUN_FILE = "run.json"
FIT_CONFIG = "fit.yaml"
LOG_FILE = "log.txt"
FINISHED = "completed"


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
    status: str = "pending"  # pending, running, completed, stopped, failed
    error: str | None = None
    attempts: int = 0
    started: float | None = None
    ended: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path) -> "RunState":
        return cls(**json.loads((folder / RUN_FILE).read_text()))

    def save(self, folder: Path) -> None:
        write_json(folder / RUN_FILE, asdict(self))


def read_summary(folder: Path) -> dict[str, Any]:
    """The run's own `summary.json`, or {} before it wrote one."""
    try:
        return json.loads((folder / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def summary_status(folder: Path) -> str | None:
    """The status the run's own `summary.json` reports, or None before it wrote one."""
    return read_summary(folder).get("status")


def is_finished(folder: Path) -> bool:
    return summary_status(folder) == FINISHED


def prepare(folder: Path, runs: list[Run], definition: dict[str, Any]) -> list[Path]:
    """Create or check the sweep folder; returns the run folders not finished yet.

    A run folder that exists must hold the same resolved configuration, else the folder holds
    a different sweep and nothing is touched. New runs (a grid that grew) are added; finished
    runs are left as they are.
    """
    existing = folder / SWEEP_FILE
    if folder.exists() and not existing.is_file() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not a sweep folder: choose another folder")
    for run in runs:
        run_file = folder / run.name / RUN_FILE
        if run_file.is_file():
            recorded = RunState.load(run_file.parent).config_digest
            if recorded != config_digest(run.config):
                raise ConfigError(
                    f"{folder} holds a different sweep: its run {run.name} was made from another "
                    "configuration. Give this sweep another folder, or delete that one."
                )
    folder.mkdir(parents=True, exist_ok=True)
    previous = json.loads(existing.read_text()) if existing.is_file() else {}
    names = sorted({*previous.get("runs", []), *(run.name for run in runs)})
    write_json(existing, {**definition, "runs": names, "updated": time.time()})
    todo = []
    for run in runs:
        run_folder = folder / run.name
        run_folder.mkdir(exist_ok=True)
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
            ).save(run_folder)
        if not is_finished(run_folder):
            todo.append(run_folder)
    return todo


def write_json(path: Path, content: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str))
    os.replace(tmp, path)  # never leave a half-written file
