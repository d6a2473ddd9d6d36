"""Where options come from besides the command line: ``HELLO_ASGI_<OPTION>`` variables, an
``--env-file``, and a TOML ``--config`` file.

Each source is turned into command-line arguments for the options the sources above it
left unset, so one parser checks them all and the precedence is plain: the command line,
then the environment (an ``--env-file`` adds to it without overriding it), then the file.
``--host``, ``--port``, ``--listen``, ``--uds`` and ``--fd`` are one choice: where the
command line names any of them, lower sources' are left out.
"""

from __future__ import annotations

import getopt
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from twisted.python import usage

PREFIX = "HELLO_ASGI_"
INTERNAL = {"HELLO_ASGI_READY_FD", "HELLO_ASGI_METRICS_REPORT"}  # from a supervisor to its workers, not options
CONSUMED = ("config", "env-file")  # read here, never handed on to workers
_CONSUMED_ARGUMENTS = {"--config": True, "-c": True, "--env-file": True}
REPEATABLE = ("listen", "reload-dir", "reload-include", "reload-exclude", "header")
WHERE_TO_LISTEN = frozenset({"host", "port", "listen", "uds", "fd"})
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")

# Hypercorn's names for the settings hello-asgi also has, so its config files read here.
HYPERCORN_NAMES = {
    "bind": "listen", "keep-alive-timeout": "timeout-keep-alive", "graceful-timeout": "timeout-graceful-shutdown",
    "certfile": "cert", "keyfile": "key", "ca-certs": "ca", "accesslog": "access-log", "loglevel": "log-level",
    "websocket-max-message-size": "ws-max-size",
}


def variable_name(option: str) -> str:
    """``--timeout-keep-alive``'s variable: ``HELLO_ASGI_TIMEOUT_KEEP_ALIVE``."""
    return PREFIX + option.upper().replace("-", "_")


def options_table(options: usage.Options) -> dict[str, bool]:
    """Every long option name, and whether it takes a value."""
    return {entry.rstrip("="): entry.endswith("=") for entry in options.longOpt}


def given_on_command_line(options: usage.Options, arguments: list[str]) -> dict[str, list[str]]:
    """The long names the arguments set, each with its values (an unparsable command line
    gives none: the real parse reports it)."""
    try:
        parsed, _ = getopt.getopt(arguments, options.shortOpt, options.longOpt)
    except getopt.error:
        return {}
    given: dict[str, list[str]] = {}
    for flag, value in parsed:
        name = flag[2:] if flag.startswith("--") else options.synonyms[flag[1:]]
        given.setdefault(options.synonyms.get(name, name), []).append(value)
    return given


def load_env_file(path: str, environ: MutableMapping[str, str]) -> None:
    """Add the file's variables to the environment, leaving those already set alone."""
    try:
        from dotenv import dotenv_values
    except ImportError:
        raise usage.UsageError("--env-file needs python-dotenv: pip install 'hello-asgi[dotenv]'") from None
    if not Path(path).is_file():
        raise usage.UsageError(f"--env-file {path}: no such file")
    for name, value in dotenv_values(path).items():
        if value is not None:
            environ.setdefault(name, value)


def from_environment(table: Mapping[str, bool], environ: Mapping[str, str]) -> dict[str, list[str]]:
    """``HELLO_ASGI_*`` variables as option values; a variable that names no option is an error."""
    by_variable = {variable_name(name): name for name in table}
    found: dict[str, list[str]] = {}
    for variable, value in environ.items():
        if not variable.startswith(PREFIX) or variable in INTERNAL:
            continue
        name = by_variable.get(variable)
        if name is None:
            raise usage.UsageError(f"{variable} is not an option's variable")
        if name in CONSUMED:
            continue
        found[name] = _split(name, value) if name in REPEATABLE else [_flag_or_value(variable, value, table[name])]
    return found


def _split(name: str, value: str) -> list[str]:
    """A repeatable option's values in one variable: one header a line (values hold spaces),
    anything else separated by white space."""
    return [line.strip() for line in value.splitlines() if line.strip()] if name == "header" else value.split()


def _flag_or_value(source: str, value: Any, takes_value: bool) -> str:
    if takes_value:
        return str(value)
    word = str(value).lower()
    if word not in TRUE + FALSE:
        raise usage.UsageError(f"{source} is a flag: expected true or false, not {value!r}")
    return "true" if word in TRUE else ""


def load_config_file(path: str, table: Mapping[str, bool]) -> dict[str, list[str]]:
    """A TOML file's settings as option values: keys are option names (``-`` or ``_``),
    or Hypercorn's names for the same settings."""
    import tomllib  # imported only when a file is given
    try:
        with open(path, "rb") as file:
            settings = tomllib.load(file)
    except OSError as error:
        raise usage.UsageError(f"--config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise usage.UsageError(f"--config {path}: {error}") from None
    found: dict[str, list[str]] = {}
    for key, value in settings.items():
        name = HYPERCORN_NAMES.get(key.replace("_", "-"), key.replace("_", "-"))
        if name not in table or name in CONSUMED:
            raise usage.UsageError(f"--config {path}: {key!r} is not a setting")
        if name == "listen" and key == "bind":
            value = [_hypercorn_bind(entry) for entry in _as_list(value)]
        values = _as_list(value) if name in REPEATABLE else [value]
        found[name] = [_flag_or_value(f"{path}: {key}", entry, table[name]) for entry in values]
    return found


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _hypercorn_bind(bind: str) -> str:
    """Hypercorn's ``host:port``, ``unix:path`` or ``fd://N`` as an endpoint string."""
    if bind.startswith("unix:"):
        return bind
    if bind.startswith("fd://"):
        return f"fd:{bind[5:]}"
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"


def as_arguments(values: Mapping[str, list[str]], table: Mapping[str, bool]) -> list[str]:
    arguments: list[str] = []
    for name, entries in values.items():
        for entry in entries:
            if table[name]:
                arguments.append(f"--{name}={entry}")
            elif entry:
                arguments.append(f"--{name}")
    return arguments


def _unset(values: dict[str, list[str]], given: Iterable[str]) -> dict[str, list[str]]:
    """``values`` less those the higher sources gave (one choice of where to listen)."""
    given = set(given)
    if given & WHERE_TO_LISTEN:
        given |= WHERE_TO_LISTEN
    return {name: entries for name, entries in values.items() if name not in given}


def all_arguments(options: usage.Options, arguments: list[str], environ: MutableMapping[str, str]) -> list[str]:
    """The command line with the environment's and the config file's options before it,
    for those options it does not set itself; ``--config`` and ``--env-file`` taken out."""
    table = options_table(options)
    given = given_on_command_line(options, arguments)
    for path in given.get("env-file") or [environ.get(variable_name("env-file"), "")]:
        if path:
            load_env_file(path, environ)
    environment = _unset(from_environment(table, environ), given)
    config_path = (given.get("config") or [environ.get(variable_name("config"), "")])[-1]
    from_file = _unset(load_config_file(config_path, table), [*given, *environment]) if config_path else {}
    return [*as_arguments(from_file, table), *as_arguments(environment, table), *without(arguments, _CONSUMED_ARGUMENTS)]


def without(arguments: list[str], options: Mapping[str, bool]) -> list[str]:
    """``arguments`` less the ``options`` named (``--workers``, ``-w``: whether each takes
    a value) and their values, given as ``--name value``, ``--name=value`` or ``-w4``."""
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
            continue
        name = argument.split("=", 1)[0]
        if name in options:
            skip = options[name] and "=" not in argument
        elif not (argument[:1] == "-" and argument[1:2] != "-" and options.get(argument[:2])):  # -w4
            kept.append(argument)
    return kept


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """A worker's environment: the supervisor's, less the ``HELLO_ASGI_*`` options it has
    already resolved into the worker's command (a worker must not read ``--workers`` again)."""
    return {name: value for name, value in environ.items() if not name.startswith(PREFIX) or name in INTERNAL}
