"""`mtfilter sweep`: a grid of fit runs under one folder, resumable, crash-safe, in parallel
locally or as a SLURM job array, optionally selecting a setting per point then confirming it on
held-out seeds, with its report written at the end.

The entry point is `_sweep.py`; the grid's runs `_grid.py`, their resolution and checks
`_plan.py` and `_preflight.py`; the protocol `_protocol.py` and its loop
`_select_then_confirm.py`; running them `_runner.py` (here: `_local.py`, on a cluster:
`_submitit.py`, `_cluster_job.py`; one fit: `_execute.py`) and each run folder's state
`_state.py`; what sweep.json records `_definition.py`.
"""

from mtfilter.sweep._plan import plan
from mtfilter.sweep._protocol import Selection
from mtfilter.sweep._submitit import SubmititOptions
from mtfilter.sweep._sweep import sweep

__all__ = ["Selection", "SubmititOptions", "plan", "sweep"]
