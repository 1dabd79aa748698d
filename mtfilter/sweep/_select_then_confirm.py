"""The select-then-confirm loop: the selection runs, a wave past every edge pick until none moves,
then each pick on the held-out seeds (what to run at each step is `Protocol`'s)."""

from pathlib import Path
from typing import Any

from mtfilter.sweep._grid import Run
from mtfilter.sweep._plan import plan, plan_waves
from mtfilter.sweep._protocol import CONFIRMATION, Protocol, picks_by_point
from mtfilter.sweep._runner import Execution


def select_then_confirm(
    protocol: Protocol, execution: Execution, runs: list[Run], definition: dict[str, Any],
    base: Path, settings: dict[str, Any], device: str, stacking: dict[str, Any],
) -> bool:  # fmt: skip
    """Selection runs, extended past edge picks until none moves, then the held-out runs."""
    from mtfilter.report import pick  # matplotlib-free: the report's own choice

    while True:
        if not execution.run(runs, definition):
            return False
        choices = pick(execution.folder, execution.names)  # the waves so far: a replay
        added = protocol.extend(choices)
        if not added:
            break
        print("extending past edge picks: " + "; ".join(added), flush=True)
        runs = plan_waves(protocol.selection_grid(), base, settings, device, stacking)
    held_out = protocol.confirmation_grid(picks_by_point(choices, protocol.keys))
    if not held_out:
        return True
    print(f"confirming {len(held_out)} picks on seeds {protocol.selection.seeds}", flush=True)
    return execution.run(plan(base, held_out, settings, device=device, prefix=CONFIRMATION,
                              **stacking), definition)  # fmt: skip
