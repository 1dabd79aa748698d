"""`mtfilter fit --help`: mtfilter's own options (model, data, convergence, checkpoint, ...)
without the ~70 options of Lightning's Trainer, which `--help all` adds back. Made from the full
help text, so that it shows exactly what LightningCLI documents."""

import contextlib
import io
from collections.abc import Callable
from typing import Any

HELP_FLAGS = ("-h", "--help")


def wants_help(args: list[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in args)


def print_help(command: str, args: list[str], run: Callable[[list[str]], Any]) -> int:
    """Print `command`'s help: short, or in full after `--help all`."""
    full = any(
        arg in HELP_FLAGS and after == "all" for arg, after in zip(args, args[1:], strict=False)
    )
    args = [arg for index, arg in enumerate(args)
            if not (arg == "all" and index > 0 and args[index - 1] in HELP_FLAGS)]  # fmt: skip
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        run(args)  # the help action prints and exits
    print(text.getvalue() if full else shorten(text.getvalue(), command), end="")
    return 0


def shorten(help_text: str, command: str) -> str:
    """The help without its usage block and without the sections of `trainer.*` options."""
    sections: list[list[str]] = []
    current: list[str] = []
    for line in help_text.splitlines():
        if line and not line[0].isspace() and current:  # a section title at column 0
            sections.append(current)
            current = []
        current.append(line)
    sections.append(current)
    kept, trainer = [], 0
    for section in sections:
        options = [line.split()[0] for line in section[1:] if line.startswith("  -")]
        if section[0].startswith("usage:"):
            continue
        if options and all(option.startswith("--trainer") for option in options):
            trainer += len(options)
            continue
        kept.append("\n".join(section).rstrip())
    header = f"usage: mtfilter {command} [--config FILE] [--KEY VALUE ...]"
    footer = (
        f"Lightning's Trainer: {trainer} more options (trainer.*, e.g. --trainer.max_epochs, "
        f"--trainer.accelerator): `mtfilter {command} --help all` lists every option."
    )
    return "\n\n".join([header, *kept, footer]) + "\n"
