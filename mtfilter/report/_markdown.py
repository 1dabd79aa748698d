"""`results.md`: the seed table's shape (per width: st best, mt best, mt - st), with means and
95% confidence intervals over seeds, a verdict per width, and every figure that is not an
optimum (its run did not converge) marked."""

from pathlib import Path
from typing import Any

from mtfilter.folders import short_value
from mtfilter.report._methods import MethodResult
from mtfilter.report._select import Choice
from mtfilter.report._stats import (
    LAYOUTS,
    EpochRange,
    Estimate,
    Report,
    WidthComparison,
    sort_key,
    verdict,
)

METRIC_TEXT = {
    "val": "the lowest full-dataset loss (mean per-bit loss, eval mode) over all epochs, and the "
    "epoch it was reached",
    "train": "the lowest epoch-mean training loss (mean per-bit loss, training mode) over all "
    "epochs, and the epoch it was reached",
    "batch": "the lowest loss of a single training batch (mean per-bit loss, training mode, "
    "before the step) over all steps, the original experiment's figure, and its epoch",
}
UNCONVERGED = "†"


def write_markdown(path: Path, report: Report) -> None:
    folder, keys, rows, metric = report.folder, report.keys, report.rows, report.metric
    width_key, sections = report.width_key, report.sections
    methods, choices, select_key = report.methods, report.choices, report.select_key
    lines = [f"# Sweep results: {folder.name}", ""]
    statuses: dict[str, int] = {}
    for row in rows:
        status = row.get("status") or "pending"
        statuses[status] = statuses.get(status, 0) + 1
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    wall = sum(_wall_time(rows).values())
    runs = len({row["run"] for row in rows})
    lines += [
        f"{len(rows)} points in {runs} runs ({counts}); {_duration(wall)} of training in all "
        "(stacked seeds train together).",
        f"Varied: {', '.join(f'`{k}`' for k in keys)}. Figure: {METRIC_TEXT[metric]}.",
        "Several seeds: mean [95% t-interval, from 3 seeds on; a loss's cut at 0]; the gap is "
        "paired by seed; epochs: the median of the seeds' best epochs (their range). Per-run "
        "figures are in results.csv.",
        f"{UNCONVERGED} marks a figure with seeds whose run did not converge (its convergence "
        "check never passed or, without one, its best epoch fell in the last tenth of its "
        "epochs): not an optimum, and a gap with such a side is not a comparison of optima.",
        "",
    ]
    if choices:
        lines += _choices_section(choices, select_key or "", width_key.rsplit(".", 1)[-1])
    width_name = width_key.rsplit(".", 1)[-1]
    for section, comparisons in sections.items():
        if section:  # other keys varied: a heading per section
            name = report.section_name(section)
            lines += [f"## st and mt{', ' + name if name else ''}", ""]
        lines += [
            f"| {width_name} | seeds | st best | st epoch | mt best | mt epoch | mt - st |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in comparisons:
            n = max((e.n for e in c.loss.values()), default=0)
            cells = []
            for layout in LAYOUTS:
                estimate = c.loss.get(layout)
                mark = _mark(c.unconverged.get(layout, 0), estimate)
                cells += (
                    [_estimate(estimate) + mark, _epoch(c.epoch.get(layout))]
                    if estimate
                    else ["-", "-"]
                )
            gap = _estimate(c.gap, signed=True) if c.gap else "-"
            lines.append(f"| {c.width} | {n} | " + " | ".join(cells) + f" | {gap} |")
        lines.append("")
        verdicts = [
            f"- {width_name} {c.width}: {verdict(c.gap)}{_caveat(c)}" for c in comparisons if c.gap
        ]
        lines += [*verdicts, ""] if verdicts else []
    if methods:
        lines += _methods_section(methods, width_name)
    failed = [row for row in rows if row.get("status") not in ("completed", None)]
    if failed:
        lines += ["## Runs that did not complete", ""]
        lines += [f"- {row['run']} (seed {row.get('seed_everything')}): {row['status']}"
                  for row in failed]  # fmt: skip
        lines.append("")
    path.write_text("\n".join(lines))


def _methods_section(methods: list[MethodResult], width_name: str) -> list[str]:
    lines = [
        "## Methods against the mt - st gap",
        "",
        "Each method is mt with the settings named; st and mt are the runs without them. Paired "
        "by seed: method - st, and the share of the gap closed, (mt - method) / (mt - st): 1 is "
        "as good as st, 0 no better than mt, below 0 worse than mt. Conflict: the per-task "
        "gradients on the shared parameters, mean over the run's measurements and the seeds "
        "(none for st, which shares nothing).",
        "",
        f"| {width_name} | method | seeds | best loss | method - st | gap closed | "
        "conflicting pairs | mean cosine | norm spread |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in methods:
        figures = [_figure(m.conflict_fraction), _figure(m.mean_cosine, signed=True),
                   _figure(m.norm_spread)]  # fmt: skip
        lines.append(
            f"| {m.width} | {m.method} | {m.loss.n} | {_estimate(m.loss)} | "
            f"{_estimate(m.gap_to_st, signed=True)} | {_estimate(m.gap_closed, signed=True)} | "
            + " | ".join(figures)
            + " |"
        )
    return [*lines, ""]


def _mark(unconverged: int, estimate: Estimate | None) -> str:
    if not unconverged or estimate is None:
        return ""
    return (
        f" {UNCONVERGED}"
        if unconverged == estimate.n
        else f" {UNCONVERGED}{unconverged}/{estimate.n}"
    )


def _caveat(c: WidthComparison) -> str:
    sides = [layout for layout in LAYOUTS if c.unconverged.get(layout)]
    if not sides:
        return ""
    return f" ({UNCONVERGED} not converged: {' and '.join(sides)}; not a comparison of optima)"


def _choices_section(choices: list[Choice], key: str, width_name: str) -> list[str]:
    if all(len(c.means) == 1 for c in choices):  # e.g. rates chosen by an earlier sweep
        lines = [
            f"## `{key}` per point",
            "",
            "One value per width and layout, as the sweep set it: nothing is chosen here. Its "
            f"mean best loss over the seeds below; {UNCONVERGED}: some of its runs did not "
            "converge.",
        ]
    else:
        how = (
            "chosen on the selection seeds and reported below on the other seeds"
            if all(c.held_out for c in choices)
            else "chosen and reported on the same seeds (no other seeds ran), so the figures "
            "below are a little optimistic"
        )
        lines = [
            f"## `{key}` chosen per point",
            "",
            f"Per width and layout, the value with the lowest mean best loss ({how}). Mean best "
            f"loss of each candidate on the selection seeds; {UNCONVERGED}: some of the chosen "
            "value's selection runs did not converge.",
        ]
    lines += [
        "",
        f"| {width_name} | layout | seeds | candidates | chosen |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in sorted(choices, key=lambda c: (c.section, sort_key(c.width), str(c.layout))):
        candidates = ", ".join(f"{name}: {mean:.4f}" for name, mean in sorted(c.means.items()))
        chosen = short_value(c.chosen) + (f" {UNCONVERGED}" if c.unconverged else "")
        lines.append(f"| {c.width} | {c.layout} | {c.seeds} | {candidates} | {chosen} |")
    return [*lines, ""]


def _figure(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _estimate(estimate: Estimate | None, signed: bool = False) -> str:
    if estimate is None:
        return "-"
    text = f"{estimate.mean:+.4f}" if signed else f"{estimate.mean:.4f}"
    if estimate.low is not None and estimate.high is not None:
        text += f" [{estimate.low:.4f}, {estimate.high:.4f}]"
    return text


def _epoch(epoch: EpochRange | None) -> str:
    if epoch is None:
        return "-"
    return (
        f"{epoch.median}"
        if epoch.low == epoch.high
        else (f"{epoch.median} ({epoch.low}-{epoch.high})")
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _wall_time(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Wall time per run (stacked replicas share theirs)."""
    return {row["run"]: float(row["wall_time_s"] or 0) for row in rows}
