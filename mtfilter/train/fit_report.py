"""What a fit says about itself: the model it starts (`describe_model`), what the run is for its
summary (`describe_run`), and the lines it ends with (its status, best figures, floor, and where
each output is)."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtfilter.folders import SUMMARY_FILE, read_json
from mtfilter.nn.replicas import Replica
from mtfilter.train import objective

if TYPE_CHECKING:
    from mtfilter.train.module import BitMappingModule


def fit_report(folder: Path, summary: dict[str, Any], batch: bool = False) -> str:
    """The lines a fit ends with: its status, best loss, its errors against the model's floor,
    and where each output is; with `batch`, the lowest single-batch loss too (the original's
    figure, the faithful configs')."""
    status = summary.get("status", "unknown")
    lines = [f"fit {status}: {folder}"]
    paths = summary.get("replicas")  # stacked replicas: one summary each
    replicas = [folder / SUMMARY_FILE] if paths is None else [folder / p for p in paths]
    floor = None
    for path in replicas:
        one = read_json(path) or {}
        val = one.get("val") or {}
        floor = floor or one.get("floor")
        if val.get("loss_best") is None:
            continue
        name = f"{path.parent.name}: " if paths is not None else ""
        lines.append(
            f"  {name}best val/loss {val['loss_best']:.4f} at epoch {val['loss_best_epoch']} "
            f"of {one.get('epochs')}{_convergence_note(one.get('convergence'))}"
        )
        if val.get("bit_error_at_best") is not None:
            lines.append(
                f"  {name}at that epoch bit error {val['bit_error_at_best']:.4f}, exact-match "
                f"error {val['exact_match_error_at_best']:.4f} (lowest over epochs: "
                f"{val['bit_error_best']:.4f}, {val['exact_match_error_best']:.4f})"
            )
        splits = one.get("splits") or {}
        test = splits.get("test")
        if test:
            epoch = f" (epoch {splits['epoch']})" if splits.get("epoch") else ""
            lines.append(
                f"  {name}test split, best epoch's weights{epoch}: Hamming loss (bit error) "
                f"{test['bit_error']:.4f}, subset accuracy {test['exact_match']:.4f}, micro F1 "
                f"{test['f1_micro']:.4f}, macro F1 {test['f1']:.4f}"
            )
        train = one.get("train") or {}
        if batch and train.get("batch_loss_best") is not None:
            lines.append(
                f"  {name}best batch loss {train['batch_loss_best']:.4f} at epoch "
                f"{train['batch_loss_best_epoch']} (the original's figure)"
            )
    if floor is not None:
        held_out = " (of the first replica's training split)" if len(replicas) > 1 and any(
            (read_json(p) or {}).get("splits") for p in replicas[:1]) else ""  # fmt: skip
        lines.append(f"  floor{held_out}: {_describe_floor(floor)}")
    lines += [
        f"  {folder / SUMMARY_FILE}"
        + ("" if paths is None else "  (one per replica in its folder)"),
        f"  {folder / 'checkpoints' / 'best.ckpt'}  (weights of the best epoch)",
        f"  {folder / 'checkpoints' / 'last.ckpt'}  (everything to resume)",
        f"  tensorboard --logdir {folder}",
    ]
    if status == "stopped":
        lines.append(
            f"  resume: mtfilter fit --config {folder / 'config.yaml'} "
            f"--ckpt_path {folder / 'checkpoints' / 'last.ckpt'}"
        )
    return "\n".join(lines)


def _describe_floor(floor: dict[str, Any]) -> str:
    from mtfilter.nn.floor import Floor

    return Floor(**floor).describe()


def _convergence_note(convergence: dict[str, Any] | None) -> str:
    if not convergence or convergence.get("converged") is None:
        return ""
    if convergence["converged"]:
        at_floor = convergence.get("converged_reason") == "floor"
        return f"; converged at epoch {convergence['epoch']}" + (
            " (bit error and exact-match error at their floor)" if at_floor else ""
        )
    return "; not converged (still improving when it ended: not an optimum)"


def describe_model(
    layout: str,
    num_bits: int,
    replicas: list[Replica],
    counts: dict[str, int],
    task_noun: str = "bits",
) -> str:
    """The start-up line, e.g. `st model, 10 bits, seed 0: 166,330 parameters (...)`
    (`task_noun` "labels" for real multi-label data)."""
    seeds = list(dict.fromkeys(r.seed for r in replicas))
    rates = list(dict.fromkeys(r.learning_rate for r in replicas if r.learning_rate is not None))
    stacked = f" x {len(replicas)} replicas" if len(replicas) > 1 else ""
    which = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    if rates:
        which += f" x learning rates {', '.join(f'{r:g}' for r in rates)}"
    return (
        f"{layout} model, {num_bits} {task_noun}, {which}: {counts['total']:,} parameters{stacked} "
        f"({counts['shared']:,} shared, {counts['per_task']:,} per task, of which "
        f"{counts['task_specific']:,} task-specific"
        + (f", {counts['filter']:,} in task filters)" if counts["filter"] else ")")
    )


def describe_run(
    module: "BitMappingModule", replica: int, best_epoch: int | None = None
) -> dict[str, Any]:
    """What a run is, for its summary: sizes, multitask method (its conflict figures at
    `best_epoch` too), floor, hyperparameters."""
    scalarizers = module.scalarizers
    floor = module.floor_of(replica)
    hparams = {k: v for k, v in module.hparams.items() if k != "seeds" and not k.startswith("_")}
    return {
        "parameters": module.parameter_counts(),
        "multitask": module.objective.summary(replica, best_epoch),
        "floor": None if floor is None else floor.as_dict(),
        "hparams": {
            **hparams,
            "aggregator": objective.describe(module.train_config.aggregator),
            "scalarizer": objective.describe(scalarizers[0] if scalarizers else None),
        },
    }
