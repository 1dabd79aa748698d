"""mtfilter: multitask vs singletask learning under limited capacity, on random bit mappings.

The public names are imported on first use (PEP 562), so that `mtfilter report` and
`mtfilter --help` start without loading Lightning and torch.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtfilter.callbacks import (
        BestEpochCheckpoint,
        ConvergenceStop,
        EpochProgressBar,
        RunSummary,
        StopOnInterrupt,
    )
    from mtfilter.data import BitMappingDataModule, fingerprint, make_targets
    from mtfilter.errors import (
        CheckpointMismatchError,
        ConfigError,
        MtfilterError,
        NonFiniteLossError,
    )
    from mtfilter.layers import GroupedEmbedding, GroupedLinear
    from mtfilter.losses import per_bit_loss
    from mtfilter.model import BitMLP
    from mtfilter.module import BitMappingModule

# public name -> the module that defines it
_SOURCES = {
    "BestEpochCheckpoint": "mtfilter.callbacks",
    "ConvergenceStop": "mtfilter.callbacks",
    "EpochProgressBar": "mtfilter.callbacks",
    "RunSummary": "mtfilter.callbacks",
    "StopOnInterrupt": "mtfilter.callbacks",
    "BitMappingDataModule": "mtfilter.data",
    "fingerprint": "mtfilter.data",
    "make_targets": "mtfilter.data",
    "CheckpointMismatchError": "mtfilter.errors",
    "ConfigError": "mtfilter.errors",
    "MtfilterError": "mtfilter.errors",
    "NonFiniteLossError": "mtfilter.errors",
    "GroupedEmbedding": "mtfilter.layers",
    "GroupedLinear": "mtfilter.layers",
    "BitMLP": "mtfilter.model",
    "BitMappingModule": "mtfilter.module",
    "per_bit_loss": "mtfilter.losses",
}

__all__ = [
    "BestEpochCheckpoint",
    "BitMLP",
    "BitMappingDataModule",
    "BitMappingModule",
    "CheckpointMismatchError",
    "ConfigError",
    "ConvergenceStop",
    "EpochProgressBar",
    "GroupedEmbedding",
    "GroupedLinear",
    "MtfilterError",
    "NonFiniteLossError",
    "RunSummary",
    "StopOnInterrupt",
    "fingerprint",
    "make_targets",
    "per_bit_loss",
]


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'mtfilter' has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES])
