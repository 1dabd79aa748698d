"""The sweep's figures (PNG, matplotlib): the compared figure and the mt - st gap against width
and against parameter count, with seed bands; bit error and exact-match error against width
with the representational floor; and curves read back from TensorBoard."""

from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure  # the object API: no pyplot, no global backend to set
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtfilter.folders import replacing
from mtfilter.report._methods import MethodResult
from mtfilter.report._metric import METRICS, Metric
from mtfilter.report._stats import LAYOUTS, Estimate, Report, WidthComparison, section_keys

COLORS = {"st": "tab:blue", "mt": "tab:orange"}


def plot_all(report: Report) -> list[Path]:
    """Write every figure into the report's folder; returns their paths."""
    folder, sections, rows, compared = report.folder, report.sections, report.rows, report.compared
    width_name, layout_key, width_key = report.width_name, report.layout_key, report.width_key
    methods = report.methods
    stem = "loss" if compared.is_loss else compared.name
    numeric = {  # named by their settings: the legend's labels
        report.section_name(section): [c for c in comps if isinstance(c.width, int | float)]
        for section, comps in sections.items()
    }
    numeric = {name: comps for name, comps in numeric.items() if comps}
    written = []
    if numeric:
        written.append(_loss(folder / f"{stem}_vs_width.png", numeric, compared, width_name,
                             "width"))  # fmt: skip
        written.append(_loss(folder / f"{stem}_vs_parameters.png", numeric, compared, width_name,
                             "parameters"))  # fmt: skip
        if any(c.gap for comps in numeric.values() for c in comps):
            scale = _width_scale(report, numeric)
            per = report.width_per.rsplit(".", 1)[-1] if report.width_per else None
            written.append(_gap(folder / "gap_vs_width.png", numeric, compared, width_name,
                                scale, per))  # fmt: skip
        if any(c.side.get(layout, {}).get("bit_error") for comps in numeric.values()
               for c in comps for layout in LAYOUTS):  # fmt: skip
            written.append(_errors(folder / "errors_vs_width.png", numeric, width_name))
    curves = _curves(folder / "curves.png", rows, compared, layout_key, width_key)
    if curves:
        written.append(curves)
    numeric_methods = [m for m in methods or [] if isinstance(m.width, int | float)]
    if numeric_methods:
        written.append(_methods(folder / "methods_vs_width.png", numeric_methods, compared,
                                width_name))  # fmt: skip
        if any(m.conflict_fraction is not None for m in numeric_methods):
            written.append(_conflict(folder / "conflict_vs_width.png", numeric_methods,
                                     width_name))  # fmt: skip
    return written


def _by_method(results: list[MethodResult]) -> dict[str, list[MethodResult]]:
    grouped: dict[str, list[MethodResult]] = {}
    for result in results:
        grouped.setdefault(result.method, []).append(result)
    return grouped


def _method_styles(methods: list[str]) -> dict[str, dict[str, Any]]:
    """Each method's line: the baselines in their colours, thick, one section style per setting
    ("mt (loss=bce)", "mt (loss=l1)": mt twice, told apart by dashes and markers); every other
    method its own colour, thin and dashed."""
    styles: dict[str, dict[str, Any]] = {}
    settings_seen: dict[str, int] = {}  # baseline -> how many of its settings came before
    for index, method in enumerate(methods):
        baseline = method.split(" (", 1)[0]  # "st (loss=bce)": st within one setting
        if baseline in COLORS:  # the two baselines stand out
            nth = settings_seen[baseline] = settings_seen.get(baseline, -1) + 1
            styles[method] = {"color": COLORS[baseline], "linewidth": 2.5, **_section_style(nth)}
        else:  # tab20 without its first four (st's and mt's blue and orange, and light shades)
            color = colormaps["tab20"](4 + index % 16)
            styles[method] = {"color": color, "linewidth": 1.2, "marker": ".", "linestyle": "--"}
    return styles


def _section_style(index: int) -> dict[str, Any]:
    """The base section solid with circles; each other one its own dashes and marker."""
    markers, dashes = "o^sDvP", ["-", "--", ":", "-."]
    return {"marker": markers[index % len(markers)], "linestyle": dashes[index % len(dashes)]}


def _methods(path: Path, results: list[MethodResult], compared: Metric, width_name: str) -> Path:
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    grouped = _by_method(results)
    styles = _method_styles(list(grouped))
    for method, points in grouped.items():
        ax.plot([p.width for p in points], [p.loss.mean for p in points], label=method,
                **styles[method])  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"{width_name} (log2)")
    ax.set_ylabel(f"best {compared.label} (mean over seeds)")
    ax.set_title("st, mt and mt with each method")
    return _save(fig, ax, path, legend={"fontsize": 7, "ncol": 2})


def _conflict(path: Path, results: list[MethodResult], width_name: str) -> Path:
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    grouped = _by_method(results)
    styles = _method_styles(list(grouped))
    for method, points in grouped.items():
        points = [p for p in points if p.conflict_fraction is not None]
        if not points:
            continue
        widths = [p.width for p in points]
        style = styles[method]
        axes[0].plot(widths, [p.conflict_fraction for p in points], label=method, **style)
        axes[1].plot(widths, [p.mean_cosine for p in points], label=method, **style)
    for ax, label in zip(axes, ("conflicting task pairs (cosine < 0)", "mean pairwise cosine"),
                         strict=True):  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"{width_name} (log2)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle("per-task gradients on the shared parameters, mean over training and seeds")
    return _save(fig, axes[0], path, legend={"fontsize": 7})


BAND_TEXT = " (band: 95% CI)"  # said only where a band is drawn: from 3 seeds on


def _loss(
    path: Path, sections: dict[str, list[WidthComparison]], compared: Metric, width_name: str,
    x_axis: str,
) -> Path:  # fmt: skip
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    banded = False
    for index, (name, comps) in enumerate(sections.items()):
        for layout in LAYOUTS:
            points = [c for c in comps if layout in c.value]
            if not points:
                continue
            xs = [c.width if x_axis == "width" else c.parameters[layout] for c in points]
            means = [c.value[layout].mean for c in points]
            ax.plot(xs, means, color=COLORS[layout], label=f"{layout} {name}".strip(),
                    **_section_style(index))  # fmt: skip
            band = _band([c.value[layout] for c in points])
            if band is not None:
                ax.fill_between(xs, *band, color=COLORS[layout], alpha=0.2)
                banded = True
    if x_axis == "width":
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"{width_name} (log2)")
    else:
        ax.set_xscale("log")
        ax.set_xlabel("parameters of one model (st: all its towers)")
    if compared.floor_name is not None and x_axis == "width":
        _floor_line(ax, sections, compared.floor_name)
    ax.set_ylabel(f"best {compared.label}")
    ax.set_title(f"best {compared.label}, mean over seeds{BAND_TEXT * banded}")
    return _save(fig, ax, path)


def _errors(path: Path, sections: dict[str, list[WidthComparison]], width_name: str) -> Path:
    """Bit error and exact-match error (each its own best over epochs) against width, with the
    floor of mt's last hidden layer: what no weights can beat."""
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    banded = False
    for ax, name in zip(axes, ("bit_error", "exact_match_error"), strict=True):
        for index, (section, comps) in enumerate(sections.items()):
            for layout in LAYOUTS:
                points = [c for c in comps if c.side.get(layout, {}).get(name)]
                if not points:
                    continue
                xs = [c.width for c in points]
                estimates = [c.side[layout][name] for c in points]
                ax.plot(xs, [e.mean for e in estimates], color=COLORS[layout],
                        label=f"{layout} {section}".strip(), **_section_style(index))  # fmt: skip
                band = _band(estimates)
                if band is not None:
                    ax.fill_between(xs, *band, color=COLORS[layout], alpha=0.2)
                    banded = True
        _floor_line(ax, sections, name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"{width_name} (log2)")
        ax.set_ylabel(f"best {METRICS[name].label}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"errors at each run's best, mean over converged seeds{BAND_TEXT * banded}")
    return _save(fig, axes[0], path)


def _floor_line(ax: Any, sections: dict[str, list[WidthComparison]], name: str) -> None:
    """mt's representational floor of the figure `name` against width (st's is 0)."""
    floors = {c.width: c.floor["mt"] for comps in sections.values() for c in comps
              if "mt" in c.floor}  # fmt: skip
    if not floors:
        return
    widths = sorted(floors)
    values = [getattr(floors[w], name) for w in widths]
    ax.plot(widths, values, color="black", linestyle=":", marker=".",
            label="mt floor (no weights do better)")  # fmt: skip


def _width_scale(report: Report, sections: dict[str, list[WidthComparison]]) -> dict[str, float]:
    """Per section, what its widths are divided by on the gap plot's x axis: the value of
    `report.width_per` in that section (e.g. `data.num_bits`), else 1."""
    if report.width_per is None:
        return {name: 1.0 for name in sections}
    others = section_keys(report.keys, report.width_key, report.layout_key)
    if report.width_per not in others:
        return {name: 1.0 for name in sections}
    index = others.index(report.width_per)
    return {report.section_name(section): float(section[index])
            for section in report.sections if report.section_name(section) in sections}  # fmt: skip


def _gap(
    path: Path, sections: dict[str, list[WidthComparison]], compared: Metric, width_name: str,
    scale: dict[str, float], per: str | None = None,
) -> Path:  # fmt: skip
    """mt - st against width (or width over `scale`'s key); for an error, each section's mt
    floor too (st's is 0), in its colour."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    floors: dict[tuple, list[tuple[str, Any]]] = {}  # one line per distinct floor: its sections
    for index, (name, comps) in enumerate(sections.items()):
        divisor = scale.get(name, 1.0)
        xs = [c.width / divisor for c in comps if c.gap is not None]
        gaps = [c.gap for c in comps if c.gap is not None]
        (line,) = ax.plot(xs, [g.mean for g in gaps], label=f"mt - st {name}".strip(),
                          **_section_style(index))  # fmt: skip
        band = _band(gaps)
        if band is not None:
            ax.fill_between(xs, *band, alpha=0.2, color=line.get_color())
        floor_name = compared.floor_name
        floor = tuple((c.width / divisor, getattr(c.floor["mt"], floor_name)) for c in comps
                      if floor_name is not None and "mt" in c.floor)  # fmt: skip
        if floor:
            floors.setdefault(floor, []).append((name, line.get_color()))
    for floor, owners in floors.items():
        shared = len(owners) > 1  # e.g. two losses on one model: one floor, drawn once
        label = "mt floor" if shared else f"mt floor {owners[0][0]}".strip()
        ax.plot(*zip(*floor, strict=True), color="black" if shared else owners[0][1],
                linestyle=":", linewidth=1, label=label)  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"{width_name} / {per} (log2)" if per else f"{width_name} (log2)")
    ax.set_ylabel(f"mt - st, best {compared.label}")
    ax.set_title("multitask minus singletask (above 0: mt is worse)")
    return _save(fig, ax, path)


def _curves(
    path: Path, rows: list[dict[str, Any]], compared: Metric, layout_key: str, width_key: str
) -> Path | None:
    """Loss curves of the smallest and largest width of each layout (first seed), as logged."""
    chosen = _chosen_runs(rows, layout_key, width_key)
    if not chosen:
        return None
    smallest = min(row[width_key] for row in chosen)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for row in chosen:
        accumulator = EventAccumulator(row["log_dir"], size_guidance={"scalars": 0})
        accumulator.Reload()
        tag = compared.curve_tag
        if tag not in accumulator.Tags()["scalars"]:
            continue
        events = accumulator.Scalars(tag)
        layout = str(row.get(layout_key))
        style = "-" if row.get(width_key) == smallest else "--"
        label = f"{layout}, {width_key.rsplit('.', 1)[-1]} {row.get(width_key)}"
        ax.plot([e.step for e in events], [e.value for e in events], style,
                color=COLORS.get(layout), label=label)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(compared.curve_tag if compared.value_column else compared.label)
    if compared.is_loss:
        ax.set_yscale("log")
    else:  # errors reach 0 exactly
        ax.set_yscale("symlog", linthresh=1e-3)
    shown = compared.curve_tag if compared.value_column else compared.label
    ax.set_title(f"{shown} curves (first seed), from the TensorBoard logs")
    return _save(fig, ax, path)


def _band(estimates: list[Estimate]) -> tuple[list[float], list[float]] | None:
    """The 95% band of a line of estimates, or None where one has no interval."""
    lows, highs = [e.low for e in estimates], [e.high for e in estimates]
    if any(v is None for v in lows + highs):
        return None
    return [float(v) for v in lows if v is not None], [float(v) for v in highs if v is not None]


def _chosen_runs(rows: list[dict[str, Any]], layout_key: str, width_key: str) -> list[dict]:
    done = [r for r in rows if r.get("status") == "completed"]
    widths = sorted({r[width_key] for r in done if isinstance(r.get(width_key), int | float)})
    if not widths:
        return []
    chosen = []
    for width in dict.fromkeys([widths[0], widths[-1]]):
        for layout in LAYOUTS:
            matches = [r for r in done if r.get(width_key) == width and r.get(layout_key) == layout]
            if matches:
                chosen.append(min(matches, key=lambda r: str(r.get("seed_everything"))))
    return chosen


def _save(fig: Any, ax: Any, path: Path, legend: dict[str, Any] | None = None) -> Path:
    """Grid, legend (when something is labelled), and the PNG."""
    ax.grid(alpha=0.3)
    labels = ax.get_legend_handles_labels()[1]
    if len(labels) > 4 and legend is None:  # many series (a capacity law): beside, not over them
        legend = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "fontsize": "small"}
    fig.tight_layout()  # before the legend: one outside the axes must not shrink them
    if labels:  # e.g. runs without TensorBoard logs draw nothing
        ax.legend(**(legend or {}))
    with replacing(path) as temporary:  # the whole legend, where it lies outside
        fig.savefig(temporary, dpi=120, bbox_inches="tight")
    return path
