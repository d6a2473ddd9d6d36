"""The access log: one line per request, formatted once and written in batches.

A twisted.logger event per request cost more than the request itself (about 65-98 µs a
line: the event dict, ``flattenEvent``, ``json.dumps`` or the text formatter, a write and
a flush). Here the line's format is prepared at start-up, each request's line is one
``%`` format of only the values it names, and the lines of one loop turn are written
together after it, in writes of whole lines that stay under ``PIPE_BUF`` so that workers
sharing one pipe never interleave inside a line. Nothing is lost: the buffer is also
written when it holds ``FLUSH_LINES`` lines, when the server stops, and at exit.

Where lines go (``Config.access_log``): ``-`` is the main log. When hello-asgi set the
main log up (``twist hello-asgi``, ``python -m hello_asgi``, ``run()``), lines are written
straight to the main log's file, looking as its other lines do; embedded in a program that
set up twisted.logger itself, and with ``events``, each request is a twisted.logger event
(namespace ``hello_asgi.access``) for that program's observers, at that event's cost. A
path is a file of the access log's own.
"""

from __future__ import annotations

import atexit
import base64
import functools
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

from twisted.logger import ILogObserver, Logger, LogLevel

from .logs import json_time, this_worker, worker_tag
from .stream import client_text

if TYPE_CHECKING:
    from .loading import Scope
    from .stream import HTTPStream
    from .websocket_session import WebSocketSession

FLUSH_LINES = 512  # lines buffered before a write without waiting for the turn's end (about 64 KiB)
PIPE_BUF = 4096  # POSIX: a pipe write of at most this many bytes is never split
NAMESPACE = "hello_asgi.access"
EVENTS = "events"  # Config.access_log's word for "as twisted.logger events"

# Gunicorn's atoms (and Hypercorn's): %(h)s, %({user-agent}i)s, ...
_ATOM = re.compile(r"%\((\{[^}]*\}[ioe]|[a-zA-Z]+)\)")
GUNICORN_DEFAULT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


class Exchange(Protocol):
    """What a line is made of: a finished ``HTTPStream`` or ``WebSocketSession``, as the
    access log reads it (``bytes_sent`` and ``response_headers``, which only an HTTP
    exchange has, are read with a default)."""

    @property
    def scope(self) -> Scope: ...

    @property
    def status(self) -> int: ...

    @property
    def started_at(self) -> float: ...


class RequestLog(Protocol):
    """What the protocols call once per finished exchange: the access log, the metrics
    counter in front of it, or both. One call, whatever is listening."""

    def http(self, stream: HTTPStream) -> None:
        """An HTTP request-response exchange ended (the app returned)."""

    def websocket(self, session: WebSocketSession) -> None:
        """A WebSocket session ended."""


@dataclass
class MainLog:
    """The main log as hello-asgi's process entry points set it up (``ours``): its format,
    its level, and its file once opened (twist opens it after the service is made, so the
    access log looks it up when it writes)."""

    ours: bool = False
    output: IO[str] | None = None
    log_format: str = "text"
    level: LogLevel = LogLevel.info
    worker: int | None = None  # this worker's pid, which its lines name, under --workers or --reload


MAIN_LOG = MainLog()  # filled in by the command and run(); untouched when embedded


def main_log_is(log_format: str, level: LogLevel, output: IO[str] | None = None) -> None:
    """What the command and ``run()`` call as they set the main log up: access lines then
    go into it directly, tagged with the worker's pid in a worker, as its other lines are."""
    MAIN_LOG.ours, MAIN_LOG.log_format, MAIN_LOG.level = True, log_format, level
    MAIN_LOG.worker = this_worker()
    if output is not None:
        MAIN_LOG.output = output


class LineBuffer:
    """Lines gathered during a loop turn, written after it by one ``write`` per
    ``PIPE_BUF`` of whole lines, then flushed. The first line of a turn asks for the
    write; ``FLUSH_LINES`` lines are written at once."""

    def __init__(self, output: Callable[[], IO[str] | None], call_soon: Callable[[Callable[[], None]], Any]) -> None:
        self._output = output  # looked up at each write: twist opens the main log after the service is made
        self._call_soon = call_soon
        self._lines: list[str] = []
        atexit.register(self.flush)

    def add(self, line: str) -> None:
        lines = self._lines
        lines.append(line)
        if len(lines) == 1:
            self._call_soon(self.flush)
        elif len(lines) >= FLUSH_LINES:
            self.flush()  # the turn's own flush, still to come, finds the buffer empty or newer lines

    def flush(self) -> None:
        lines = self._lines
        if not lines:
            return
        self._lines = []
        output = self._output()
        if output is None:
            return
        text = "".join(lines)
        try:
            if len(text) <= PIPE_BUF:
                output.write(text)
            else:
                for chunk in _whole_line_chunks(lines):
                    output.write(chunk)
            output.flush()
        except (OSError, ValueError):  # a closed or broken log file must not break serving
            pass

    def close(self) -> None:
        self.flush()
        atexit.unregister(self.flush)


def _whole_line_chunks(lines: list[str]) -> list[str]:
    """``lines`` joined into pieces of at most ``PIPE_BUF`` characters, cut only between
    lines (a longer line is a piece of its own)."""
    chunks: list[str] = []
    piece: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) > PIPE_BUF and piece:
            chunks.append("".join(piece))
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    chunks.append("".join(piece))
    return chunks


class _Clock:
    """Wall-clock texts a line needs, made once a second, not once a line."""

    def __init__(self, worker: int | None = None) -> None:
        self.since = self.until = -1.0  # the second's bounds, as floats (a float compare is the cheapest)
        self._tag = f"[{NAMESPACE}#info] " + worker_tag(worker)
        self.prefix = ""  # 2026-12-05T07:40:00+0000 [hello_asgi.access#info] , as the main log's text lines begin
        self.common = ""  # [05/Dec/2026:07:40:00 +0000], the Common Log Format's

    def tick(self) -> str:
        """Bring the texts to this second; the prefix."""
        second = int(time.time())
        if second != self.since:
            self.since, self.until = float(second), second + 1.0
            local = time.localtime(second)
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S%z", local) + " " + self._tag
            self.common = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", local)
        return self.prefix


def _safe(text: str) -> str:
    """``text`` with control characters escaped: a decoded ``%0a`` in a path must not
    start a forged line of its own."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _fields(exchange: Exchange) -> dict[str, Any]:
    """The fields every access line and event carries."""
    scope = exchange.scope
    query = scope["query_string"]
    client = scope["client"]
    return {
        "client": client_text(client),
        "method": scope.get("method", "WEBSOCKET"),
        "path": scope["path"],
        "query": ("?" + query.decode("latin-1")) if query else "",
        "http_version": scope["http_version"],
        "status": exchange.status,
        "bytes_sent": getattr(exchange, "bytes_sent", 0),
        "duration": _seconds(exchange),
    }


def _target(scope: Scope) -> str:
    """The path and query string as a line shows them, control characters escaped."""
    query = scope["query_string"]
    return _safe(scope["path"] + "?" + query.decode("latin-1") if query else scope["path"])


def _header(headers: Any, name: bytes) -> str:
    values = [value.decode("latin-1") for key, value in headers if key.lower() == name]
    return _safe(", ".join(values)) if values else "-"


def _basic_user(exchange: Exchange) -> str:
    """Gunicorn's ``%(u)s``: the user of a Basic ``Authorization``, else ``-``."""
    value = _header(exchange.scope["headers"], b"authorization")
    if value[:6].lower() != "basic ":
        return "-"
    try:
        return _safe(base64.b64decode(value[6:].strip(), validate=True).decode("utf-8").split(":", 1)[0])
    except (ValueError, UnicodeDecodeError):
        return "-"


def _request_line(exchange: Exchange) -> str:
    scope = exchange.scope
    return f"{scope.get('method', 'WEBSOCKET')} {_target(scope)} HTTP/{scope['http_version']}"


def _seconds(exchange: Exchange) -> float:
    return time.monotonic() - exchange.started_at


Atom = Callable[[Exchange, _Clock], Any]

# Each atom of Gunicorn's (and Hypercorn's) access_log_format, from the finished exchange.
ATOMS: dict[str, Atom] = {
    "h": lambda e, c: e.scope["client"][0] if e.scope["client"] else "unix",
    "l": lambda e, c: "-",
    "u": lambda e, c: _basic_user(e),
    "t": lambda e, c: c.common,
    "r": lambda e, c: _request_line(e),
    "m": lambda e, c: e.scope.get("method", "WEBSOCKET"),
    "U": lambda e, c: _safe(e.scope["path"]),
    "q": lambda e, c: _safe(e.scope["query_string"].decode("latin-1")),
    "H": lambda e, c: "HTTP/" + e.scope["http_version"],
    "s": lambda e, c: e.status,
    "B": lambda e, c: getattr(e, "bytes_sent", 0),
    "b": lambda e, c: getattr(e, "bytes_sent", 0) or "-",
    "f": lambda e, c: _header(e.scope["headers"], b"referer"),
    "a": lambda e, c: _header(e.scope["headers"], b"user-agent"),
    "T": lambda e, c: int(_seconds(e)),
    "M": lambda e, c: int(_seconds(e) * 1000),
    "D": lambda e, c: int(_seconds(e) * 1_000_000),
    "L": lambda e, c: "%.6f" % _seconds(e),
    "p": lambda e, c: f"<{os.getpid()}>",
    "S": lambda e, c: e.scope["scheme"],
}


def _atom(name: str) -> Atom:
    """The getter for one atom name, ``{header}i`` and ``{header}o`` and ``{VAR}e`` included."""
    if name in ATOMS:
        return ATOMS[name]
    if name.startswith("{") and name[-2] == "}" and name[-1] in "ioe":
        key, kind = name[1:-2], name[-1]
        if kind == "i":
            field = key.lower().encode("latin-1")
            return lambda e, c: _header(e.scope["headers"], field)
        if kind == "o":
            field = key.lower().encode("latin-1")
            return lambda e, c: _header(getattr(e, "response_headers", ()), field)
        return lambda e, c: os.environ.get(key, "-")
    raise ValueError(f"unknown access log atom %({name})s; see --help for the atoms")


def prepared_format(log_format: str) -> Callable[[Exchange, _Clock], str]:
    """A Gunicorn-style format made into a function of the finished exchange, which
    works out only the atoms the format names."""
    names = list(dict.fromkeys(_ATOM.findall(log_format)))
    getters = [(name, _atom(name)) for name in names]
    try:
        log_format % {name: "" for name in names}
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"access log format {log_format!r} cannot be used: {error}") from None

    def line(exchange: Exchange, clock: _Clock) -> str:
        return log_format % {name: get(exchange, clock) for name, get in getters}

    return line


def _message(exchange: Exchange, fields: dict[str, Any]) -> str:
    """The access line of ``fields`` (``_fields(exchange)``), as JSON and events carry it."""
    return (_HTTP_MESSAGE if "method" in exchange.scope else _WEBSOCKET_MESSAGE) % fields


_HTTP_MESSAGE = '%(client)s - "%(method)s %(path)s%(query)s HTTP/%(http_version)s" %(status)d %(bytes_sent)d %(duration).3fs'
_WEBSOCKET_MESSAGE = '%(client)s - "WEBSOCKET %(path)s%(query)s HTTP/%(http_version)s" %(status)d %(duration).3fs'


def json_access_line(exchange: Exchange, worker: int | None = None) -> str:
    """One JSON object: the main JSON log's keys (``time``, ``level``, ``namespace``,
    ``message``, ``worker`` in a worker) and the access fields."""
    fields = _fields(exchange)
    message = _message(exchange, fields)
    record = {
        "time": json_time(time.time()),
        "level": "info",
        "namespace": NAMESPACE,
        "message": message,
        **({"worker": worker} if worker is not None else {}),
        **fields,
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


# Texts made once, not once a line: turning an int or a float into text is most of what a
# line costs (an int about 500 instructions, a float with ``.3f`` about 1,200).
_STATUS_TEXT = [f"{status} " for status in range(600)]  # 0: the app answered nothing
_DURATION_TEXT = [f"{ms / 1000:.3f}s\n" for ms in range(1000)]  # to the nearest millisecond
CLIENTS_KEPT = 1024  # clients whose text is kept (forgotten all at once beyond it)


class AccessLog:
    """hello-asgi's own line, as the main log's text lines look, into a ``LineBuffer``:
    ``<time> [hello_asgi.access#info] 127.0.0.1:51234 - "GET /items?page=2 HTTP/1.1" 200
    1234 0.004s``, for a WebSocket ``... "WEBSOCKET /chat HTTP/1.1" 101 3.216s``. One
    format of the values: this runs once a request."""

    def __init__(self, buffer: LineBuffer, worker: int | None = None) -> None:
        self.buffer = buffer
        self._add = buffer.add
        self._clock = _Clock(worker)
        self._clients: dict[Any, str] = {}  # scope["client"] -> its text, up to the request's method

    def http(self, stream: HTTPStream) -> None:
        # What client_text(), _target() and _Clock.tick() do, written out here, and the
        # texts of the client, status and duration looked up rather than made: this runs for
        # every request (callgrind: 12.5k instructions a line before these, 8.9k after).
        scope = stream.scope
        path = scope["path"]
        query = scope["query_string"]
        if query:
            path += "?" + query.decode("latin-1")
        if not path.isprintable():
            path = path.encode("unicode_escape").decode("ascii")
        clock = self._clock
        if not clock.since <= time.time() < clock.until:  # a new second, or the clock set back
            clock.tick()
        try:
            where = self._clients[scope["client"]]
        except (KeyError, TypeError):  # a client not seen lately (or an app's list, unhashable)
            where = self._client_text(scope["client"])
        ms = int((time.monotonic() - stream.started_at) * 1000 + 0.5)
        duration = _DURATION_TEXT[ms] if ms < 1000 else f"{ms / 1000:.3f}s\n"
        self._add(f'{clock.prefix}{where}{scope["method"]} {path} HTTP/{scope["http_version"]}" '
                  f'{_STATUS_TEXT[stream.status]}{stream.bytes_sent} {duration}')

    def _client_text(self, client: Any) -> str:
        """The client's part of a line, kept for its next requests if it can be a key."""
        text = f'{client_text(client)} - "'
        if type(client) is tuple or client is None:
            if len(self._clients) >= CLIENTS_KEPT:
                self._clients.clear()
            self._clients[client] = text
        return text

    def websocket(self, session: WebSocketSession) -> None:
        scope = session.scope
        self._add(f'{self._clock.tick()}{client_text(scope["client"])} - "WEBSOCKET {_target(scope)} '
                  f'HTTP/{scope["http_version"]}" {session.status} {_seconds(session):.3f}s\n')

    def close(self) -> None:
        self.buffer.close()


class FormattedAccessLog(AccessLog):
    """A line of another format: Gunicorn's atoms, or JSON."""

    def __init__(self, buffer: LineBuffer, log_format: str, worker: int | None = None) -> None:
        super().__init__(buffer, worker)
        self._line: Callable[[Exchange], str]
        if log_format == "json":
            self._line = functools.partial(json_access_line, worker=worker)
        else:
            line, clock = prepared_format(log_format), self._clock

            def custom(exchange: Exchange) -> str:
                clock.tick()
                return line(exchange, clock) + "\n"

            self._line = custom

    def http(self, stream: HTTPStream) -> None:
        self.buffer.add(self._line(stream))

    def websocket(self, session: WebSocketSession) -> None:
        self.buffer.add(self._line(session))


class EventLog:
    """Each exchange as a twisted.logger event, for a program's own observers: what the
    access log was before it was buffered, at the same cost (tens of µs a request)."""

    def __init__(self, observer: ILogObserver | None = None) -> None:
        self._logger = Logger(namespace=NAMESPACE, observer=observer)

    def http(self, stream: HTTPStream) -> None:
        self._event(stream)

    def websocket(self, session: WebSocketSession) -> None:
        self._event(session)

    def _event(self, exchange: Exchange) -> None:
        fields = _fields(exchange)
        self._logger.info("{access_line}", access_line=_message(exchange, fields), **fields)

    def close(self) -> None:
        pass


def writing(buffer: LineBuffer, log_format: str | None, worker: int | None = None) -> AccessLog:
    """An access log of ``log_format`` (``None``: hello-asgi's own line) into ``buffer``."""
    return FormattedAccessLog(buffer, log_format, worker) if log_format else AccessLog(buffer, worker)


def access_log(target: str | None, log_format: str | None, call_soon: Callable[[Callable[[], None]], Any],
               observer: ILogObserver | None = None, main_log: MainLog = MAIN_LOG) -> AccessLog | EventLog | None:
    """The access log ``Config.access_log`` asks for (see the module's docstring)."""
    if target is None:
        return None
    if observer is not None or target == EVENTS:
        return EventLog(observer)
    if target != "-":
        output = open(target, "a", encoding="utf-8")
        return writing(LineBuffer(lambda: output, call_soon), log_format)
    if not main_log.ours:  # embedded: the program's twisted.logger is the main log
        return EventLog()
    if main_log.level > LogLevel.info:  # --log-level warn and above leave access lines out
        return None
    if main_log.log_format == "json" and not log_format:
        log_format = "json"
    return writing(LineBuffer(lambda: main_log.output, call_soon), log_format, main_log.worker)
