"""`results.md`: the seed table's shape (per width: st best, mt best, mt - st), with means and
95% confidence intervals over seeds, the loss, both errors and the representational floor beside
the compared figure, a verdict per width, and every run that did not converge named (and, by
default, left out: see `compare`)."""

import math
from pathlib import Path
from typing import Any

from mtfilter.folders import LEARNING_RATE_KEY, SEED_KEY, replacing
from mtfilter.report._methods import MethodResult
from mtfilter.report._metric import METRICS, SIDE_FIGURES, Metric
from mtfilter.report._select import Choice
from mtfilter.report._stats import (
    LAYOUTS,
    EpochRange,
    Estimate,
    FloorCells,
    Report,
    Transition,
    WidthComparison,
    section_sort_key,
    sort_key,
    transition,
    verdict,
)
from mtfilter.report._time import time_section

UNCONVERGED = "†"
EDGE = "‡"


def write_markdown(path: Path, report: Report) -> None:
    folder, rows, compared = report.folder, report.rows, report.compared
    width_name, sections = report.width_name, report.sections
    methods, choices, select_key = report.methods, report.choices, report.select_key
    lines = [f"# Sweep results: {folder.name}", ""]
    statuses: dict[str, int] = {}
    every_row = report.every_row or rows  # selection runs included
    for row in every_row:
        status = row.get("status") or "pending"
        statuses[status] = statuses.get(status, 0) + 1
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    wall = sum(_wall_time(every_row).values())
    runs = len({row["run"] for row in every_row})
    replicas = "replica" if len(every_row) == 1 else "replicas"
    lines += [
        f"{len(every_row)} {replicas} (seed and setting) of {runs} run{'s' if runs != 1 else ''} "
        f"({counts}); {_duration(wall)} of training in all (stacked replicas train together).",
        f"Varied: {', '.join(f'`{k}`' for k in report.keys)}. Compared: {compared.label}, "
        f"{compared.text}.",
        "Beside it, each layout's best loss, bit error and exact-match error (each its own "
        "lowest over epochs), and the representational floor of mt's last hidden layer: the "
        "lowest bit error / exact-match error any weights can reach through it "
        "(`>=`: a lower bound; st's towers have one output each, floor 0). mt's conflict: the "
        "share of task pairs whose gradients on the shared weights point apart, and their mean "
        "cosine, at the last measurement at or before the epoch of the lowest val loss "
        "(`(end)`: the last one of the run, for runs that did not record that).",
        "Several seeds: mean [95% t-interval, from 3 seeds on; an error's cut at 0]; the gap is "
        "paired by seed; epochs: the median of the seeds' best epochs (their range). Per-run "
        "figures are in results.csv."
        if _most_seeds(sections) > 1
        else "One seed per point: no interval. Per-run figures are in results.csv.",
        _unconverged_text(report.unconverged),
        "",
    ]
    if report.not_included:
        lines += [
            "Not included yet (no sweep in the folder): "
            + ", ".join(f"`{other}`" for other in report.not_included)
            + ". Their runs join this report once their sweep has run.",
            "",
        ]
    # the layouts the sweep ran: a grid without a layout axis has the base config's only
    layouts = [
        layout
        for layout in LAYOUTS
        if any(layout in c.value for comparisons in sections.values() for c in comparisons)
    ] or list(LAYOUTS)
    if choices:
        selected = METRICS[report.select_metric or report.metric]
        lines += _choices_section(choices, select_key or [], width_name, selected)
    for section, comparisons in sections.items():
        if section:  # other keys varied: a heading per section
            name = report.section_name(section)
            lines += [f"## {' and '.join(layouts)}{', ' + name if name else ''}", ""]
        lines += _width_table(comparisons, compared, width_name, report.unconverged, layouts)
        verdicts = [
            f"- {width_name} {c.width}: {verdict(c.gap)}{_caveat(c, report.unconverged)}"
            for c in comparisons
            if c.gap
        ]
        found = transition(comparisons)
        if found is not None:
            verdicts.append(_transition_text(found, width_name))
        lines += [*verdicts, ""] if verdicts else []
    if report.contrasts:
        lines += _contrast_section(report, width_name)
    if methods:
        lines += _methods_section(methods, width_name, compared)
    lines += time_section(every_row, report.keys)
    failed = [row for row in every_row if row.get("status") not in ("completed", None)]
    if failed:
        lines += ["## Runs that did not complete", ""]
        lines += [f"- {row['run']} ({_replica_text(row)}): {row['status']}" for row in failed]
        lines.append("")
    with replacing(path) as temporary:
        temporary.write_text("\n".join(lines))


def _unconverged_text(unconverged: str) -> str:
    if unconverged == "mark":
        return (
            f"{UNCONVERGED} marks a figure with seeds whose run did not converge (its "
            "convergence check never passed or, without one, its best epoch fell in the last "
            "tenth of its epochs): not an optimum, and a gap with such a side is not a "
            "comparison of optima."
        )
    return (
        f"{UNCONVERGED}k: k seeds whose run did not converge (its convergence check never "
        "passed or, without one, its best epoch fell in the last tenth of its epochs): not an "
        "optimum, so left out of the figure and of every comparison."
    )


def _width_table(
    comparisons: list[WidthComparison], compared: Metric, width_name: str, unconverged: str,
    layouts: list[str],
) -> list[str]:  # fmt: skip
    """Per width: the floor, then for each layout (st and mt) the compared figure (with its
    interval), the other figures and the best epochs; then the paired gap."""
    beside = [name for name in SIDE_FIGURES if name != compared.name]
    per_layout = [compared.label, *(METRICS[name].label for name in beside), "epoch"]
    has_mt, both = "mt" in layouts, len(layouts) == 2
    header = [width_name, "seeds"] + ["mt floor (bit / exact-match error)"] * has_mt
    header += [f"{layout} {label}" for layout in layouts for label in per_layout]
    header += [f"mt - st ({compared.label})"] * both
    header += ["mt above its floor"] * (has_mt and compared.floor_name is not None)
    header += ["mt conflict at the best epoch (pairs / cosine)"] * has_mt
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for c in comparisons:
        n = max((e.n for e in c.value.values()), default=0)
        cells = [str(c.width), str(n)] + [_floor(c.floor.get("mt"))] * has_mt
        for layout in layouts:
            estimate = c.value.get(layout)
            mark = _mark(c.unconverged.get(layout, 0), estimate, unconverged)
            if estimate is None:
                cells += ["-" + mark, *["-"] * len(beside), "-"]
                continue
            side = c.side.get(layout, {})
            cells += [
                _estimate(estimate) + mark,
                *(_mean(side.get(name)) for name in beside),
                _epoch(c.epoch.get(layout)),
            ]
        if both:
            cells.append(_estimate(c.gap, signed=True) if c.gap else "-")
        if not has_mt:
            lines.append("| " + " | ".join(cells) + " |")
            continue
        if compared.floor_name is not None:
            mt, floor = c.value.get("mt"), c.floor.get("mt")
            above = (None if mt is None or floor is None
                     else mt.mean - getattr(floor, compared.floor_name))  # fmt: skip
            cells.append("-" if above is None else f"{above:+.4f}")
        fraction, cosine, when = c.conflict.get("mt", (None, None, "best"))
        at_end = " (end)" if when == "end" else ""
        cells.append("-" if fraction is None or cosine is None
                     else f"{fraction:.2f} / {cosine:+.3f}{at_end}")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _transition_text(found: Transition, width_name: str) -> str:
    if found.width is None:
        text = f"- transition: mt trails st at every {width_name} up to the widest tried"
    else:
        text = (f"- transition: mt is within noise of st (the paired 95% interval of mt - st "
                f"covers 0 or lies below) from {width_name} {found.width} on")  # fmt: skip
    seeds = found.seed_range
    if seeds is not None:
        text += (f"; per seed (its mt no worse than its st from there on): median "
                 f"{seeds.median}, range {seeds.low}-{seeds.high}")  # fmt: skip
    elif found.per_seed:
        reached = {seed: width for seed, width in found.per_seed.items() if width is not None}
        if not reached:
            text += "; no seed's mt reaches its st at the widest tried"
        else:
            text += "; per seed: " + ", ".join(
                f"seed {seed} from {reached[seed]}" if seed in reached else f"seed {seed} never"
                for seed in found.per_seed
            )
    return text


def _contrast_section(report: Report, width_name: str) -> list[str]:
    key, compared = report.contrast_key or "", report.compared
    name = key.rsplit(".", 1)[-1]
    lines = [f"## `{key}` compared", "",
             f"Per point, the best {compared.label} under each `{name}` (mean [95% interval] "
             f"over converged seeds), and each against the first, paired by seed (below 0: "
             f"better than the first).", ""]  # fmt: skip
    levels = list(dict.fromkeys(v for c in report.contrasts for v in c.values))
    header = [width_name, "layout", *levels, *(f"{v} - {levels[0]}" for v in levels[1:])]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for c in report.contrasts:
        cells = [str(c.width), f"{c.layout}{', ' + c.section_name if c.section_name else ''}"]
        cells += [_estimate(c.values.get(v)) for v in levels]
        cells += [_estimate(c.differences.get(v), signed=True) for v in levels[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _floor(floor: FloorCells | None) -> str:
    if floor is None:
        return "-"
    bits = ("" if floor.bit_error_exact else ">=") + f"{floor.bit_error:.4f}"
    strings = ("" if floor.exact_match_error_exact else ">=") + f"{floor.exact_match_error:.4f}"
    return f"{bits} / {strings}"


def _mean(estimate: Estimate | None) -> str:
    return "-" if estimate is None else f"{estimate.mean:.4f}"


def _replica_text(row: dict[str, Any]) -> str:
    rate = row.get(LEARNING_RATE_KEY)
    return f"seed {row.get(SEED_KEY)}" + ("" if rate in (None, "") else f", lr {rate}")


def _methods_section(methods: list[MethodResult], width_name: str, compared: Metric) -> list[str]:
    beside = [name for name in SIDE_FIGURES if name != compared.name]
    lines = [
        "## Methods against the mt - st gap",
        "",
        "Each method is mt with the settings named; st and mt are the runs without them. Paired "
        f"by seed, on the {compared.label}: method - st, and the share of the gap closed, "
        "(mt - method) / (mt - st): 1 is as good as st, 0 no better than mt, below 0 worse than "
        "mt. Conflict: the per-task gradients on the shared parameters, mean over the run's "
        "measurements and the seeds (none for st, which shares nothing).",
        "",
        f"| {width_name} | method | seeds | {compared.label} | "
        + " | ".join(METRICS[name].label for name in beside)
        + " | floor (bit / exact-match error) | method - st | gap closed | conflicting pairs | "
        "mean cosine | norm spread |",
        "|" + " --- |" * (10 + len(beside)),
    ]
    for m in methods:
        figures = [_figure(m.conflict_fraction), _figure(m.mean_cosine, signed=True),
                   _figure(m.norm_spread)]  # fmt: skip
        floor = "0 / 0" if m.method.startswith("st") else _floor(m.floor)
        lines.append(
            f"| {m.width} | {m.method} | {m.loss.n} | {_estimate(m.loss)} | "
            + " | ".join(_mean(m.side.get(name)) for name in beside)
            + f" | {floor} | {_estimate(m.gap_to_st, signed=True)} | "
            f"{_estimate(m.gap_closed, signed=True)} | " + " | ".join(figures) + " |"
        )
    return [*lines, ""]


def _mark(unconverged: int, estimate: Estimate | None, mode: str) -> str:
    if not unconverged:
        return ""
    if mode != "mark":  # left out of the figure
        return f" {UNCONVERGED}{unconverged}"
    if estimate is None:
        return ""
    return (
        f" {UNCONVERGED}"
        if unconverged == estimate.n
        else f" {UNCONVERGED}{unconverged}/{estimate.n}"
    )


def _caveat(c: WidthComparison, mode: str) -> str:
    sides = [layout for layout in LAYOUTS if c.unconverged.get(layout)]
    if not sides:
        return ""
    if mode != "mark":
        return (f" (over converged seeds only; {UNCONVERGED} not converged, left out: "
                f"{' and '.join(sides)})")  # fmt: skip
    return f" ({UNCONVERGED} not converged: {' and '.join(sides)}; not a comparison of optima)"


def _choices_section(
    choices: list[Choice], keys: list[str], width_name: str, selected: Metric
) -> list[str]:
    names = ", ".join(f"`{key}`" for key in keys)
    if all(len(c.means) == 1 for c in choices):  # e.g. rates chosen by an earlier sweep
        lines = [
            f"## {names} per point",
            "",
            "One value per width and layout, as the sweep set it: nothing is chosen here. Its "
            f"mean best figures over the seeds below; {UNCONVERGED}: some of its runs did not "
            "converge.",
        ]
    else:
        how = (
            "chosen on the selection seeds and reported below on the other seeds"
            if all(c.held_out for c in choices)
            else "chosen and reported on the same seeds (no other seeds ran), so the figures "
            "below are a little optimistic"
        )
        edges = sum(bool(c.edges) for c in choices)
        ties = sum(c.tied_at_edge for c in choices)
        tied = (
            f"; {ties} more chose the lowest or highest value tried in a tie with the value next "
            "to it on the compared figure, so an optimum lies inside and they are not marked"
            if ties
            else ""
        )
        lines = [
            f"## {names} chosen per point",
            "",
            f"Per width and layout, the value with the lowest mean best {selected.label}, ties "
            f"broken by the loss ({how}). Each candidate's mean on the selection seeds "
            f"(`diverged`: a run of it diverged, never chosen); the chosen one's loss, bit error "
            f"and exact-match error there; {UNCONVERGED}: some of the chosen value's selection "
            f"runs did not converge; {EDGE}: the choice is the lowest or highest value tried, "
            f"so the optimum may lie beyond ({edges} of {len(choices)} points{tied}).",
        ]
    lines += [
        "",
        f"| {width_name} | layout | seeds | candidates | chosen | loss | bit error | "
        "exact-match error | mt floor |",
        "|" + " --- |" * 9,
    ]
    for c in sorted(
        choices, key=lambda c: (section_sort_key(c.section), sort_key(c.width), str(c.layout))
    ):
        candidates = ", ".join(
            f"{name}: {'diverged' if not math.isfinite(mean) else f'{mean:.4f}'}"
            for name, mean in _in_order(c)
        )
        chosen = c.text() + (f" {UNCONVERGED}" if c.unconverged else "")
        chosen += "".join(f" {EDGE}{side}" for side in c.edges.values())
        figures = " | ".join(_number(c.figures.get(name)) for name in SIDE_FIGURES)
        floor = "-" if c.layout == "st" else _floor(c.floor)
        layout = f"{c.layout}, {c.section_name}" if c.section_name else str(c.layout)
        lines.append(f"| {c.width} | {layout} | {c.seeds} | {candidates} | {chosen} | "
                     f"{figures} | {floor} |")  # fmt: skip
    return [*lines, ""]


def _in_order(choice: Choice) -> list[tuple[str, float]]:
    """Candidates in the order of their values (numbers by size)."""

    def key(item: tuple[str, float]) -> tuple:
        try:
            return (0, tuple(float(part) for part in item[0].split(", ")))
        except ValueError:
            return (1, item[0])

    return sorted(choice.means.items(), key=key)


def _number(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


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


def _most_seeds(sections: dict[Any, list[WidthComparison]]) -> int:
    return max(
        (e.n for comparisons in sections.values() for c in comparisons for e in c.value.values()),
        default=0,
    )
