"""Whether a checkpoint belongs to this run's dataset and model, checked before it is used."""

from typing import Any

from mtfilter.errors import CheckpointMismatchError

# Architecture hyperparameters: a checkpoint must agree on all of them to be loaded.
ARCHITECTURE_KEYS = (
    "num_bits",
    "num_samples",
    "layout",
    "num_shared_layers",
    "num_layers",
    "in_dim",
    "hidden_dim",
    "batch_norm",
    "encoding",
    "task_filter",
    "residual",
    "shared_embedding",
)
# What a key meant in checkpoints written before it existed.
ARCHITECTURE_DEFAULTS = {
    "task_filter": False,
    "residual": False,
    "shared_embedding": False,
    "learning_rates": None,
    "bias_before_batch_norm": True,  # every Linear had a bias until the key came
}
# The stacked replicas, (seed, learning rate) each: a checkpoint holds exactly these.
REPLICA_KEYS = ("seeds", "learning_rates")
# The data module's settings that decide the dataset (`num_samples` is the model's too).
DATA_KEYS = ("num_bits", "targets", "relatedness", "data_seed")


def check_checkpoint_compatible(
    checkpoint: dict[str, Any], hparams: Any, data: Any | None = None
) -> None:
    """Refuse a checkpoint from another dataset or model shape, naming the difference.

    `hparams` are the model's (with the configured data's fingerprint); `data` the data
    module's, to name the setting that makes another dataset (None: fingerprints only).
    """
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict) or "data_fingerprint" not in saved:
        raise CheckpointMismatchError("not an mtfilter checkpoint (no dataset fingerprint in it)")
    if hparams.get("data_fingerprint") is not None and (
        saved["data_fingerprint"] != hparams["data_fingerprint"]
    ):
        raise CheckpointMismatchError(
            "the checkpoint was trained on another dataset: "
            + _data_differences(checkpoint, hparams, data)
        )
    differences = [
        f"{key}: checkpoint {saved.get(key, ARCHITECTURE_DEFAULTS.get(key))!r}, "
        f"config {hparams.get(key)!r}"
        for key in (*ARCHITECTURE_KEYS, *REPLICA_KEYS)
        if saved.get(key, ARCHITECTURE_DEFAULTS.get(key)) != hparams.get(key)
    ]
    if has_biases_before_batch_norm(hparams) and not has_biases_before_batch_norm(saved):
        # the other way round, the checkpoint's biases are folded away (checkpoint_upgrade)
        differences.append(
            "bias_before_batch_norm: checkpoint False, config True (a model with the biases "
            "cannot be made from one without)"
        )
    if differences:
        raise CheckpointMismatchError(
            "the checkpoint's model differs from the configured one: " + "; ".join(differences)
        )


def has_biases_before_batch_norm(hparams: Any) -> bool:
    """Whether a model of these hyperparameters has a bias on the Linear before each
    BatchNorm (checkpoints from before the setting existed had)."""
    key = "bias_before_batch_norm"
    return bool(hparams.get("batch_norm", True)) and bool(
        hparams.get(key, ARCHITECTURE_DEFAULTS[key])
    )


def _data_differences(checkpoint: dict[str, Any], hparams: Any, data: Any | None) -> str:
    """`data.data_seed: checkpoint 0, config 1` for each data setting that differs, with the
    fingerprints; the fingerprints alone when no setting differs (or none is known)."""
    saved = checkpoint["hyper_parameters"]
    saved_data = checkpoint.get("datamodule_hyper_parameters") or {}
    pairs = [("num_samples", saved.get("num_samples"), hparams.get("num_samples"))]
    if data is not None:
        pairs += [(key, saved_data.get(key), data.get(key)) for key in DATA_KEYS]
    named = [
        f"data.{key}: checkpoint {theirs!r}, config {ours!r}"
        for key, theirs, ours in pairs
        if theirs is not None and ours is not None and theirs != ours
    ]
    fingerprints = (
        f"dataset fingerprint {saved['data_fingerprint']} in the checkpoint, "
        f"{hparams['data_fingerprint']} configured"
    )
    if not named:
        return f"{fingerprints} (check data.num_bits, num_samples, targets and data_seed)"
    return "; ".join(named) + f" ({fingerprints})"
