"""A sweep's answer against another results.csv of the same study (a committed one, say), point
by point: the picks, each layout's figure, mt - st and what its interval says, the transition
width, the contrast of a key (the loss) and the methods; what moved is named. This is how a
change that should not move the answer (a faster step, a stopping rule) is checked. Below the
answer, run by run: each run both files have (the same point, phase, seed and rate) and how its
best figure moved, which holds for a study regenerated only part of the way."""

import csv
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mtfilter.errors import ConfigError
from mtfilter.folders import LEARNING_RATE_KEY, SEED_KEY, replacing, short_value
from mtfilter.report._stats import Estimate, Report, WidthComparison, section_keys, transition


def read_results(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """A results.csv back into the report's varied keys and typed rows (numbers, booleans,
    JSON settings, None for empty cells)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            names = list(reader.fieldnames or [])
            if "run" not in names or "status" not in names:
                raise ConfigError(
                    f"against: {path} is not an mtfilter results.csv (no run and status columns)"
                )
            rows = [{k: _value(v) for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"against: cannot read {path} ({error})") from None
    if any(None in row for row in rows):  # DictReader's key for cells past the header
        raise ConfigError(f"against: {path} has rows longer than its header")
    return names[names.index("run") + 1 : names.index("status")], rows


def _value(text: Any) -> Any:
    if not isinstance(text, str):  # cells past the header (a list): refused by the caller
        return text
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    if text[0] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def reading(gap: Estimate | None) -> str:
    """What mt - st's interval says: `>0` excludes 0 above (mt worse), `<0` below, `~0`
    covers it; with fewer seeds than an interval needs, the mean's sign with a `?`."""
    if gap is None:
        return "-"
    if gap.low is None or gap.high is None:
        return ">0?" if gap.mean > 0 else "<0?" if gap.mean < 0 else "~0?"
    return ">0" if gap.low > 0 else "<0" if gap.high < 0 else "~0"


def write_against(path: Path, old: Report, new: Report, old_source: Path) -> tuple[Path, str]:
    """against.md: `new` (this folder's report) against `old` (the report of `old_source`),
    over the points both have. Returns the path and a one-line summary."""
    lines = [
        f"# Against {old_source}",
        "",
        f"This folder's results (new) against {old_source} (old), on the points both have, "
        f"compared on {new.compared.label}. Readings of mt - st: `>0` its 95% interval lies "
        "above 0 (mt worse), `~0` covers 0, `<0` lies below; `?`: too few seeds for an "
        "interval (shown, not counted). `moved` marks a pick, reading or transition that differs.",
        "",
    ]
    counts: dict[str, list[int]] = {}  # kind -> [same, compared]

    def tally(kind: str, same: bool | None) -> str:
        if same is None:  # a reading without an interval: shown, not counted
            return "too few seeds"
        entry = counts.setdefault(kind, [0, 0])
        entry[0] += same
        entry[1] += 1
        return "" if same else "moved"

    lines += _section("Picks", ["point", "old", "new", ""], _picks(old, new, tally))
    lines += _section(
        "Widths",
        ["section", new.width_name, "layout", "old", "new", "mt - st old", "mt - st new", ""],
        _widths(old, new, tally),
    )
    lines += _section("Transition", ["section", "old", "new", ""], _transitions(old, new, tally))
    lines += _section(
        "Contrast", ["point", "difference", "old", "new", ""], _contrasts(old, new, tally)
    )
    lines += _section(
        "Methods",
        ["method", new.width_name, "old", "new", "vs st old", "vs st new", ""],
        _methods(old, new, tally),
    )
    lines += _section(
        f"Runs in both, by how far their best {new.compared.label} moved (the {MOST_MOVED} most)",
        ["run", "seed", "lr", "old", "new", "epochs old", "epochs new"],
        _runs(old, new, tally),
    )
    summary = "; ".join(f"{kind}: {same} of {n} the same" for kind, (same, n) in counts.items())
    lines[4:4] = [f"**{summary or 'no point in both'}**", ""]
    with replacing(path) as temporary:
        temporary.write_text("\n".join(lines) + "\n")
    return path, summary or "no point in both"


Tally = Callable[[str, bool | None], str]
MOST_MOVED = 12  # rows of the runs table; the tally counts every run


def _same_reading(then: str, now: str) -> bool | None:
    """Whether two readings agree; None where either has too few seeds for an interval."""
    return None if then.endswith("?") or now.endswith("?") else then == now


def _section(title: str, header: list[str], rows: Iterable[list[str]]) -> list[str]:
    body = [f"| {' | '.join(row)} |" for row in rows]
    if not body:
        return []
    return [
        f"## {title}",
        "",
        f"| {' | '.join(header)} |",
        f"| {' | '.join('---' for _ in header)} |",
        *body,
        "",
    ]


def _picks(old: Report, new: Report, tally: Tally) -> Iterable[list[str]]:
    def name(choice: Any) -> str:
        point = choice.point
        others = [(k, v) for k, v in point.items() if k not in (new.width_key, new.layout_key)]
        return _point(_name(others), choice.width, choice.layout)

    before = {name(c): c.text() for c in old.choices}
    for choice in new.choices:
        point = name(choice)
        if point in before:
            now = choice.text()
            yield [point, before[point], now, tally("picks", before[point] == now)]


def _widths(old: Report, new: Report, tally: Tally) -> Iterable[list[str]]:
    previous = _sections(old)
    for name, comparisons in _sections(new).items():
        before = {c.width: c for c in previous.get(name, [])}
        for comparison in comparisons:
            was = before.get(comparison.width)
            if was is None:
                continue
            for layout, value in comparison.value.items():
                if layout in was.value:
                    yield [
                        name,
                        str(comparison.width),
                        str(layout),
                        _figure(was.value[layout]),
                        _figure(value),
                        "",
                        "",
                        "",
                    ]
            if comparison.gap is not None and was.gap is not None:
                then, now = reading(was.gap), reading(comparison.gap)
                yield [
                    name,
                    str(comparison.width),
                    "mt - st",
                    "",
                    "",
                    f"{was.gap.mean:+.4f} {then}",
                    f"{comparison.gap.mean:+.4f} {now}",
                    tally("mt - st readings", _same_reading(then, now)),
                ]


def _transitions(old: Report, new: Report, tally: Tally) -> Iterable[list[str]]:
    previous = _sections(old)
    for name, comparisons in _sections(new).items():
        if name not in previous:
            continue
        widths = {c.width for c in comparisons} & {c.width for c in previous[name]}
        then = transition([c for c in previous[name] if c.width in widths])
        now = transition([c for c in comparisons if c.width in widths])
        if then is None or now is None:
            continue
        was, is_ = _width(then.width), _width(now.width)
        yield [name, was, is_, tally("transitions", was == is_)]


def _contrasts(old: Report, new: Report, tally: Tally) -> Iterable[list[str]]:
    def name(report: Report, contrast: Any) -> str:
        contrasted = report.contrast_key or ""
        keys = section_keys(report.keys, report.width_key, report.layout_key, contrasted)
        return _point(
            _name(zip(keys, contrast.section, strict=True)), contrast.width, contrast.layout
        )

    before = {name(old, c): c for c in old.contrasts}
    for contrast in new.contrasts:
        point = name(new, contrast)
        was = before.get(point)
        if was is None:
            continue
        for value, difference in contrast.differences.items():
            if value in was.differences:
                then, now = reading(was.differences[value]), reading(difference)
                yield [
                    point,
                    value,
                    f"{was.differences[value].mean:+.4f} {then}",
                    f"{difference.mean:+.4f} {now}",
                    tally("contrasts", _same_reading(then, now)),
                ]


def _methods(old: Report, new: Report, tally: Tally) -> Iterable[list[str]]:
    before = {(m.method, m.width): m for m in old.methods}
    for result in new.methods:
        was = before.get((result.method, result.width))
        if was is None or was.gap_to_st is None or result.gap_to_st is None:
            continue  # st itself, or a point without st on one side
        then, now = reading(was.gap_to_st), reading(result.gap_to_st)
        yield [
            result.method,
            str(result.width),
            _figure(was.loss),
            _figure(result.loss),
            then,
            now,
            tally("methods against st", _same_reading(then, now)),
        ]


def _point(section: str, width: Any, layout: Any) -> str:
    return ", ".join(
        p for p in (section if section != "-" else "", f"{layout} {short_value(width)}") if p
    )


def _name(pairs: Iterable[tuple[str, Any]]) -> str:
    """A section's name from its keys and values (`aggregator=UPGrad, loss=bce`), sorted: the
    same whatever order the two sweeps list their keys in; JSON text (a setting as a section
    key) shown short."""
    parts = []
    for key, value in pairs:
        value = _parsed(value)
        if value is not None:
            parts.append(f"{key.rsplit('.', 1)[-1]}={short_value(value)}")
    return ", ".join(sorted(parts)) or "-"


def _sections(report: Report) -> dict[str, list[WidthComparison]]:
    """The report's sections by name (`loss=bce`, ...): the key order of each sweep may differ."""
    keys = section_keys(report.keys, report.width_key, report.layout_key)
    return {_name(zip(keys, s, strict=True)): c for s, c in report.sections.items()}


def _figure(estimate: Estimate) -> str:
    return f"{estimate.mean:.4f}"


def _width(width: Any) -> str:
    return "none" if width is None else str(width)


def _runs(old: Report, new: Report, tally: Tally) -> Iterable[list[str]]:
    """The runs both reports have (the same phase, point, seed and rate), each tallied on
    whether its best figure is the same to 1e-9 (errors are counts over the dataset: a move is
    at least one bit); those that moved most shown first."""
    keys = [*new.keys, *(new.select_key or []), SEED_KEY, LEARNING_RATE_KEY]
    before = {_run_key(row, keys): row for row in old.every_row if old.compared.measured(row)}
    moved = []
    for row in new.every_row:
        was = before.get(_run_key(row, keys))
        if was is None or not new.compared.measured(row):
            continue
        then, now = old.compared.best(was), new.compared.best(row)
        tally("runs", abs(now - then) <= 1e-9)
        moved.append((abs(now - then), was, row))
    moved.sort(key=lambda entry: -entry[0])
    for distance, was, row in moved[:MOST_MOVED]:
        if distance <= 1e-9:
            break
        yield [
            str(row["run"]), str(row.get(SEED_KEY)), _optional(row.get(LEARNING_RATE_KEY)),
            f"{old.compared.best(was):.4f}", f"{new.compared.best(row):.4f}",
            str(was.get("epochs")), str(row.get("epochs")),
        ]  # fmt: skip


def _run_key(row: dict[str, Any], keys: list[str]) -> tuple:
    """A run's identity across two results files: its phase (`selection`, `confirmation`)
    and its settings, JSON text and mappings alike."""
    run = str(row.get("run", ""))
    phase = run.split("/", 1)[0] if "/" in run else ""
    values = [(key, _parsed(row.get(key))) for key in dict.fromkeys(keys)]
    return (phase, *((key, None if v is None else short_value(v)) for key, v in values))


def _parsed(value: Any) -> Any:
    """A setting as results.csv's JSON text holds it (`{"class_path": ...}`), as a mapping or
    list again; any other value as it is."""
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


def _optional(value: Any) -> str:
    return "-" if value is None else short_value(value)
