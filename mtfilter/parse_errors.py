"""Configuration errors as one line: the key, the bad value, where it came from and the nearest
valid key, instead of jsonargparse's usage text and nested Union dumps.

jsonargparse reports problems as free text; the shapes matched here are those of jsonargparse
4.x. A message of another shape is not lost: its first line is shown as it is.
"""

import difflib
import importlib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

# Where a key was given, e.g. "in configs/mt.yaml" or "on the command line"; None if unknown.
Origin = Callable[[str], str | None]


def explain(message: str, valid_keys: Iterable[str], origin: Origin) -> str:
    """One line saying what is wrong with a configuration, from a jsonargparse error message."""
    valid = list(valid_keys)
    message = message.strip()
    unknown = _unknown_keys(message)
    if unknown:
        return "; ".join(_unknown(key, valid, origin) for key in unknown)
    keyed = re.match(r'Parser key "([^"]+)":\s*(.*)', message, re.DOTALL)
    if keyed:
        key, detail = keyed.groups()
        where = _where(origin, key)
        return f"{key}{where}: {_detail(key, detail)}"
    required = re.match(r"the following arguments are required: ([\w., ]+)", message)
    if required:
        names = [name.strip() for name in required.group(1).split(",")]
        return f"{', '.join(names)} must be set (in the config file or as --{names[0]})"
    return message.splitlines()[0]


def _unknown_keys(message: str) -> list[str]:
    found = re.match(r"unrecognized arguments: (.*)", message)
    if found:
        return [token[2:] for token in found.group(1).split() if token.startswith("--")]
    found = re.search(r"does not accept (?:option|nested key) '([^']+)'", message)
    if found:
        return [found.group(1)]
    found = re.search(r"Key '([^']+)' is not expected", message)
    return [found.group(1)] if found else []


def _unknown(key: str, valid: list[str], origin: Origin) -> str:
    key = key.split("=", 1)[0]
    return f"unknown key {key}{_where(origin, key)}{did_you_mean(key, valid)}"


def _where(origin: Origin, key: str) -> str:
    place = origin(key)
    return f" ({place})" if place else ""


def did_you_mean(key: str, valid: list[str]) -> str:
    """`: did you mean X?` with the closest valid key, or nothing when none is close."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.75)
    if not close:  # a misspelt last segment under the right prefix: model.hiden -> model.hidden_dim
        prefix, _, last = key.rpartition(".")
        siblings = {k.rpartition(".")[2]: k for k in valid if k.rpartition(".")[0] == prefix}
        close = [siblings[m] for m in difflib.get_close_matches(last, list(siblings), n=1)]
    return f": did you mean {close[0]}?" if close else ""


def _detail(key: str, detail: str) -> str:
    """The reason for a bad value, from the text after `Parser key "...":`."""
    missing_file = re.search(r"File does not exist: '([^']+)'", detail)
    if missing_file:
        return f"no such file {missing_file.group(1)}"
    not_mapping = re.match(r"Unable to load config '([^']*)'", detail.strip())
    if not_mapping:  # a plain value where a group of settings goes: `model: mt`
        example = "{layout: mt}" if key == "model" else "{name: value}"
        return (
            f"expected a mapping of {key}.* settings, got {not_mapping.group(1)!r} "
            f"(e.g. `{key}: {example}`)"
        )
    choices = re.search(r"Expected a typing\.Literal\[(.*?)\]\. Got value: (.*)", detail)
    if choices:
        options = [o.strip().strip("'\"") for o in choices.group(1).split(",")]
        value = choices.group(2).strip()
        close = difflib.get_close_matches(value, options, n=1, cutoff=0.5)
        hint = f": did you mean {close[0]}?" if close else ""
        return f"{value!r} is not one of {', '.join(options)}{hint}"
    typed = re.search(r"Expected a <class '(\w+)'>\. Got value: (.*)", detail)
    if typed:
        return f"expected {_type_name(typed.group(1))}, got {typed.group(2).strip()!r}"
    # `X | None` with a value of neither: X's name, and the value given
    optional = re.search(r"Subtypes: \[<class '(\w+)'>, <class 'NoneType'>\]", detail)
    given = re.search(r"Given value: (.*)", detail)
    if optional and given:
        return f"expected {_type_name(optional.group(1))} or null, got {given.group(1).strip()!r}"
    if "Does not validate against any of the Union subtypes" in detail:
        return _union_detail(key, detail)
    return detail.strip().splitlines()[0]


def _union_detail(key: str, detail: str) -> str:
    """The one relevant error of a Union (`X | None`) type: the non-None member's."""
    errors = [
        line.strip()[2:]
        for line in detail.splitlines()
        if line.strip().startswith("- ") and "NoneType" not in line
    ]
    text = " ".join(errors) if errors else detail
    missing_class = re.search(r"module '([\w.]+)' has no attribute '(\w+)'", text)
    if missing_class:
        module, name = missing_class.groups()
        return f"{module} has no class {name!r}{_nearest_class(module, name)}"
    problem = re.search(r"Problem with given class_path '([^']+)'", detail)
    required = re.search(r"the following arguments are required: ([\w, ]+)", detail)
    if problem and required:
        names = [n.strip() for n in required.group(1).split(",")]
        example = " ".join(f"--{key}.init_args.{n} VALUE" for n in names)
        return f"{problem.group(1)} needs {', '.join(names)} (e.g. {example})"
    if problem:
        rest = detail[problem.end() :].strip(" :\n").splitlines()
        reason = rest[0].strip() if rest else "cannot be built"
        return f"{problem.group(1)}: {reason}"
    not_class = re.search(r"Import path ([\w.]+) does not correspond to a subclass of (\w+)", text)
    if not_class:
        return f"{not_class.group(1)} is not a subclass of {not_class.group(2)}"
    no_module = re.search(r"No module named '([\w.]+)'", detail)
    if no_module:
        return f"no module named {no_module.group(1)!r}"
    return (errors[0] if errors else detail.strip().splitlines()[0]).split(". Got value")[0]


def _nearest_class(module: str, name: str) -> str:
    try:
        names = [n for n in dir(importlib.import_module(module)) if n[:1].isupper()]
    except ImportError:
        return ""
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f": did you mean {module}.{close[0]}?" if close else ""


def _type_name(name: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}.get(
        name, name
    )


def check_config_file(path: str) -> str | None:
    """Why a config file cannot be used (missing, unreadable, not YAML, not a mapping), or None.

    YAML errors name the file, line and column, which jsonargparse's do not."""
    file = Path(path)
    if file.is_dir():
        return f"config file {path} is a directory: give a YAML file"
    if not file.is_file():
        return f"config file {path} does not exist"
    try:
        content = yaml.safe_load(file.read_text())
    except OSError as error:
        return f"config file {path} cannot be read: {error.strerror}"
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        place = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return f"config file {path}{place}: not valid YAML ({problem})"
    if content is None:
        return f"config file {path} is empty: give at least one setting, or leave --config out"
    if not isinstance(content, dict):
        return f"config file {path}: expected a mapping of settings, got {type(content).__name__}"
    return None


def flat_keys(mapping: Any, prefix: str = "") -> set[str]:
    """Dotted keys of a nested mapping, every level: {'a': {'b': 1}} -> {'a', 'a.b'}."""
    keys: set[str] = set()
    if isinstance(mapping, dict):
        for key, value in mapping.items():
            dotted = f"{prefix}{key}"
            keys.add(dotted)
            keys |= flat_keys(value, dotted + ".")
    return keys


def config_files(args: list[str]) -> list[str]:
    """The config files a command line names (`--config FILE`, `-c FILE`, `--config=FILE`)."""
    files = []
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def origin_in(args: list[str]) -> Origin:
    """Where a key of this command line was set: on the command line itself, else the last
    config file that holds it."""
    files = config_files(args)

    def origin(key: str) -> str | None:
        if any(a == f"--{key}" or a.startswith((f"--{key}=", f"--{key}.")) for a in args):
            return "on the command line"
        for path in reversed(files):  # the last file given wins, as in parsing
            if key in flat_keys(_load(path)):
                return f"in {path}"
        return None

    return origin


def _load(path: str) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
