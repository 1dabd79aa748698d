"""Each run's fit configuration resolved and checked by the fit's own machinery before any run
starts (`PreflightCLI`: no Trainer, the model on the `meta` device), memoised per process."""

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

# preflight's results in this process, by base file (its path and bytes), settings and grid keys:
# each wave of a select-then-confirm sweep plans the earlier waves' runs again, and a PreflightCLI
# costs 0.5-1 s on a 2-core CPU (hundreds per start of the optimum study, unmemoised)
_PREFLIGHTS: dict[str, tuple[str, Any, int, int]] = {}


def preflight(
    base: Path, settings: dict[str, Any], grid: list[str] | tuple[str, ...] = ()
) -> tuple[str, Any, int, int]:
    """Everything `mtfilter fit --config BASE --key value ...` would build, checked without
    building it (`PreflightCLI`: the fit's own parser, links and constructors, the model on the
    `meta` device). Returns the resolved configuration as YAML, its parsed form (shared between
    calls with the same arguments: read it, never change it), and one replica's parameter counts
    outside the input tables and in them. A bad key or value fails here, named with whether it
    came from the sweep's `grid` (keys in `grid`), its `settings` or the base config."""
    key = json.dumps(
        [str(Path(base).resolve()), hashlib.sha256(Path(base).read_bytes()).hexdigest(),
         settings, sorted(grid)], sort_keys=True, default=str,
    )  # fmt: skip
    if key not in _PREFLIGHTS:
        _PREFLIGHTS[key] = _preflight(base, settings, grid)
    return _PREFLIGHTS[key]


def _preflight(
    base: Path, settings: dict[str, Any], grid: list[str] | tuple[str, ...]
) -> tuple[str, Any, int, int]:
    from mtfilter.train.preflight import PreflightCLI  # Lightning: only when planning

    def origin(key: str) -> str:
        if key in grid:
            return "in the sweep's grid"
        return "in the sweep's settings" if key in settings else f"in base config {base}"

    args = ["--config", str(base)]
    for key, value in settings.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = PreflightCLI(args, origin=origin)
    replicas = len(cli.model.seeds)
    embedding = cli.model.net.embedding
    tables = 0 if embedding is None else embedding.weight.numel() // replicas
    counts = cli.model.parameter_counts()
    return cli.resolved(), cli.config, counts["total"] - tables, tables
