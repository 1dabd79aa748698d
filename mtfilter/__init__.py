"""mtfilter: multitask vs singletask learning under limited capacity, on random bit mappings.

The public names are imported on first use (PEP 562), so that `mtfilter report` and
`mtfilter --help` start without loading Lightning and torch.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtfilter.errors import (
        CheckpointMismatchError,
        ConfigError,
        MtfilterError,
        NonFiniteLossError,
    )
    from mtfilter.nn.config import BitMLPConfig
    from mtfilter.nn.layers import GroupedEmbedding, GroupedLinear
    from mtfilter.nn.losses import per_bit_loss
    from mtfilter.nn.model import BitMLP
    from mtfilter.nn.targets import fingerprint, make_targets
    from mtfilter.train.callbacks import (
        BestEpochCheckpoint,
        ConvergenceSchedule,
        EpochProgressBar,
        RunSummary,
        StopOnInterrupt,
        fit_callbacks,
    )
    from mtfilter.train.data import BitMappingDataModule
    from mtfilter.train.module import BitMappingModule
    from mtfilter.train.multilabel_data import MultiLabelDataModule

# public name -> the module that defines it
_SOURCES = {
    "BestEpochCheckpoint": "mtfilter.train.callbacks",
    "ConvergenceSchedule": "mtfilter.train.callbacks",
    "EpochProgressBar": "mtfilter.train.callbacks",
    "RunSummary": "mtfilter.train.callbacks",
    "StopOnInterrupt": "mtfilter.train.callbacks",
    "fit_callbacks": "mtfilter.train.callbacks",
    "BitMappingDataModule": "mtfilter.train.data",
    "fingerprint": "mtfilter.nn.targets",
    "make_targets": "mtfilter.nn.targets",
    "CheckpointMismatchError": "mtfilter.errors",
    "ConfigError": "mtfilter.errors",
    "MtfilterError": "mtfilter.errors",
    "NonFiniteLossError": "mtfilter.errors",
    "GroupedEmbedding": "mtfilter.nn.layers",
    "GroupedLinear": "mtfilter.nn.layers",
    "BitMLP": "mtfilter.nn.model",
    "BitMLPConfig": "mtfilter.nn.config",
    "BitMappingModule": "mtfilter.train.module",
    "MultiLabelDataModule": "mtfilter.train.multilabel_data",
    "per_bit_loss": "mtfilter.nn.losses",
}

__all__ = [
    "BestEpochCheckpoint",
    "BitMLP",
    "BitMLPConfig",
    "BitMappingDataModule",
    "BitMappingModule",
    "CheckpointMismatchError",
    "ConfigError",
    "ConvergenceSchedule",
    "EpochProgressBar",
    "GroupedEmbedding",
    "GroupedLinear",
    "MtfilterError",
    "MultiLabelDataModule",
    "NonFiniteLossError",
    "RunSummary",
    "StopOnInterrupt",
    "fingerprint",
    "fit_callbacks",
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
