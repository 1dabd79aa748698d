"""The settings of one varied key compared point by point, paired by seed: e.g. `model.loss`,
which loss gives each layout the better optimum at each width."""

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from mtfilter.folders import SEED_KEY
from mtfilter.report._metric import METRICS
from mtfilter.report._stats import (
    Estimate,
    converged,
    hashable,
    section_keys,
    section_sort_key,
    sort_key,
)


@dataclass
class Contrast:
    """One (section, width, layout): each value of the key, and each against the first."""

    section: tuple  # the other keys' values
    section_name: str  # those that are set, e.g. `aggregator=UPGrad`; "" for none
    width: Any
    layout: Any
    values: dict[str, Estimate]  # the key's value (text) -> best figure over seeds
    differences: dict[str, Estimate]  # a later value -> it minus the first, paired by seed


def contrast(
    rows: list[dict[str, Any]], keys: list[str], metric: str, key: str, width_key: str,
    layout_key: str, unconverged: str = "exclude",
) -> list[Contrast]:  # fmt: skip
    """Per point, the best `metric` under each value of `key` (in sorted order), and each
    value minus the first, over the seeds both have. Runs that did not
    converge are left out unless `unconverged="mark"`."""
    compared = METRICS[metric]
    others = section_keys(keys, width_key, layout_key, key)
    # point -> key value -> seed -> figure
    table: dict[tuple, dict[Any, dict[Any, float]]] = defaultdict(lambda: defaultdict(dict))
    order: dict[Any, None] = {}
    for row in rows:
        if not compared.measured(row):
            continue
        if unconverged == "exclude" and not converged(row, metric):
            continue
        point = (tuple(hashable(row.get(k)) for k in others), row.get(width_key),
                 row.get(layout_key))  # fmt: skip
        value = hashable(row.get(key))
        order[value] = None
        table[point][value][row.get(SEED_KEY)] = float(compared.best(row))
    result = []
    for point in sorted(table, key=lambda p: (section_sort_key(p[0]), sort_key(p[1]), str(p[2]))):
        by_value = table[point]
        levels = sorted((v for v in order if v in by_value), key=sort_key)
        first = levels[0]
        differences = {}
        for later in levels[1:]:
            common = [s for s in by_value[later] if s in by_value[first]]
            if common:
                differences[str(later)] = Estimate.of(
                    [by_value[later][s] - by_value[first][s] for s in common]
                )
        result.append(
            Contrast(
                section=point[0],
                section_name=", ".join(
                    f"{k.rsplit('.', 1)[-1]}={v}"
                    for k, v in zip(others, point[0], strict=True)
                    if v is not None
                ),  # fmt: skip
                width=point[1],
                layout=point[2],
                values={
                    str(v): Estimate.of(list(by_value[v].values()), nonnegative=True)
                    for v in levels
                },  # fmt: skip
                differences=differences,
            )
        )
    return result
