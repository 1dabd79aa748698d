"""Runs of other sweep folders in this one's report: a series measured once, by another study,
shown beside this one's (the capacity law's num_bits 10 line is the optimum study's bce runs).
Not a copy: their figures are read from their own folders each time the report is written."""

from pathlib import Path
from typing import Any

from mtfilter.errors import ConfigError
from mtfilter.folders import SEED_KEY, SWEEP_FILE
from mtfilter.report._collect import collect


def include(
    keys: list[str], rows: list[dict[str, Any]], includes: list[dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """This sweep's keys and rows joined by the runs of each `{folder: ..., where: {key:
    value}}` in `includes` whose settings match `where` (a key the run does not vary is read
    from its summary's settings; `null`: not set). A key one folder varies and another does
    not is filled, for the other's rows, from their summaries; keys left with one value are
    dropped. A folder whose sweep has not run yet adds nothing (see `not_swept`)."""
    if not includes:
        return keys, rows
    folders: list[tuple[list[str], list[dict[str, Any]]]] = [(keys, rows)]
    for spec in includes:
        check_include(spec)
        if not_swept([spec]):
            continue
        other_keys, other_rows = collect(Path(spec["folder"]))
        where = spec.get("where") or {}
        for row in other_rows:
            _fill(row, [k for k in where if k not in other_keys])
        kept = [r for r in other_rows if all(r.get(k) == v for k, v in where.items())]
        folders.append((other_keys, kept))
    every_key = list(dict.fromkeys(k for folder_keys, _ in folders for k in folder_keys))
    if SEED_KEY in every_key:  # last, as in every sweep's own keys
        every_key = [k for k in every_key if k != SEED_KEY] + [SEED_KEY]
    joined = []
    for folder_keys, folder_rows in folders:
        for row in folder_rows:
            _fill(row, [k for k in every_key if k not in folder_keys])
            joined.append(row)
    varied = [k for k in every_key if len({repr(r[k]) for r in joined if k in r}) > 1]
    return varied, joined


def check_include(spec: Any) -> None:
    if not isinstance(spec, dict) or set(spec) - {"folder", "where"} or "folder" not in spec:
        raise ConfigError(
            f"report include entries are {{folder: PATH, where: {{KEY: VALUE}}}}, got {spec!r}"
        )


def not_swept(includes: list[dict[str, Any]]) -> list[str]:
    """The include folders with no sweep in them yet (no sweep.json). Their study may simply
    not have run yet, or be running beside this one: the report leaves them out and says so,
    rather than failing after hours of training (the capacity law reads the optimum study's)."""
    return [str(spec["folder"]) for spec in includes
            if not (Path(spec["folder"]) / SWEEP_FILE).is_file()]  # fmt: skip


def _fill(row: dict[str, Any], keys: list[str]) -> None:
    """Set `keys` the row's own sweep does not vary from the run's recorded settings (none
    for a run that has not written its summary yet: unknown, not unset)."""
    hparams = row.get("hparams") or {}
    if not hparams:
        return
    for key in keys:
        if key in row:
            continue
        section, _, name = key.partition(".")
        node: Any = hparams.get(section) or {}
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        row[key] = node
