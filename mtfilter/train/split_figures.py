"""The figures of held-out data's splits, read once when fit ends: each replica's best-epoch
weights on its test split (the figure a study reports) and on its training split (what it fit),
in eval mode, as `summary.json`'s `splits` section."""

import copy
from typing import Any

import torch
from torch import Tensor

from mtfilter.record import metrics
from mtfilter.record.evaluation import evaluate

# the splits read at the end, in this order (validation is the epoch log's `at_best` figures)
END_SPLITS = ("test", "train")


@torch.no_grad()
def split_sections(
    module: Any, weights: dict[str, Tensor] | None
) -> list[dict[str, dict[str, Any]]] | None:
    """Per replica, {split: {figure name: value, `{name}_per_bit`: per label}} of `module`
    (a `BitMappingModule`) with `weights` (its state dict; None: its current weights), for
    data modules with splits (`MultiLabelDataModule`); None for others."""
    data = module.trainer.datamodule
    if getattr(data, "split", None) is None:
        return None
    net = copy.deepcopy(module.net)
    if weights is not None:
        net.load_state_dict({k.removeprefix("net."): v for k, v in weights.items()
                             if k.startswith("net.")})  # fmt: skip
    net.eval()
    sections: list[dict[str, dict[str, Any]]] = [{} for _ in module.replicas]
    for name in END_SPLITS:
        inputs, targets = module.replica_rows(data.split(name))
        if inputs.shape[1] == 0:  # no test split
            continue
        evaluation = evaluate(net, inputs, targets, module.train_config.loss, counts=True)
        for replica, section in enumerate(sections):
            section[name] = _section(evaluation, replica, module.figures)
    return sections


def _section(evaluation: metrics.Evaluation, replica: int, figures: list[Any]) -> dict[str, Any]:
    """The evaluation figures of one replica under their summary names."""
    logged = metrics.evaluation_metrics("split", evaluation, replica, figures)
    section: dict[str, Any] = {}
    for figure in figures:
        if not figure.evaluation:
            continue
        tag = f"split/{figure.tag.split('/', 1)[1]}"
        section[figure.summary_name] = float(logged[tag])
        if figure.per_bit:
            bits = [key for key in logged if key.startswith(f"{tag}/bit_")]
            section[f"{figure.summary_name}_per_bit"] = [float(logged[key]) for key in bits]
    return section
