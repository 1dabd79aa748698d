"""`mtfilter sweep` and `mtfilter report`: their options parsed from the functions' signatures
(jsonargparse), with errors as one line naming the file they came from."""

import inspect
from collections.abc import Callable
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, DefaultHelpFormatter

from mtfilter import parse_errors
from mtfilter.errors import ConfigError

# Type names in `--help` that say what to give rather than how jsonargparse spells the type.
_READABLE_TYPES = {
    "Path_fr": "path of an existing file",
    "dict[str, list[": "mapping of key: [values], or a list of such mappings",
    "Optional[dict[str, ": "mapping of key: value",
}


class _HelpFormatter(DefaultHelpFormatter):
    def _get_type_str(self, action: Any) -> str | None:
        text = super()._get_type_str(action)
        for prefix, readable in _READABLE_TYPES.items():
            if text is not None and text.startswith(prefix):
                return readable
        return text


def sweep_or_report(args: list[str]) -> int:
    """Run `mtfilter sweep ...` or `mtfilter report ...`; returns the exit status."""
    command, rest = args[0], args[1:]
    function: Callable[..., Any]
    if command == "sweep":
        from mtfilter.sweep import sweep as function
    else:
        from mtfilter.report import report as function
    parser = _parser(command, function)
    rest = _bare_flags(rest, function)
    try:
        config = parser.parse_args(rest)
    except ArgumentError as error:
        keys = parser.get_defaults().keys()
        message = parse_errors.explain(str(error), keys, parse_errors.origin_in(rest))
        raise ConfigError(message) from None
    init = parser.instantiate_classes(config)
    names = inspect.signature(function).parameters
    kwargs = {name: init[name] for name in names if name in init}
    files = parse_errors.config_files(rest)
    try:
        result = function(**kwargs)
    except ConfigError as error:
        if not files:
            raise
        raise ConfigError(f"{files[-1]}: {error}") from None  # the sweep file it came from
    if command == "report":
        for path in result:
            print(path)
        return 0
    return int(result)


def _parser(command: str, function: Callable) -> ArgumentParser:
    parser = ArgumentParser(
        prog=f"mtfilter {command}",
        description=(inspect.getdoc(function) or "").split("\n\n")[0],
        exit_on_error=False,
        parser_mode="yaml",
        default_env=False,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="A YAML file of options.")
    # `report FOLDER` reads naturally; a sweep's required options come from its YAML file
    parser.add_function_arguments(function, as_positional=command == "report")
    return parser


def _bare_flags(args: list[str], function: Callable) -> list[str]:
    """`--dry_run` alone as `--dry_run true`: jsonargparse's booleans take a value, where a
    flag that switches something on is usually given bare."""
    flags = {f"--{name}" for name, parameter in inspect.signature(function).parameters.items()
             if parameter.annotation in (bool, "bool")}  # fmt: skip
    result = []
    for index, arg in enumerate(args):
        result.append(arg)
        following = args[index + 1] if index + 1 < len(args) else None
        if arg in flags and (following is None or following.startswith("-")):
            result.append("true")
    return result
