"""Where a sweep's time went: training time per point (every run of it, by phase), largest first.
A stacked run trains its replicas together, so its time is counted once, under its point."""

from collections import defaultdict
from typing import Any

from mtfilter.folders import SEED_KEY, short_value


def time_section(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """A table of training minutes per point (the varied keys but the seed) and phase (the run
    name's first folder, e.g. `selection/` and `confirmation/` under a select-then-confirm
    sweep; one column when the runs have none). Empty when no run recorded its time."""
    point_keys = [k for k in keys if k != SEED_KEY]
    seconds: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counted: set[str] = set()
    for row in rows:
        if row["run"] in counted or not row.get("wall_time_s"):
            continue
        counted.add(row["run"])
        phase = row["run"].split("/", 1)[0] if "/" in row["run"] else "training"
        point = tuple(None if row.get(k) is None else short_value(row[k]) for k in point_keys)
        seconds[point][phase] += float(row["wall_time_s"])
    if not seconds:
        return []
    phases = sorted({phase for per_phase in seconds.values() for phase in per_phase})
    total = sum(sum(per_phase.values()) for per_phase in seconds.values())
    header = [k.rsplit(".", 1)[-1] for k in point_keys] + [f"{p} (min)" for p in phases]
    header += ["all (min)", "share"]
    lines = [
        "## Where the time went",
        "",
        f"Training time per point, {total / 60:.1f} min in all (a stacked run's replicas train "
        "together: its time is counted once), largest first. Wall time is lower where runs "
        "ran side by side.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    by_time = sorted(seconds.items(), key=lambda item: -sum(item[1].values()))
    for point, per_phase in by_time:
        point_seconds = sum(per_phase.values())
        cells = ["-" if v is None else v for v in point]
        cells += [f"{per_phase[p] / 60:.1f}" if p in per_phase else "-" for p in phases]
        cells += [f"{point_seconds / 60:.1f}", f"{point_seconds / total:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]
