"""The log of a process hello-asgi runs: readable text or JSON lines, one level, stdlib
``logging`` carried into it.

``twist`` alone writes text on a terminal and RFC 7464 records elsewhere, so a first run
piped into a file or journald showed machine records with no message. hello-asgi picks
the format itself: text unless ``--log-format json`` asks for one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    PredicateResult,
    eventAsText,
    formatEvent,
    formatTime,
    textFileLogObserver,
    timeFormatRFC3339,
)
from zope.interface import implementer

from .process import is_worker

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warn", "error", "critical")

# Twisted's ports say "<Factory> starting on <port>" and "(TCP Port N Closed)"; hello-asgi
# says "Serving http://..." instead, and the supervisor's sockets never serve at all.
_PORT_LINES = re.compile(r"^(\S+ starting on \S+|\(\S+ Port \S+ Closed\))$")
_STDLIB_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
                  "error": logging.ERROR, "critical": logging.CRITICAL}


def level_named(name: str) -> LogLevel:
    """``--log-level``'s word as a Twisted level (``warning`` is taken for ``warn``)."""
    name = name.lower()
    name = "warn" if name == "warning" else name
    if name not in LEVELS:
        raise ValueError(f"expected one of {', '.join(LEVELS)}, not {name!r}")
    return LogLevel.levelWithName(name)


def format_named(name: str) -> str:
    """``--log-format``'s word, checked."""
    if name not in FORMATS:
        raise ValueError(f"expected text or json, not {name!r}")
    return name


def this_worker() -> int | None:
    """This process's pid when it is a worker of ``--workers`` or ``--reload``: its log
    lines name it."""
    return os.getpid() if is_worker() else None


def worker_tag(worker: int | None) -> str:
    """What a worker's text lines carry after their namespace and level."""
    return "" if worker is None else f"[worker {worker}] "


def json_time(timestamp: float) -> str:
    """A JSON line's ``time``: ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def json_line(event: dict[str, Any], worker: int | None = None) -> str:
    """One event as one JSON object on one line: ``time`` (ISO 8601, UTC), ``level`` as a
    word, ``namespace``, the rendered ``message``, in a worker ``worker`` (its pid), the
    event's own fields, and ``traceback`` for a failure. A value JSON cannot hold is written
    as its ``repr``."""
    record: dict[str, Any] = {
        "time": json_time(event.get("log_time", 0)),
        "level": event["log_level"].name if "log_level" in event else "info",
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    if worker is not None:
        record["worker"] = worker
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and key not in ("message", "format", "isError"):
            record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, default=repr, ensure_ascii=False) + "\n"


def json_lines_observer(output: IO[str], worker: int | None = None) -> FileLogObserver:
    if worker is None:
        return FileLogObserver(output, json_line)
    return FileLogObserver(output, lambda event: json_line(event, worker))


def text_observer(output: IO[str], worker: int | None = None) -> FileLogObserver:
    """Twisted's text lines; in a worker, each says which after its namespace and level:
    ``... [hello_asgi.service#info] [worker 4711] Serving ...``. The tag is made once, here."""
    if worker is None:
        return textFileLogObserver(output)
    tag = worker_tag(worker)

    def line(event: dict[str, Any]) -> str | None:
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        if not text:
            return None
        when = formatTime(event.get("log_time"), timeFormatRFC3339)
        return f"{when} [{_system(event)}] {tag}{text}".replace("\n", "\n\t") + "\n"

    return FileLogObserver(output, line)


def _system(event: dict[str, Any]) -> str:
    """What Twisted's text lines put in brackets: ``log_system``, or namespace#level."""
    system = event.get("log_system")
    if system is not None:
        return str(system)
    level = event.get("log_level")
    return f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"


@implementer(ILogFilterPredicate)
class _DropPortLines:
    """Leaves out the lines Twisted writes for each port opened and closed."""

    def __call__(self, event: dict[str, Any]) -> PredicateResult:
        message = event.get("message")
        if event.get("log_namespace") == "log_legacy" and message and _PORT_LINES.match(str(message[0])):
            return PredicateResult.no
        return PredicateResult.maybe


_drop_port_lines = _DropPortLines()


def observer_factory(log_format: str) -> Callable[[IO[str]], ILogObserver]:
    """What ``twist``'s runner calls with its log file: the format asked for, quietened, and
    in a worker of ``--workers`` or ``--reload`` saying which (its pid)."""
    make = json_lines_observer if log_format == "json" else text_observer
    worker = this_worker()

    def observer(output: IO[str]) -> ILogObserver:
        return FilteringLogObserver(make(output, worker), [_drop_port_lines])

    return observer


def level_filter(observer: ILogObserver, level: LogLevel) -> ILogObserver:
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])


class TwistedLogHandler(logging.Handler):
    """Carries stdlib ``logging`` records (Django's, every framework's) into twisted.logger,
    under the logger's name as namespace, so they get the same format, level and file."""

    def __init__(self) -> None:
        super().__init__()
        self._loggers: dict[str, Logger] = {}

    def emit(self, record: logging.LogRecord) -> None:
        logger = self._loggers.get(record.name)
        if logger is None:
            logger = self._loggers[record.name] = Logger(namespace=record.name)
        level = _twisted_level(record.levelno)
        try:
            text = record.getMessage()
        except Exception:  # a bad %-format in someone's call must not lose the line
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            from twisted.python.failure import Failure

            failure = Failure(record.exc_info[1], record.exc_info[0], record.exc_info[2])
            logger.failure("{log_text}", failure=failure, level=level, log_text=text)
        else:
            logger.emit(level, "{log_text}", log_text=text)


def _twisted_level(number: int) -> LogLevel:
    if number >= logging.CRITICAL:
        return LogLevel.critical
    if number >= logging.ERROR:
        return LogLevel.error
    if number >= logging.WARNING:
        return LogLevel.warn
    return LogLevel.info if number >= logging.INFO else LogLevel.debug


def capture_stdlib_logging(level: str) -> None:
    """Route the root logger into twisted.logger at ``level``: one handler, replacing any
    handler a previous call put there."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, TwistedLogHandler):
            root.removeHandler(handler)
    root.addHandler(TwistedLogHandler())
    root.setLevel(_STDLIB_LEVELS[level_named(level).name])
