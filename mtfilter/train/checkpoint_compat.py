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
}
# The stacked replicas, (seed, learning rate) each: a checkpoint holds exactly these.
REPLICA_KEYS = ("seeds", "learning_rates")


def check_checkpoint_compatible(checkpoint: dict[str, Any], hparams: Any) -> None:
    """Refuse a checkpoint from another dataset or model shape, naming the difference."""
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict) or "data_fingerprint" not in saved:
        raise CheckpointMismatchError("not an mtfilter checkpoint (no dataset fingerprint in it)")
    if hparams.get("data_fingerprint") is not None and (
        saved["data_fingerprint"] != hparams["data_fingerprint"]
    ):
        raise CheckpointMismatchError(
            f"the checkpoint was trained on dataset {saved['data_fingerprint']}, but this run's "
            f"data is {hparams['data_fingerprint']} (check data.num_bits, data.num_samples, "
            "data.targets and data.data_seed)"
        )
    differences = [
        f"{key}: checkpoint {saved.get(key, ARCHITECTURE_DEFAULTS.get(key))!r}, "
        f"config {hparams.get(key)!r}"
        for key in (*ARCHITECTURE_KEYS, *REPLICA_KEYS)
        if saved.get(key, ARCHITECTURE_DEFAULTS.get(key)) != hparams.get(key)
    ]
    if differences:
        raise CheckpointMismatchError(
            "the checkpoint's model differs from the configured one: " + "; ".join(differences)
        )
