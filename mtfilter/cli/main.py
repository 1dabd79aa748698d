"""The `mtfilter` command: dispatches to `fit`/`validate`/`test`/`predict` (LightningCLI, see
`mtfilter.train.cli`) and to `sweep`/`report`, and turns every user mistake into one line.

Exit status: 0 done; 1 a run failed (e.g. a NaN loss); 2 bad input (nothing was run or
written); 128 + N stopped by signal N: 130 Ctrl-C, 143 SIGTERM (a scheduler's time limit or
preemption), 129 SIGHUP, 138/140 SIGUSR1/2 (a fit stopped cleanly and resumes exactly from its
`last.ckpt`; a sweep can be run again to go on).

Heavy imports (torch, Lightning) happen inside the commands that need them, so `mtfilter
--help` and `mtfilter report` start in a fraction of a second.
"""

import os
import sys
import warnings
from typing import Any

from mtfilter import allocator, parse_errors
from mtfilter.cli import short_help
from mtfilter.errors import ConfigError, MtfilterError, RunAborted, RunStopped
from mtfilter.stop_signals import stopped_exit_status

LIGHTNING_COMMANDS = {
    "fit": "train a model; writes a run folder (summary, checkpoints, TensorBoard)",
    "validate": "evaluate a checkpoint on the whole dataset (eval mode)",
    "test": "the same as validate, logged as test/*",
    "predict": "write a checkpoint's per-bit probabilities to predictions.pt",
}
SWEEP_COMMANDS = {
    "sweep": "run a grid of fits (resumable, in parallel), then write its report",
    "report": "write a sweep folder's results.csv, results.md and plots",
}

USAGE = "usage: mtfilter {fit,validate,test,predict,sweep,report} [--config FILE] [options]"

HELP = "\n".join(
    [
        USAGE,
        "",
        "Multitask vs singletask learning under limited capacity, on random bit mappings.",
        "",
        "commands:",
        *(f"  {name:9s} {text}" for name, text in {**LIGHTNING_COMMANDS, **SWEEP_COMMANDS}.items()),
        "",
        "`mtfilter COMMAND --help` lists a command's options (`fit --help all`: Lightning's",
        "Trainer options too). Examples:",
        "  mtfilter fit --config configs/tiny.yaml",
        "  mtfilter sweep --config configs/sweep/quick.yaml --dry_run",
        "",
        "exit status: 0 done, 1 a run failed, 2 bad input, 128+N stopped by signal N",
        "  (130 Ctrl-C, 143 SIGTERM; resumable)",
    ]
)


class UsageError(MtfilterError, ValueError):
    """A command line that names no command, or a command that does not exist."""


def main(args: list[str] | None = None) -> None:
    """Console entry point: runs a command and exits with its status (see the module doc)."""
    args = sys.argv[1:] if args is None else list(args)
    # Idle OpenMP threads sleep instead of spinning: on a machine shared with other work (a
    # sweep's other fits, say), spinning threads take the cores those need and a 2-thread fit
    # ran 1.4x slower than with one thread (docs/benchmarks.md, "CPU threads"). Read when torch
    # loads, which is later; a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    allocator.keep_freed_memory()  # no page faults from each step's new tensors
    try:
        status = run(args)
        _close_process_group()
    except RunAborted as error:
        print(f"mtfilter: {error}", file=sys.stderr)
        status = 130
    except RunStopped as error:  # inside an epoch; resumable from last.ckpt
        print(f"mtfilter: {error}", file=sys.stderr)
        status = stopped_exit_status(error.signum)
    except KeyboardInterrupt:
        print("mtfilter: interrupted", file=sys.stderr)
        status = 130
    except BrokenPipeError:  # `mtfilter --help | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 0
    except MtfilterError as error:
        print(f"mtfilter: error: {error}", file=sys.stderr)
        if isinstance(error, ValueError):  # bad input: say where the options are
            command = next((a for a in args if a in _all_commands()), None)
            print(f"see `mtfilter {command or ''} --help`".replace("  ", " "), file=sys.stderr)
        status = 2 if isinstance(error, ValueError) else 1
    sys.exit(status)


def run(args: list[str]) -> int:
    """Run the command line `args` (without the program name); returns the exit status.
    Errors propagate as exceptions (`MtfilterError` for the user's)."""
    if not args or args[0] in ("-h", "--help"):
        print(HELP)
        return 0 if args else 2
    command = args[0]
    if command not in _all_commands():
        close = parse_errors.did_you_mean(command, list(_all_commands()))
        raise UsageError(f"unknown command {command!r}{close}")
    for path in parse_errors.config_files(args):
        problem = parse_errors.check_config_file(path)
        if problem:
            raise ConfigError(problem)
    if command in SWEEP_COMMANDS:
        from mtfilter.cli.sweep_report import sweep_or_report

        return sweep_or_report(args)
    if short_help.wants_help(args):
        return short_help.print_help(command, args, cli_main)
    return cli_main(args).exit_status


def cli_main(args: list[str] | None = None) -> Any:
    """Run a Lightning command (`fit`, `validate`, ...) in-process (tests, notebooks) and return
    the `MtfilterCLI`; errors propagate as exceptions."""
    from mtfilter.train.cli import MtfilterCLI

    with warnings.catch_warnings():
        # LightningCLI warns when given `args` while sys.argv holds arguments too: the console
        # entry point passes sys.argv's own arguments on.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return MtfilterCLI(args=args)


def _close_process_group() -> None:
    """Lightning leaves a DDP process group open; at interpreter exit gloo's threads then abort
    a process now and then ("terminate called without an active exception", exit -6)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def _all_commands() -> dict[str, str]:
    return {**LIGHTNING_COMMANDS, **SWEEP_COMMANDS}
