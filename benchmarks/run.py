"""Side-by-side timings of mtfilter against hand-written PyTorch, printed as medians and ratios.

    python -m benchmarks.run                 # every case on the CPU (a few minutes)
    python -m benchmarks.run --device cuda   # the same on a GPU
    python -m benchmarks.run --smoke         # seconds: checks the cases still run (CI)

Each case alternates its two sides repeat after repeat and reports medians, so slow drifts of the
machine hit both sides alike. Process start-up and imports are outside every timing; a fit is
timed from the call of `trainer.fit` to its return (set-up, final checkpoint and summary
included).
"""

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchjd.aggregation import UPGrad

from benchmarks import study
from benchmarks.reference import SeparateTowers, train_reference
from mtfilter import BitMLP, make_targets, per_bit_loss
from mtfilter.train.cli import MtfilterCLI
from mtfilter.train.objective import aggregate

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "mt.yaml")


@dataclass
class Row:
    case: str
    setting: str
    ours: float  # median seconds (or ms) of mtfilter's side
    theirs: float  # median of the other side
    unit: str
    ratio: float  # the figure the goal is about
    goal: str

    def met(self) -> str:
        if self.goal == "-":  # a cost to report, not a goal
            return "-"
        return "yes" if self._ok() else "NO"

    def _ok(self) -> bool:
        op, value = self.goal.split(" ")
        return self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)


class _TimedCLI(MtfilterCLI):
    """The mtfilter CLI, timing `trainer.fit` alone."""

    def before_fit(self) -> None:
        super().before_fit()
        self.fit_seconds = time.perf_counter()

    def after_fit(self) -> None:
        self.fit_seconds = time.perf_counter() - self.fit_seconds


# CPU threads of every case; fits get them as --num_threads, so that mtfilter and the reference
# loops compare at equal threads (the automatic choice is its own case, `threads`).
THREADS = torch.get_num_threads()


def _fit_args(layout: str, hidden: int, epochs: int) -> list[str]:
    """`mtfilter fit` flags of one benchmarked setting (the rest is configs/mt.yaml's)."""
    return ["--model.layout", layout, "--model.hidden_dim", str(hidden),
            "--trainer.max_epochs", str(epochs)]  # fmt: skip


def fit_seconds(
    device: str, args: list[str], checkpoint: bool = True, threads: int | None = None
) -> float:
    """Wall time of `mtfilter fit --config configs/mt.yaml ARGS` at its defaults."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    cli = _TimedCLI(
        args=[
            "--config",
            CONFIG,
            "--trainer.enable_model_summary",
            "false",
            "--trainer.accelerator",
            accelerator,
            "--num_threads",
            str(threads or THREADS),
            *args,
        ],
        run=False,
    )
    if not checkpoint:  # the same run without mtfilter's checkpoint callback
        cli.trainer.callbacks[:] = [
            c for c in cli.trainer.callbacks if type(c).__name__ != "BestEpochCheckpoint"
        ]
    cli.before_fit()
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.after_fit()
    return cli.fit_seconds


def telemetry(device: str, repeats: int, epochs: dict[int, int]) -> list[Row]:
    """Conflict telemetry at every optimizer step vs off: the cost of one measurement. Divided
    by the interval it is the share it adds (docs/benchmarks.md)."""
    rows = []
    for hidden, n in epochs.items():
        args = ["--model.hidden_dim", str(hidden), "--trainer.max_epochs", str(n)]
        ours, theirs = _alternate(
            lambda args=args: fit_seconds(device, [*args, "--model.telemetry_interval", "1"]),
            lambda args=args: fit_seconds(device, [*args, "--model.telemetry_interval", "0"]),
            repeats,
        )
        setting = f"mt, hidden {hidden}, {n} epochs, every step"
        row = Row("telemetry cost", setting, ours / n * 1e3, theirs / n * 1e3, "ms/epoch",
                  ours / theirs, "-")  # fmt: skip
        rows.append(row)
    return rows


def thread_choice(repeats: int, settings: list[tuple[str, int]], epochs: int) -> list[Row]:
    """One CPU thread vs every core for whole fits, and which of the two `num_threads`'s
    automatic choice takes (mtfilter/train/threads.py)."""
    from mtfilter.train import threads

    rows = []
    for layout, hidden in settings:
        args = _fit_args(layout, hidden, epochs)
        one, every = _alternate(
            lambda args=args: fit_seconds("cpu", [*args, "--num_threads", "1"]),
            lambda args=args: fit_seconds("cpu", [*args, "--num_threads", str(THREADS)]),
            repeats,
        )
        net = BitMLP(num_bits=10, num_samples=1024, layout=layout, hidden_dim=hidden)
        chosen = threads.choose(threads.multiply_adds_per_step(net, 512), THREADS)
        setting = f"{layout}, hidden {hidden}, {epochs} epochs (auto: {chosen})"
        rows.append(Row(f"threads: 1 vs {THREADS}", setting, one / epochs * 1e3,
                        every / epochs * 1e3, "ms/epoch", every / one, "-"))  # fmt: skip
    return rows


def _alternate(first: Callable[[], float], second: Callable[[], float], repeats: int):
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return statistics.median(a), statistics.median(b)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def overhead(device: str, repeats: int, epochs: dict[int, int]) -> list[Row]:
    """mtfilter fit at its defaults vs the plain loop doing the same work."""
    rows = []
    for hidden, goal in ((8, "<= 1.5"), (1024, "<= 1.1")):
        n = epochs[hidden]
        args = ["--model.hidden_dim", str(hidden), "--trainer.max_epochs", str(n)]
        ours, theirs = _alternate(
            lambda args=args: fit_seconds(device, args),
            lambda hidden=hidden, n=n: _timed(lambda: train_reference(hidden, n, device=device)),
            repeats,
        )
        rows.append(
            Row(
                "framework overhead",
                f"mt, hidden {hidden}, {n} epochs",
                ours / n * 1e3,
                theirs / n * 1e3,
                "ms/epoch",
                ours / theirs,
                goal,
            )
        )
    return rows


def checkpointing(device: str, repeats: int, epochs: dict[int, int]) -> list[Row]:
    """Defaults vs the same fit without the best-epoch checkpoint callback."""
    rows = []
    for hidden, n in epochs.items():
        args = ["--model.hidden_dim", str(hidden), "--trainer.max_epochs", str(n)]
        ours, theirs = _alternate(
            lambda args=args: fit_seconds(device, args),
            lambda args=args: fit_seconds(device, args, checkpoint=False),
            repeats,
        )
        setting = f"mt, hidden {hidden}, {n} epochs"
        rows.append(
            Row(
                "checkpointing cost",
                setting,
                ours / n * 1e3,
                theirs / n * 1e3,
                "ms/epoch",
                ours / theirs,
                "<= 1.05",
            )
        )
    return rows


def _step_seconds(model: torch.nn.Module, steps: int, device: str) -> float:
    """Median seconds of one training step (forward, L1 loss, backward, SGD) at batch 512."""
    targets = make_targets(10, 1024, "permutation", 0).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batches = [torch.randperm(1024, device=device)[:512] for _ in range(steps + 3)]
    times = []
    for i, indices in enumerate(batches):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = per_bit_loss(model(indices), targets[indices], "l1").sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 3:  # warm-up steps excluded
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def grouped_st(device: str, repeats: int, widths: list[int], steps: int) -> list[Row]:
    """10 singletask towers: mtfilter's grouped model vs a Python loop over nn.Sequential towers."""
    torch.set_num_threads(THREADS)
    rows = []
    for hidden in widths:
        grouped = BitMLP(num_bits=10, num_samples=1024, layout="st", hidden_dim=hidden).to(device)
        separate = SeparateTowers(10, 1024, 16, hidden).to(device)
        ours, theirs = _alternate(
            lambda g=grouped: _step_seconds(g, steps, device),
            lambda s=separate: _step_seconds(s, steps, device),
            repeats,
        )
        goal = ">= 5" if hidden <= 32 else ">= 0.95"
        rows.append(
            Row(
                "grouped st vs loop",
                f"10 towers, hidden {hidden}",
                ours * 1e3,
                theirs * 1e3,
                "ms/step",
                theirs / ours,
                goal,
            )
        )
    return rows


def stacked_seeds(device: str, repeats: int, widths: list[int], epochs: int) -> list[Row]:
    """8 seeds as replicas of one fit vs 8 separate fits, one after another."""
    rows = []
    seeds = list(range(8))
    for layout in ("mt", "st"):
        for hidden in widths:
            base = _fit_args(layout, hidden, epochs)
            stacked = base + ["--data.seeds", str(seeds)]
            ours, theirs = _alternate(
                lambda stacked=stacked: fit_seconds(device, stacked),
                lambda base=base: sum(
                    fit_seconds(device, [*base, "--seed_everything", str(s)]) for s in seeds
                ),
                repeats,
            )
            rows.append(
                Row(
                    "stacked seeds",
                    f"{layout}, hidden {hidden}, 8 seeds, {epochs} epochs",
                    ours,
                    theirs,
                    "s",
                    theirs / ours,
                    ">= 4.8",
                )
            )
    return rows


def stacked_rates(
    device: str, repeats: int, settings: list[tuple[str, int]], epochs: int, processes: bool
) -> list[Row]:
    """A learning-rate selection, 4 rates x 2 seeds: one fit of 8 stacked replicas against the
    8 separate fits, each side as whole `mtfilter fit` processes (start-up included) and as
    in-process fits alone, on one thread each, as a sweep runs them (one process per core)."""
    rates, seeds = [0.001, 0.003, 0.01, 0.03], [0, 1]
    rows = []
    for layout, hidden in settings:
        base = _fit_args(layout, hidden, epochs)
        stacked = [*base, "--data.seeds", str(seeds), "--model.learning_rates", str(rates)]
        separate = [[*base, "--seed_everything", str(s), "--model.optimizer.init_args.lr",
                     str(r)] for r in rates for s in seeds]  # fmt: skip
        setting = f"{layout}, hidden {hidden}, 4 rates x 2 seeds, {epochs} epochs"
        measures = {"fits only": fit_seconds, "processes": _process_seconds}
        for how, seconds in measures.items():
            if how == "processes" and not processes:
                continue
            ours, theirs = _alternate(
                lambda seconds=seconds, stacked=stacked: seconds(device, stacked, threads=1),
                lambda seconds=seconds, separate=separate: sum(
                    seconds(device, args, threads=1) for args in separate
                ),
                repeats,
            )
            rows.append(Row("stacked rates", f"{setting}, {how}", ours, theirs, "s",
                            theirs / ours, "-"))  # fmt: skip
    return rows


def fused_adam(device: str, repeats: int, settings: list[tuple[str, int, int]], epochs: int):
    """Adam with `fused: true` (one pass over each tensor) against the default
    (`_single_tensor_adam` on a CPU): the same algorithm, the step's memory traffic cut. One
    thread, as a sweep's processes."""
    rows = []
    for layout, hidden, replicas in settings:
        args = [*_fit_args(layout, hidden, epochs), "--data.seeds", str(list(range(replicas)))]
        ours, theirs = _alternate(
            lambda args=args: fit_seconds(device, [*args, "--model.optimizer.init_args.fused",
                                                   "true"], threads=1),
            lambda args=args: fit_seconds(device, args, threads=1),
            repeats,
        )  # fmt: skip
        rows.append(Row("fused Adam", f"{layout}, hidden {hidden}, {replicas} replicas, "
                        f"{epochs} epochs", ours, theirs, "s", theirs / ours, "-"))  # fmt: skip
    return rows


def gradients(device: str, repeats: int, settings: list[tuple[str, int, list[str]]],
              epochs: int) -> list[Row]:  # fmt: skip
    """The written-out step (`model.gradients: explicit`, the default) against autograd, whole
    fits of 8 stacked replicas (4 rates x 2 seeds, a selection's stack), one thread: autograd /
    written-out, seconds."""
    rows = []
    for layout, hidden, extra in settings:
        args = [*_fit_args(layout, hidden, epochs), "--data.seeds", "[0, 1]", "--model.loss",
                "bce", "--model.learning_rates", "[0.001, 0.003, 0.01, 0.03]",
                "--model.optimizer.init_args.fused", "true", *extra]  # fmt: skip
        ours, theirs = _alternate(
            lambda args=args: fit_seconds(device, [*args, "--model.gradients", "explicit"],
                                          threads=1),
            lambda args=args: fit_seconds(device, [*args, "--model.gradients", "autograd"],
                                          threads=1),
            repeats,
        )  # fmt: skip
        setting = f"{layout}{' + UPGrad' if extra else ''}, hidden {hidden}, 8 replicas"
        rows.append(Row("written-out step vs autograd", f"{setting}, {epochs} epochs", ours,
                        theirs, "s", theirs / ours, "-"))  # fmt: skip
    return rows


def allocator(repeats: int, settings: list[tuple[str, int]], epochs: int) -> list[Row]:
    """Whole fit processes with the allocator setting of the `mtfilter` command
    (`mtfilter.allocator`) against the same fit started without it (`cli_main` called
    directly), 8 stacked seeds, one thread: without / with, seconds."""
    rows = []
    for layout, hidden in settings:
        args = ["--config", CONFIG, *_fit_args(layout, hidden, epochs), "--data.seeds",
                str(list(range(8))), "--model.loss", "bce", "--trainer.enable_model_summary",
                "false", "--num_threads", "1"]  # fmt: skip
        ours, theirs = _alternate(
            lambda args=args: _command_seconds([sys.executable, "-m", "mtfilter.cli", "fit",
                                                *args]),
            lambda args=args: _command_seconds([sys.executable, "-c", _BARE_FIT, *args]),
            repeats,
        )  # fmt: skip
        rows.append(Row("allocator setting", f"{layout}, hidden {hidden}, 8 replicas, {epochs} "
                        "epochs, processes", ours, theirs, "s", theirs / ours, "-"))  # fmt: skip
    return rows


# `mtfilter fit` without the `mtfilter` command's process settings (its allocator setting)
_BARE_FIT = "import sys; from mtfilter.cli.main import cli_main; cli_main(['fit', *sys.argv[1:]])"


def _command_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def _process_seconds(device: str, args: list[str], threads: int | None = None) -> float:
    """Wall time of a whole `mtfilter fit` process (imports and start-up included)."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    command = [sys.executable, "-m", "mtfilter.cli", "fit", "--config", CONFIG,
               "--trainer.enable_model_summary", "false", "--trainer.accelerator", accelerator,
               "--num_threads", str(threads or THREADS), *args]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def aggregation(device: str, repeats: int, widths: list[int], steps: int) -> list[Row]:
    """UPGrad on 8 replicas' per-task Jacobians of an mt model's shared parameters: the path
    through the (T, T) Gramians, batched over replicas (what mtfilter runs), vs TorchJD's
    aggregator called on each replica's Jacobian."""
    torch.set_num_threads(THREADS)
    rows = []
    aggregator = UPGrad().to(device)
    for hidden in widths:
        net = BitMLP(num_bits=10, num_samples=1024, layout="mt", hidden_dim=hidden, num_replicas=8)
        size = sum(p.numel() for p in net.shared_parameters()) // 8
        matrices = torch.randn(8, 10, size, device=device)

        def gramian_path(m=matrices) -> float:
            return _timed(lambda: [_sync(aggregate(m, aggregator), device) for _ in range(steps)])

        def jacobian_path(m=matrices) -> float:
            return _timed(
                lambda: [
                    _sync(torch.stack([aggregator(x) for x in m]), device) for _ in range(steps)
                ]
            )

        ours, theirs = _alternate(gramian_path, jacobian_path, repeats)
        rows.append(
            Row(
                "UPGrad: Gramian vs Jacobian path",
                f"8 replicas, mt hidden {hidden}",
                ours / steps * 1e3,
                theirs / steps * 1e3,
                "ms/step",
                theirs / ours,
                "-",
            )  # fmt: skip
        )
    return rows


def _sync(tensor: torch.Tensor, device: str) -> torch.Tensor:
    if device == "cuda":
        torch.cuda.synchronize()
    return tensor


def answer_case(widths: list[int], max_epochs: int) -> list[Row]:
    """A scaled-down study the way studies ran before (every replica to its loss plateau, frozen
    replicas kept in the stack) against the way they run now, as whole sweeps."""
    old, new, runs, picks, same = study.answer(widths, max_epochs)
    setting = (f"widths {widths}, st + mt, bce, 2 rates x 2 seeds, then 2 seeds, cap "
               f"{max_epochs}; of {runs} held-out runs {picks} same pick, {same} same best "
               "errors")  # fmt: skip
    return [Row("time to the answer", setting, new, old, "s", old / new, "-")]


def step_case(settings: list[tuple[int, int]], epochs: int) -> list[Row]:
    """Per replica-epoch of a stacked mt fit at steady state vs the hand-written stacked step
    (`benchmarks/stacked_reference.py`), both on one thread: mtfilter / reference."""
    rows = []
    for replicas, hidden in settings:
        ours = (
            study.library_epoch_seconds(
                lambda args: fit_seconds("cpu", args, threads=1), replicas, hidden, epochs
            )
            / replicas
            * 1e3
        )
        theirs = study.reference_epoch_seconds(replicas, hidden, epochs) / replicas * 1e3
        goal = "<= 1.5" if replicas == 8 else "-"
        setting = f"mt, hidden {hidden}, {replicas} replicas, bce"
        rows.append(Row("stacked step vs hand-written", setting, ours, theirs,
                        "ms/replica-epoch", ours / theirs, goal))  # fmt: skip
    return rows


def format_table(rows: list[Row], device: str, smoke: bool = False) -> str:
    lines = [
        "| case | setting | mtfilter | other side | unit | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.setting} | {r.ours:.3f} | {r.theirs:.3f} | {r.unit} | "
            f"{r.ratio:.2f} | {r.goal} | {'-' if smoke else r.met()} |"
        )
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    note = " (smoke run: sizes too small for the goals to apply)" if smoke else ""
    return f"Device: {name}; torch {torch.__version__}{note}\n\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--cases",
        default="overhead,checkpoint,telemetry,grouped,stacked,rates,fused,aggregation,gradients,"
        "allocator,threads,step,answer",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (CI)")
    parser.add_argument("--output", help="also write the table to this file")
    options = parser.parse_args()
    smoke = options.smoke
    repeats = 1 if smoke else options.repeats
    cases = options.cases.split(",")
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    device = options.device
    rows: list[Row] = []
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # the fits' lightning_logs/ go to a temporary folder
        try:
            # Warm-up: first calls (lazy imports, allocator growth) are not any case's cost.
            fit_seconds(device, ["--model.hidden_dim", "8", "--trainer.max_epochs", "2"])
            if "overhead" in cases:
                # hidden 1024 over 100 epochs (200 steps): the telemetry measurement at step 0
                # weighs about what it does in a run with measurements every 500 steps
                epochs = {8: 5, 1024: 2} if smoke else {8: 1000, 1024: 100}
                rows += overhead(device, repeats, epochs)
            if "checkpoint" in cases:
                epochs = {8: 5} if smoke else {8: 1000, 1024: 20}
                rows += checkpointing(device, repeats, epochs)
            if "telemetry" in cases:
                epochs = {8: 5} if smoke else {8: 200, 1024: 10}
                rows += telemetry(device, repeats, epochs)
            if "grouped" in cases:
                widths = [8, 64] if smoke else [8, 16, 32, 64, 128, 256, 512, 1024]
                rows += grouped_st(device, repeats, widths, 2 if smoke else 20)
            if "stacked" in cases:
                widths = [8] if smoke else [8, 32, 64]
                rows += stacked_seeds(device, min(repeats, 3), widths, 3 if smoke else 200)
            if "rates" in cases:
                settings = [("mt", 8)] if smoke else [("mt", 8), ("mt", 64), ("st", 8)]
                rows += stacked_rates(device, min(repeats, 2), settings, 3 if smoke else 1000,
                                      processes=not smoke)  # fmt: skip
            if "fused" in cases:
                settings = [("st", 8, 1)] if smoke else [
                    ("st", 8, 1), ("st", 8, 8), ("mt", 8, 8), ("mt", 1024, 1)]  # fmt: skip
                rows += fused_adam(device, repeats, settings, 3 if smoke else 300)
            if "aggregation" in cases:
                widths = [8] if smoke else [8, 64, 1024]
                rows += aggregation(device, repeats, widths, 2 if smoke else 20)
            if "gradients" in cases:
                settings = [("mt", 8, [])] if smoke else [
                    ("mt", 8, []), ("st", 8, []),
                    ("mt", 10, ["--model.aggregator.class_path", "torchjd.aggregation.UPGrad"]),
                ]  # fmt: skip
                rows += gradients(device, repeats, settings, 3 if smoke else 500)
            if "allocator" in cases and device == "cpu":
                settings = [("st", 8)] if smoke else [("st", 8), ("mt", 8), ("mt", 64)]
                rows += allocator(min(repeats, 3), settings, 3 if smoke else 500)
            if "threads" in cases and device == "cpu":
                settings = [("mt", 8)] if smoke else [
                    ("mt", 8), ("mt", 64), ("mt", 128), ("mt", 1024), ("st", 8), ("st", 32),
                    ("st", 128),
                ]  # fmt: skip
                rows += thread_choice(repeats, settings, 3 if smoke else 100)
            if "step" in cases and device == "cpu":
                settings = [(2, 8)] if smoke else [(8, 8), (32, 8), (8, 32)]
                rows += step_case(settings, 20 if smoke else 1000)
            if "answer" in cases and device == "cpu":  # the sweep's own processes
                rows += answer_case([2] if smoke else [2, 4, 8], 20 if smoke else 3000)
        finally:
            os.chdir(home)
    table = format_table(rows, options.device, smoke)
    print(table)
    if options.output:
        with open(options.output, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
