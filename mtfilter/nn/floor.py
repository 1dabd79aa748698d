"""The representational floor: the lowest bit error and exact-match error that any weights can
reach through the output layer of a model whose outputs share one last hidden layer.

mt's last hidden layer (width d) feeds T = num_bits affine outputs thresholded at 0
(sigmoid > 0.5 <=> logit > 0): each input lands in one region of an arrangement of T
hyperplanes in R^d, and the region decides its bit string. No arrangement has more than
R(d) = sum_{i<=d} C(T, i) regions (Zaslavsky 1975; Stanley, "An Introduction to Hyperplane
Arrangements"), general position reaching it. So at most R(d) distinct strings can come out,
whatever the layers before do; a target set that needs more has inputs that must be wrong.

Standard library only: no torch is needed to compute or describe it. The fit computes it once
(`model_floor`) into each summary, where the report reads it.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

EXACT = "exact"
LOWER_BOUND = "lower bound"


def realisable_patterns(width: int, num_bits: int) -> int:
    """R(d) = sum_{i<=d} C(T, i): the most sign patterns T affine outputs of a d-wide layer can
    give (all 2**T once d >= T)."""
    return sum(math.comb(num_bits, i) for i in range(min(width, num_bits) + 1))


@dataclass(frozen=True)
class Floor:
    """The floor of one model on one dataset: per-sample bit error and exact-match error.

    `exact_match_error` is `exact` when the targets need every one of the 2**T strings equally
    often: then which strings an arrangement realises does not matter and general position
    realises R(d) of them, so exactly the rest are wrong at best. Otherwise it is a lower bound
    (not every set of R(d) strings, or of fewer, is realisable: a floor of 0 below d = T is a
    bound too). `bit_error` is a lower bound unless d >= T (0, exactly) or one string is
    missing (d = T - 1, whose neighbours are all realised): a string
    outside the realisable set costs at least one bit, and more when few strings lie near the
    realisable ones (see `representational_floor`).
    """

    bit_error: float
    exact_match_error: float
    bit_error_kind: str  # EXACT or LOWER_BOUND
    exact_match_error_kind: str
    width: int | None  # the width of the shared last layer; None: no shared output layer
    realisable: int | None  # R(width): strings the output layer can produce
    needed: int  # distinct strings the targets hold
    reason: str  # which layer limits it, in words

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line, e.g. `bit error >= 0.0011 (lower bound), exact-match error 0.0107 (exact):
        mt's last hidden layer, width 8, realises 1,013 of 1,024 strings`."""
        bits = "=" if self.bit_error_kind == EXACT else ">="
        strings = "=" if self.exact_match_error_kind == EXACT else ">="
        return (
            f"bit error {bits} {self.bit_error:.4f}, exact-match error {strings} "
            f"{self.exact_match_error:.4f} ({self.reason})"
        )


def representational_floor(
    width: int | None, num_bits: int, pattern_counts: Sequence[int]
) -> Floor:
    """The floor through an output layer of `num_bits` thresholded affine outputs of a `width`-
    wide shared layer (None: each bit has its own head, floor 0), for targets that hold each of
    their distinct bit strings `pattern_counts[k]` times.

    Exact-match error: at most R(d) strings can be right, at best the most frequent ones.
    Bit error: sum over r >= 0 of the samples whose string lies more than r bits from every
    realisable one. At most R(d) * V(r) strings lie within r bits of R(d) strings (V(r) =
    sum_{i<=r} C(T, i), a Hamming ball), at best the most frequent ones, so at least the rest
    of the samples lie farther; r = 0 is one bit per wrong string, and small widths, whose few
    realisable strings cannot be near many others, add more.
    """
    counts = sorted((c for c in pattern_counts if c > 0), reverse=True)
    samples, needed = sum(counts), len(counts)
    if samples == 0:
        raise ValueError("the targets are empty")
    if width is None:
        return Floor(0.0, 0.0, EXACT, EXACT, None, None, needed, "each bit has its own head")
    if width < 1 or num_bits < 1:
        raise ValueError(f"width and num_bits must be at least 1, got {width}, {num_bits}")
    realisable = realisable_patterns(width, num_bits)
    prefix = [0]
    for count in counts:
        prefix.append(prefix[-1] + count)

    def most_covered(strings: int) -> int:  # samples of the `strings` most frequent strings
        return prefix[min(strings, needed)]

    wrong_strings = samples - most_covered(realisable)
    wrong_bits, radius = 0, 0
    while radius < num_bits:
        within = realisable * sum(math.comb(num_bits, i) for i in range(radius + 1))
        farther = samples - most_covered(within)
        if farther <= 0:
            break
        wrong_bits += farther
        radius += 1
    complete = needed == 2**num_bits and len(set(counts)) == 1  # every string, equally often
    # A floor of 0 is exact only where every string is realisable (d >= T): below that, fewer
    # strings than R(d) are not all realisable at once for every set of them.
    every_string = realisable >= 2**num_bits
    exact_strings = every_string or complete
    # One string missing (d = T - 1): its T neighbours are all realised, one bit each.
    exact_bits = every_string or (complete and realisable == 2**num_bits - 1)
    return Floor(
        bit_error=wrong_bits / (samples * num_bits),
        exact_match_error=wrong_strings / samples,
        bit_error_kind=EXACT if exact_bits else LOWER_BOUND,
        exact_match_error_kind=EXACT if exact_strings else LOWER_BOUND,
        width=width,
        realisable=realisable,
        needed=needed,
        reason=f"{num_bits} outputs of a {width}-wide shared layer realise at most "
        f"{realisable:,} of the {2**num_bits:,} strings; the targets hold {needed:,}",
    )


def shared_output_width(
    layout: str,
    num_layers: int,
    in_dim: int,
    hidden_dim: int | None,
    num_shared_layers: int | None = None,
    task_filter: bool = False,
) -> int | None:
    """The width of the layer all bits' outputs read, or None where each bit has a head of its
    own input (st's towers, split's per-bit layers, mt with per-task filters)."""
    num_hidden = num_layers - 1
    shared = num_hidden if layout == "mt" else (num_shared_layers or 0) if layout == "split" else 0
    if layout == "st" or task_filter or shared < num_hidden:
        return None
    return hidden_dim if num_hidden > 0 and hidden_dim is not None else in_dim


def pattern_counts(targets: Any) -> list[int]:
    """How often each distinct bit string occurs in (N, T) targets (a tensor)."""
    return targets.unique(dim=0, return_counts=True)[1].tolist()


def model_floor(hparams: Any, pattern_counts: Sequence[int]) -> Floor:
    """The floor of a `BitMappingModule`'s model (its hyperparameters) on targets with these
    string counts."""
    width = shared_output_width(
        hparams["layout"],
        hparams["num_layers"],
        hparams["in_dim"],
        hparams["hidden_dim"],
        hparams.get("num_shared_layers"),
        bool(hparams.get("task_filter")),
    )
    floor = representational_floor(width, hparams["num_bits"], pattern_counts)
    if hparams["num_layers"] == 1 and hparams.get("encoding") in ("binary", "linear"):
        # The output layer reads fixed inputs (codes or features), which no weights can move:
        # the count of realisable strings still bounds it, but nothing says that bound is reached.
        floor = replace(floor, bit_error_kind=LOWER_BOUND, exact_match_error_kind=LOWER_BOUND)
    return floor
