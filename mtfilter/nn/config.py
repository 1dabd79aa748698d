"""The settings of `BitMLP`, in one typed object checked once: the model takes it, and the
LightningModule exposes its fields to LightningCLI as `model.*` without repeating them."""

from dataclasses import dataclass
from typing import Literal

from mtfilter.errors import ConfigError

Layout = Literal["mt", "st", "split"]
Encoding = Literal["embedding", "binary", "linear"]


@dataclass(frozen=True, kw_only=True)
class BitMLPConfig:
    """The network: its layout, sizes and layers (see `BitMLP` for the layouts).

    Args:
        num_bits: Output bits, one task each.
        num_samples: Number of distinct inputs (rows of the embedding table; unused by `linear`).
        layout: `mt`, `st` or `split` (see `BitMLP`).
        num_shared_layers: For `split` only: how many leading hidden layers are shared.
        num_layers: Linear layers, output layer included (at least 1).
        in_dim: Width of the input encoding; with `linear`, the number of input features.
        hidden_dim: Width of every hidden layer (per bit in `st`); None, and only None, with
            `num_layers` 1, which has no hidden layer.
        batch_norm: BatchNorm after each hidden linear layer, as the original.
        bias_before_batch_norm: Keep the bias of each hidden linear layer that feeds a
            BatchNorm, as the original's `nn.Linear` layers did (the faithful configs). Off by
            default: BatchNorm in training mode subtracts any constant added before it, so such
            a bias has a gradient of exactly 0 in exact arithmetic. What is computed instead is
            rounding noise, which Adam divides by its own running size and turns into full-size
            steps; eval mode's running mean follows the bias's random walk, and eval figures
            then depend on the CPU's rounding. No effect without `batch_norm`.
        dropout: Dropout probability after each hidden ReLU.
        encoding: `embedding`, a learned `in_dim`-wide table (the original), `binary`, the
            index's fixed `in_dim`-bit code (needs `2**in_dim >= num_samples`), or `linear`:
            the inputs are `in_dim` real features (not indices), read by the first layer's
            linear map (real data: `MultiLabelDataModule`). Nothing is learned
            before that layer, so st's towers share the input as with `binary`.
        task_filter: `mt` only: per task, a scale and a shift of every hidden unit, applied
            between BatchNorm and ReLU (a `TaskFilter`), so that each bit sees the shared
            weights through its own filter: `2 * hidden_dim * (num_layers - 1)` parameters per
            bit. Compute after the first hidden layer grows `num_bits`-fold (as in `st`).
        residual: Add each `hidden_dim -> hidden_dim` layer's input to its output (the original's
            residual option): every hidden layer but the first, except where shared features
            fan out to per-bit layers.
        shared_embedding: `st` with `embedding` encoding only: one input table read by every
            tower, as the original code's st (`mt` and `split` share it anyway).
        batch_norm_chunks: BatchNorm's training statistics per chunk of the batch, as
            `nn.DataParallel` on this many devices computed them (the original ran on 4); the
            batch size must divide into them. 1: the whole batch (`ChunkedBatchNorm1d`).
        num_replicas: Independent copies trained side by side (stacked seeds).
        init_seeds: One seed per replica: replica r is initialised from its own generator exactly
            as a 1-replica model with seed `init_seeds[r]`. Default: the global torch RNG.
    """

    num_bits: int = 10
    num_samples: int = 1024
    layout: Layout = "mt"
    num_shared_layers: int | None = None
    num_layers: int = 3
    in_dim: int = 16
    hidden_dim: int | None = 1024
    batch_norm: bool = True
    bias_before_batch_norm: bool = False
    dropout: float = 0.0
    encoding: Encoding = "embedding"
    task_filter: bool = False
    residual: bool = False
    shared_embedding: bool = False
    batch_norm_chunks: int = 1
    num_replicas: int = 1
    init_seeds: list[int] | None = None

    def __post_init__(self) -> None:
        _check(self)


def _check(config: BitMLPConfig) -> None:
    """Refuse settings no model can be built from, in one line naming the setting."""
    c = config
    num_bits, num_samples, layout, num_shared_layers = (
        c.num_bits,
        c.num_samples,
        c.layout,
        c.num_shared_layers,
    )
    num_layers, in_dim, hidden_dim, dropout = c.num_layers, c.in_dim, c.hidden_dim, c.dropout
    encoding, num_replicas, init_seeds = c.encoding, c.num_replicas, c.init_seeds
    if c.batch_norm_chunks < 1:
        raise ConfigError(f"model.batch_norm_chunks must be at least 1, got {c.batch_norm_chunks}")
    if c.task_filter and layout != "mt":
        raise ConfigError(
            f"model.task_filter needs layout mt, got {layout}"
            + (": st shares nothing to filter" if layout == "st" else "")
        )
    for name, value in [
        ("num_bits", num_bits),
        ("num_samples", num_samples),
        ("num_layers", num_layers),
        ("in_dim", in_dim),
        ("hidden_dim", 1 if hidden_dim is None else hidden_dim),
        ("num_replicas", num_replicas),
    ]:
        if value < 1:
            raise ConfigError(f"model.{name} must be at least 1, got {value}")
    if layout not in ("mt", "st", "split"):
        raise ConfigError(f"model.layout must be 'mt', 'st' or 'split', got {layout!r}")
    if encoding not in ("embedding", "binary", "linear"):
        raise ConfigError(
            f"model.encoding must be 'embedding', 'binary' or 'linear', got {encoding!r}"
        )
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
    num_hidden = num_layers - 1
    if num_hidden == 0 and hidden_dim is not None:
        raise ConfigError(
            f"model.num_layers 1 has no hidden layer, so model.hidden_dim {hidden_dim} would go "
            "unused: set model.hidden_dim to null, or num_layers to 2 or more"
        )
    if num_hidden > 0 and hidden_dim is None:
        raise ConfigError(f"model.num_layers {num_layers} needs a model.hidden_dim")
    if layout == "split":
        if num_shared_layers is None or not 0 <= num_shared_layers <= num_hidden:
            raise ConfigError(
                f"model.layout=split needs model.num_shared_layers in 0..{num_hidden} "
                f"(the number of hidden layers), got {num_shared_layers}"
            )
    elif num_shared_layers is not None:
        raise ConfigError(
            f"model.num_shared_layers applies to layout=split only (layout={layout} shares "
            f"{'every' if layout == 'mt' else 'no'} layer)"
        )
    if encoding == "binary" and 2**in_dim < num_samples:
        raise ConfigError(
            f"model.in_dim={in_dim} bits cannot tell {num_samples} samples apart with binary "
            f"encoding (need 2**in_dim >= num_samples)"
        )
    if init_seeds is not None and len(init_seeds) != num_replicas:
        raise ConfigError(f"{len(init_seeds)} init_seeds for {num_replicas} replicas")
