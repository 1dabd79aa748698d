"""mtfilter: multitask vs singletask learning under limited capacity, on random bit mappings."""

from mtfilter.callbacks import BestEpochCheckpoint, EpochProgressBar, RunSummary, StopOnInterrupt
from mtfilter.data import BitMappingDataModule, fingerprint, make_targets
from mtfilter.errors import CheckpointMismatchError, ConfigError, MtfilterError, NonFiniteLossError
from mtfilter.layers import GroupedEmbedding, GroupedLinear
from mtfilter.model import BitMLP
from mtfilter.module import BitMappingModule, per_bit_loss

__all__ = [
    "BestEpochCheckpoint",
    "BitMLP",
    "BitMappingDataModule",
    "BitMappingModule",
    "CheckpointMismatchError",
    "ConfigError",
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
