"""Reading a sweep folder back: one row per run (each stacked replica its own row), from the
runs' `run.json` and `summary.json` files."""

import csv
import json
from pathlib import Path
from typing import Any

from mtfilter.errors import ConfigError
from mtfilter.folders import RUN_FILE, SEED_KEY, SUMMARY_FILE, SWEEP_FILE, grid_keys, read_json

# Figures of a row, in the order of results.csv after the varied keys.
FIGURES = [
    "parameters_total", "parameters_per_task", "train_loss_best", "train_loss_best_epoch",
    "batch_loss_best", "batch_loss_best_epoch", "val_loss_best", "val_loss_best_epoch",
    "val_acc_final", "val_exact_match_final", "epochs", "converged", "converged_epoch",
    "wall_time_s", "conflict_fraction", "conflict_mean_cosine", "grad_norm_spread",
]  # fmt: skip

# Conflict telemetry columns: the run's mean over its measurements (empty where not measured).
CONFLICT_FIGURES = {
    "conflict_fraction": "conflict/fraction",
    "conflict_mean_cosine": "conflict/mean_cosine",
    "grad_norm_spread": "conflict/grad_norm_spread",
}


def collect(folder: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """The sweep's varied keys and its rows, one per run and seed."""
    sweep = read_json(folder / SWEEP_FILE)
    if sweep is None:
        raise ConfigError(f"{folder} is not a sweep folder (no readable {SWEEP_FILE})")
    keys = grid_keys(sweep.get("grid", {}))
    rows = []
    for name in sweep.get("runs", []):
        run_folder = folder / name
        state = read_json(run_folder / RUN_FILE)
        if state is None:
            continue
        for summary, log_dir in _summaries(run_folder, state):
            rows.append(_row(name, state, summary, log_dir, len(state.get("seeds") or [1])))
    return keys, rows


def _summaries(run_folder: Path, state: dict[str, Any]) -> list[tuple[dict | None, Path]]:
    top = read_json(run_folder / SUMMARY_FILE)
    if top is not None and "replicas" in top:  # stacked seeds: one summary per replica
        return [(read_json(run_folder / path) or top, (run_folder / path).parent)
                for path in top["replicas"]]  # fmt: skip
    if top is not None:
        return [(top, run_folder)]
    seeds = state.get("seeds") or [None]
    return [({"seed": seed}, run_folder) for seed in seeds]  # never finished: no figures


def _row(
    name: str, state: dict[str, Any], summary: dict[str, Any] | None, log_dir: Path,
    replicas: int,
) -> dict[str, Any]:  # fmt: skip
    summary = summary or {}
    values = dict(state.get("values", {}))
    if summary.get("seed") is not None:
        values[SEED_KEY] = summary["seed"]
    layout = ((summary.get("hparams") or {}).get("model") or {}).get("layout")
    if layout is not None:  # also where the base config sets it: methods on mt, say
        values.setdefault("model.layout", layout)
    train, val = summary.get("train") or {}, summary.get("val") or {}
    parameters = summary.get("parameters") or {}
    conflict = (summary.get("multitask") or {}).get("conflict_mean") or {}
    convergence = summary.get("convergence") or {}
    status = summary.get("status") or state.get("status")
    if state.get("status") not in (None, "completed") and status == "completed":
        status = state["status"]  # a later attempt of the run is not finished
    return {
        "run": name,
        **values,
        "status": status,
        "parameters_total": parameters.get("total"),
        "parameters_per_task": parameters.get("per_task"),
        "train_loss_best": train.get("loss_best"),
        "train_loss_best_epoch": train.get("loss_best_epoch"),
        "batch_loss_best": train.get("batch_loss_best"),
        "batch_loss_best_epoch": train.get("batch_loss_best_epoch"),
        "val_loss_best": val.get("loss_best"),
        "val_loss_best_epoch": val.get("loss_best_epoch"),
        "val_acc_final": val.get("acc_final"),
        "val_exact_match_final": val.get("exact_match_final"),
        "epochs": summary.get("epochs"),
        "converged": convergence.get("converged"),
        "converged_epoch": convergence.get("epoch"),
        "wall_time_s": summary.get("wall_time_s"),
        **{column: conflict.get(tag) for column, tag in CONFLICT_FIGURES.items()},
        "replicas": replicas,
        "error": summary.get("error") or (state.get("error") if status != "completed" else None),
        "log_dir": str(log_dir),
    }


def write_csv(path: Path, keys: list[str], rows: list[dict[str, Any]]) -> None:
    columns = ["run", *keys, "status", *FIGURES, "replicas", "error", "log_dir"]
    columns = list(dict.fromkeys(columns))  # seed_everything may be both a key and a value
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else value
