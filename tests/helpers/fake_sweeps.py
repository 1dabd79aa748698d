"""Sweep folders of fake summaries, with known figures, for tests of the report and of what
reads results.csv."""

import json
from pathlib import Path

# best val loss per (width, layout, seed): mt worse at 8 by ~0.1, no real difference at 64
LOSSES = {
    (8, "st", 0): 0.10, (8, "st", 1): 0.12, (8, "st", 2): 0.11,
    (8, "mt", 0): 0.21, (8, "mt", 1): 0.21, (8, "mt", 2): 0.22,
    (64, "st", 0): 0.050, (64, "st", 1): 0.060, (64, "st", 2): 0.040,
    (64, "mt", 0): 0.055, (64, "mt", 1): 0.050, (64, "mt", 2): 0.052,
}  # fmt: skip
T_975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom


def fake_sweep(folder: Path, stacked: bool) -> Path:
    grid = {"model.hidden_dim": [8, 64], "model.layout": ["st", "mt"], "seed_everything": [0, 1, 2]}
    runs = []
    for width in (8, 64):
        for layout in ("st", "mt"):
            name = f"hidden_dim={width}-layout={layout}"
            run_folder = folder / name
            run_folder.mkdir(parents=True)
            values = {"model.hidden_dim": width, "model.layout": layout}
            (run_folder / "run.json").write_text(json.dumps(
                {"name": name, "values": values, "seeds": [0, 1, 2], "status": "completed"}
            ))  # fmt: skip
            summaries = [fake_summary(width, layout, seed) for seed in range(3)]
            if stacked:
                paths = []
                for seed, summary in enumerate(summaries):
                    (run_folder / f"seed_{seed}").mkdir()
                    (run_folder / f"seed_{seed}" / "summary.json").write_text(json.dumps(summary))
                    paths.append(f"seed_{seed}/summary.json")
                top = {"status": "completed", "seeds": [0, 1, 2], "replicas": paths}
                (run_folder / "summary.json").write_text(json.dumps(top))
            runs.append(name)
    (folder / "sweep.json").write_text(json.dumps({"grid": grid, "runs": runs}))
    return folder


def fake_summary(width: int, layout: str, seed: int) -> dict:
    loss = LOSSES[(width, layout, seed)]
    return {
        "status": "completed", "seed": seed, "epochs": 100, "wall_time_s": 2.0,
        "convergence": {"converged": True, "epoch": 100},
        "parameters": {"total": width * (10 if layout == "st" else 1), "per_task": width},
        "train": {"loss_best": loss + 0.01, "loss_best_epoch": 90 + seed},
        "val": {"loss_best": loss, "loss_best_epoch": 95 + seed, "acc_final": 0.9,
                "exact_match_final": 0.5, "bit_error_best": loss / 2,
                "exact_match_error_best": 3 * loss},
        "floor": MT_FLOOR if layout == "mt" else ST_FLOOR,
    }  # fmt: skip


MT_FLOOR = {"bit_error": 0.01, "bit_error_kind": "lower bound", "exact_match_error": 0.05,
            "exact_match_error_kind": "exact"}  # fmt: skip
ST_FLOOR = {"bit_error": 0.0, "bit_error_kind": "exact", "exact_match_error": 0.0,
            "exact_match_error_kind": "exact"}  # fmt: skip
