"""One HTTP exchange as an ASGI ``http`` scope with ``receive`` and ``send``.

Written once for every HTTP version: a connection protocol feeds request events in
(``feed_body``, ``end_body``, ``disconnect``) and serialises what comes out through the
small ``ResponseWriter`` interface it implements. This module owns the ASGI rules: the
scope's keys, the order of messages, what ``receive`` returns when, and what happens
when the app raises.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from .known_good import KnownGood
from .loading import ASGIApp, Message, Scope
from .proxy import TrustedProxies, apply_forwarded
from .wire import Headers as Headers  # the one definition; http1, http2 and resource take it from here

log = Logger(namespace="hello_asgi.app")

SPEC_VERSION = "2.5"

# Response states.
_AWAITING_START, _STARTED, _STREAMING, _TRAILERS, _DONE = range(5)

_DISCONNECT: Message = {"type": "http.disconnect"}
_is_token = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_has_forbidden = re.compile(rb"[\x00\r\n]").search


NO_BODY_STATUSES = frozenset({204, 304})
FILE_CHUNK = 256 * 1024  # pathsend read where the file cannot go by os.sendfile
_MAX_LENGTH_DIGITS = 18  # a Content-Length beyond 10**18 bytes is no real length


# Response header fields found good: an app sends the same few again and again.
_good_fields: KnownGood[tuple[bytes, bytes]] = KnownGood(most=512, longest=100)


def checked_headers(headers: Iterable[tuple[object, object]]) -> Headers:
    """The app's response headers as a list, refusing what would corrupt the framing."""
    checked = []
    for name, value in headers:
        if type(name) is not bytes or type(value) is not bytes:
            raise TypeError(f"response header names and values must be bytes: {name!r}: {value!r}")
        field = name, value
        if field not in _good_fields:
            _check_field(field)
        checked.append(field)
    return checked


def _check_field(field: tuple[bytes, bytes]) -> None:
    name, value = field
    if not _is_token(name):
        raise ValueError(f"invalid response header name {name!r}")
    if _has_forbidden(value):
        raise ValueError(f"response header {name!r} has a CR, LF or NUL in its value")
    _good_fields.remember(field, len(value))


def checked_response(status: object, headers: Iterable[tuple[object, object]]) -> tuple[Headers, int | None]:
    """An ``http.response.start``'s headers as they may go on the wire, and its declared
    Content-Length; ``ValueError`` for a response no client could read right.

    Written once for every protocol: a status outside 200-599 (1xx go as their own
    messages), a Content-Length that is not one plain number (``abc``, ``-1``, ``+5``,
    ``5,5``, or two of them) are refused; a Content-Length on a 204, which RFC 9110
    section 8.6 forbids, is dropped.
    """
    if type(status) is not int or not 100 <= status <= 599:
        raise ValueError(f"'http.response.start' status must be an int from 100 to 599, not {status!r}")
    if status < 200:
        raise ValueError(f"'http.response.start' cannot send informational status {status}")
    checked = checked_headers(headers)
    lengths = [value for name, value in checked if name.lower() == b"content-length"]
    if not lengths:
        return checked, None
    value = lengths[0].strip(b" \t")
    if len(lengths) > 1 or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
        raise ValueError(f"the response's Content-Length must be one number, not {b', '.join(lengths)!r}")
    if status == 204:
        return [field for field in checked if field[0].lower() != b"content-length"], None
    return checked, int(value)


class ClientDisconnected(OSError):
    """``send()`` was called after the client went away (ASGI HTTP spec 2.4)."""


@dataclass
class RequestHead:
    """A request read by one protocol and handed to another: ``Upgrade: h2c`` makes it
    stream 1 of an HTTP/2 connection, ``Upgrade: websocket`` a WebSocket connection."""

    method: bytes
    target: bytes
    raw_path: bytes
    query_string: bytes
    headers: Headers
    settings: bytes = b""  # the HTTP2-Settings header of an h2c upgrade


class ResponseWriter(Protocol):
    """What a connection does for its streams; HTTP/1.1 and HTTP/2 each implement it."""

    def write_response(self, stream: HTTPStream, status: int, headers: Headers, body: bytes, end: bool) -> None:
        """Send the response head together with the first body chunk."""

    def write_body(self, stream: HTTPStream, body: bytes, end: bool) -> None:
        """Send more of the response body; ``end`` finishes the response."""

    def write_informational(self, stream: HTTPStream, status: int, headers: Headers) -> None:
        """Send a 1xx response: ``100 Continue`` (the app reads the body the client holds
        back) or ``103 Early Hints``."""

    def write_trailers(self, stream: HTTPStream, headers: Headers) -> None:
        """Send the trailers after the last body chunk, ending the response."""

    def push(self, stream: HTTPStream, path: str, headers: Headers) -> None:
        """Promise a pushed response for ``path`` and serve it as a request of its own."""

    def body_consumed(self, stream: HTTPStream) -> None:
        """The app drained the buffered request body: the peer may send more."""

    def drained(self, stream: HTTPStream) -> Awaitable[None] | None:
        """A waitable while the peer is not reading fast enough, else ``None``."""

    def send_file(self, stream: HTTPStream, file: BinaryIO, count: int) -> Awaitable[int] | None:
        """Send ``count`` bytes of ``file`` (an open file, at its start) as the body after the
        head, without reading it into memory (``os.sendfile``): a waitable of the bytes sent,
        or ``None`` where this connection cannot, and the stream reads and writes the file.
        Optional: a writer without it always gets the file read."""

    def abort(self, stream: HTTPStream) -> None:
        """The response cannot be completed: cut it off so the client sees it truncated."""

    def finished(self, stream: HTTPStream) -> None:
        """The app returned and the exchange is over."""


@dataclass(frozen=True, slots=True)
class ConnectionScope:
    """What every request scope of one connection shares, worked out once per connection
    at its edge (``context.ServerContext.scope_of``), so nothing here reads a transport."""

    scheme: str
    client: tuple[str, int] | None
    server: tuple[str, int] | tuple[str | None, None] | None  # (host, port), or a UNIX socket's (path, None)
    root_path: str
    state: dict[str, Any]
    asgi_version: str
    proxy: TrustedProxies | None = None  # the trust its requests' forwarding headers get, if any
    tls: dict[str, Any] | None = None  # the ASGI tls extension, on TLS connections

    @property
    def client_text(self) -> str:
        """The client as log lines name it (made when a line needs it, not kept per connection)."""
        return client_text(self.client)

    def http(self, method: str, http_version: str, raw_path: bytes, query_string: bytes, headers: Headers,
             extensions: dict[str, Any], forwarded: bool = True) -> Scope:
        """The ASGI ``http`` scope; ``path`` and ``raw_path`` include ``root_path``, as Uvicorn's do.

        ``forwarded=False`` says the request has none of ``proxy.FORWARDING_FIELDS``: there
        is nothing then for a trusted proxy's forwarding headers to change."""
        if raw_path.find(b"%") != -1:  # (cheaper than ``in``, which tries the byte as a number first)
            path = unquote_to_bytes(raw_path).decode("utf-8", "replace")
        else:
            path = raw_path.decode("utf-8", "replace")
        root_path = self.root_path
        if root_path:
            path = root_path + path
            raw_path = root_path.encode() + raw_path
        scope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": SPEC_VERSION},
            "http_version": http_version,
            "method": method,
            "scheme": self.scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": query_string,
            "root_path": root_path,
            "headers": headers,
            "client": self.client,
            "server": self.server,
            "state": self.state.copy(),
            "extensions": extensions,
        }
        if self.tls is not None:
            extensions["tls"] = self.tls
        if self.proxy is not None and forwarded:
            apply_forwarded(scope, self.proxy)
        return scope

    def websocket(self, http_version: str, raw_path: bytes, query_string: bytes, headers: Headers,
                  subprotocols: list[str]) -> Scope:
        """The ASGI ``websocket`` scope: the ``http`` one's keys, less ``method``, plus ``subprotocols``."""
        scope = self.http("GET", http_version, raw_path, query_string, headers, {"websocket.http.response": {}})
        del scope["method"]
        scope["type"] = "websocket"
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
        scope["subprotocols"] = subprotocols
        return scope


def client_text(client: tuple[str, int] | None) -> str:
    """How log lines name a client: ``host:port``, or ``unix``."""
    return f"{client[0]}:{client[1]}" if client else "unix"


def extensions(early_hints: bool, trailers: bool, push: bool = False) -> dict[str, dict[str, object]]:
    """The ASGI extensions a request's scope offers, from what its protocol can do for it:
    103 Early Hints, response trailers (for a client that takes them), server push. (The
    keys are this module's to write; it adds ``pathsend`` and ``tls`` itself. Positional,
    and the common case first: HTTP/1.1 calls it once a request.)"""
    if not (trailers or push):
        return {"http.response.early_hint": {}} if early_hints else {}
    offered: dict[str, dict[str, object]] = {"http.response.early_hint": {}} if early_hints else {}
    if trailers:
        offered["http.response.trailers"] = {}
    if push:
        offered["http.response.push"] = {}
    return offered


def wants_continue(headers: Headers) -> bool:
    """Whether the client waits for ``100 Continue`` before it sends the body."""
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in headers)


def cancel_apps(streams: Iterable[HTTPStream]) -> list[asyncio.Task[None]]:
    """Cancel the app calls still running for ``streams`` (shutdown ran out of time)."""
    tasks = [stream.task for stream in streams if stream.task is not None and not stream.task.done()]
    for task in tasks:
        task.cancel()
    return tasks


class HTTPStream:
    """The ASGI side of one request: its scope, its body queue and its response state.

    One is made per request, and HTTP/2 holds up to ``h2_max_concurrent_streams`` of them
    per connection: slots, not a dict (``tests/test_idle_memory.py`` holds them so)."""

    __slots__ = ("_body", "_body_returned", "_headers", "_state", "_trailers", "_waiter", "_writer", "body_complete",
                 "buffered", "bytes_received", "bytes_sent", "disconnected", "expect_continue", "keep_alive",
                 "length_left", "scope", "started_at", "status", "task", "timed_out", "trailers")

    def __init__(self, scope: Scope, writer: ResponseWriter, body_complete: bool) -> None:
        self.scope = scope
        self._writer = writer
        self._state = _AWAITING_START
        self._headers: Headers = []
        self._trailers: Headers = []
        self._body: list[bytes] = []
        self.buffered = 0
        self.body_complete = body_complete
        self._body_returned = False
        self.disconnected = False
        self._waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.started_at = time.monotonic()
        self.status = 0
        self.bytes_sent = 0
        self.bytes_received = 0  # request body bytes read off the wire, for the metrics
        self.expect_continue = False
        self.trailers = False  # the app said it will send http.response.trailers
        self.keep_alive = True  # HTTP/1.1: the client lets the connection carry another request
        self.timed_out = False  # the app ran past the request timeout and was cancelled
        self.length_left: int | None = None  # body bytes the response's Content-Length still promises, if any
        scope["extensions"]["http.response.pathsend"] = {}  # every writer serves it (_send_path)

    @property
    def response_started(self) -> bool:
        return self._state != _AWAITING_START

    @property
    def response_done(self) -> bool:
        return self._state == _DONE

    @property
    def response_headers(self) -> Headers:
        """The headers of the app's ``http.response.start``, for the access log's ``%({name}o)s``."""
        return self._headers

    # Events from the connection.

    def feed_body(self, data: bytes) -> None:
        if self._state == _DONE or self.disconnected:
            return  # nobody will read it: drop rather than buffer
        self._body.append(data)
        self.buffered += len(data)
        self.bytes_received += len(data)
        self._wake()

    def end_body(self) -> None:
        self.body_complete = True
        self._wake()

    def drop_body(self) -> None:
        """Forget the request body buffered and not read: the response is complete."""
        self._body.clear()
        self.buffered = 0

    def disconnect(self) -> None:
        """The client is gone (connection lost, stream reset or request unreadable)."""
        self.disconnected = True
        self._body.clear()
        self.buffered = 0
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # The app's side.

    async def run(self, app: ASGIApp, timeout: float | None = None) -> None:
        """Call the app, and turn whatever it does wrong into a 500 or a cut response; an app
        still busy after ``timeout`` seconds is cancelled, and its client gets a 504."""
        timer = None
        if timeout is not None:
            timer = asyncio.get_running_loop().call_later(timeout, self._time_out, asyncio.current_task())
        try:
            await app(self.scope, self.receive, self.send)
        except (asyncio.CancelledError, GeneratorExit):
            if not self.timed_out:
                self._fail()  # the server is cutting this request off (shutdown); nothing to log
                raise
            log.warn("ASGI app took more than {timeout} s over {method} {path}; cancelled", timeout=timeout,
                     method=self.scope["method"], path=self.scope["path"])
            self._fail()
        except BaseException as error:
            if not isinstance(error, ClientDisconnected):  # else the app just noticed the client left
                log.failure(
                    "Exception in ASGI app for {method} {path}",
                    failure=Failure(error),
                    method=self.scope["method"],
                    path=self.scope["path"],
                    level=LogLevel.error,
                )
            self._fail()
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if self._state != _DONE and not self.disconnected:
                log.error(
                    "ASGI app returned without completing the response to {method} {path}",
                    method=self.scope["method"],
                    path=self.scope["path"],
                )
                self._fail()
        finally:
            if timer is not None:
                timer.cancel()
            self._writer.finished(self)

    def _time_out(self, task: asyncio.Task[None] | None) -> None:
        if task is not None and not task.done() and self._state != _DONE and not self.disconnected:
            self.timed_out = True
            task.cancel()

    def _fail(self) -> None:
        if self.disconnected or self._state == _DONE:
            return
        if self._state in (_AWAITING_START, _STARTED):  # nothing written: the held head can become a 500
            self._state = _DONE
            self.status, body = (504, b"Gateway Timeout") if self.timed_out else (500, b"Internal Server Error")
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
            self._writer.write_response(self, self.status, headers, body, True)
            self.bytes_sent = len(body)
        else:
            self._state = _DONE
            self._writer.abort(self)

    async def receive(self) -> Message:
        while True:
            if self._body:
                data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
                self._body.clear()
                self.buffered = 0
                self._writer.body_consumed(self)
                more = not self.body_complete
                self._body_returned = not more
                return {"type": "http.request", "body": data, "more_body": more}
            if self.disconnected or self._state == _DONE:
                return _DISCONNECT
            if self.body_complete and not self._body_returned:
                self._body_returned = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.expect_continue:
                self.expect_continue = False
                if self._state == _AWAITING_START:
                    self._writer.write_informational(self, 100, [])
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter

    async def send(self, message: Message) -> None:
        """Carry out one message of the app's response. A body chunk (every response has
        one, a streamed one many) is handled first; ``http.response.pathsend`` waits on its
        file; every other kind has a small method of its own, found by type in ``_SENDERS``."""
        message_type = message["type"]
        if self.disconnected:
            if message_type == "http.disconnect":
                return
            raise ClientDisconnected(f"client disconnected; cannot send {message_type!r}")
        if message_type == "http.response.body":
            waiting = self._send_body(message)
            if waiting is not None:
                await waiting
                if self.disconnected:
                    raise ClientDisconnected("client disconnected while the response was sent")
        elif message_type == "http.response.pathsend":
            await self._send_path(self._state, message["path"])
        else:
            _SENDERS.get(message_type, HTTPStream._send_unexpected)(self, message)

    def _send_body(self, message: Message) -> Awaitable[None] | None:
        """``http.response.body``: the head goes with the first chunk; a waitable while the
        client is slow to read a response that has more to come."""
        state = self._state
        if state != _STREAMING and state != _STARTED:
            raise RuntimeError(
                f"'http.response.body' sent {'before' if state == _AWAITING_START else 'after'} "
                "the response was started/finished"
            )
        body = message.get("body", b"")
        more = message.get("more_body", False)
        left = self.length_left
        if left is not None:
            self._count_body(left, len(body), more)
        self._state = _STREAMING if more else _TRAILERS if self.trailers else _DONE
        self.bytes_sent += len(body)
        if state == _STARTED:
            self._writer.write_response(self, self.status, self._headers, body, not more and not self.trailers)
        else:
            self._writer.write_body(self, body, not more and not self.trailers)
        return self._writer.drained(self) if more else None

    def _send_start(self, message: Message) -> None:
        """``http.response.start``: checked and held until the first body chunk, which it goes with."""
        if self._state != _AWAITING_START:
            raise RuntimeError("'http.response.start' sent twice")
        status = message["status"]
        self._headers, length = checked_response(status, message.get("headers", ()))
        if status not in NO_BODY_STATUSES and self.scope["method"] != "HEAD":
            self.length_left = length
        self.status = status
        self.trailers = bool(message.get("trailers", False))
        self._state = _STARTED

    def _send_trailers(self, message: Message) -> None:
        """``http.response.trailers``: gathered until the last of them, then sent, ending the response."""
        if self._state != _TRAILERS:
            raise RuntimeError("'http.response.trailers' sent without 'trailers' in the start, or before the body")
        self._trailers += checked_headers(message.get("headers", ()))
        if not message.get("more_trailers", False):
            self._state = _DONE
            self._writer.write_trailers(self, self._trailers)

    def _send_early_hint(self, message: Message) -> None:
        """``http.response.early_hint``: a 103 with the links, where the protocol offers it."""
        if self._state not in (_AWAITING_START, _STARTED):
            raise RuntimeError("'http.response.early_hint' sent after the response began")
        if "http.response.early_hint" in self.scope["extensions"]:
            links = message.get("links", ())
            self._writer.write_informational(self, 103, checked_headers((b"link", link) for link in links))

    def _send_push(self, message: Message) -> None:
        """``http.response.push``: a pushed response, where the protocol offers it."""
        if "http.response.push" in self.scope["extensions"]:
            self._writer.push(self, message["path"], checked_headers(message.get("headers", ())))

    def _send_nothing(self, message: Message) -> None:
        """``http.disconnect``: some apps echo it back; it asks nothing of the server."""

    def _send_unexpected(self, message: Message) -> None:
        raise RuntimeError(f"unexpected ASGI message {message['type']!r} in an HTTP exchange")

    async def _send_path(self, state: int, path: str) -> None:
        """The ``http.response.pathsend`` extension: the file at ``path`` is the whole body.

        The file is opened here, so a missing one is the app's error (a 500); its size is
        held to the response's Content-Length, or becomes it. Over cleartext HTTP/1.1 the
        kernel sends it (``os.sendfile``); elsewhere it is read in ``FILE_CHUNK`` pieces,
        each written once the client has taken the one before. It is closed whatever happens.
        """
        if state != _STARTED:
            raise RuntimeError(
                f"'http.response.pathsend' sent {'before' if state == _AWAITING_START else 'after'} "
                "the response was started/its body began"
            )
        with open(path, "rb", buffering=0) as file:
            size = self._file_length(os.fstat(file.fileno()).st_size)
            if not size:
                self._state = _TRAILERS if self.trailers else _DONE
                self._writer.write_response(self, self.status, self._headers, b"", self._state == _DONE)
                return
            self._writer.write_response(self, self.status, self._headers, b"", False)
            self._state = _STREAMING
            send_file = getattr(self._writer, "send_file", None)
            sending = send_file(self, file, size) if send_file is not None else None
            sent = await sending if sending is not None else await self._read_out(file, size)
            self.bytes_sent += sent
            if self.disconnected:
                raise ClientDisconnected("client disconnected while the file was sent")
            if sent < size:
                raise RuntimeError(f"{path!r} ended {size - sent} bytes short of its size when it was opened")
        self._state = _TRAILERS if self.trailers else _DONE
        self._writer.write_body(self, b"", self._state == _DONE)

    def _file_length(self, size: int) -> int:
        """Hold a file of ``size`` bytes to the response's Content-Length, or make it the
        Content-Length (a HEAD's too); the bytes of it to send."""
        left = self.length_left
        if left is not None:
            self._count_body(left, size, False)
        elif not self.trailers and self.status not in NO_BODY_STATUSES \
                and not any(name.lower() == b"content-length" for name, _ in self._headers):
            self._headers.append((b"content-length", b"%d" % size))
        if self.status in NO_BODY_STATUSES or self.scope["method"] == "HEAD":
            return 0  # the head alone
        return size

    async def _read_out(self, file: BinaryIO, size: int) -> int:
        """Write ``size`` bytes of ``file`` as body chunks, each once the client took the last;
        the bytes written (fewer: the file ended early, or the client left)."""
        sent = 0
        writer = self._writer
        while sent < size and not self.disconnected:
            chunk = file.read(min(FILE_CHUNK, size - sent))
            if not chunk:
                break
            sent += len(chunk)
            writer.write_body(self, chunk, False)
            waiting = writer.drained(self)
            if waiting is not None:
                await waiting
        return sent

    def _count_body(self, left: int, size: int, more: bool) -> None:
        """Hold the body to its Content-Length (``left`` of it still promised): an app that
        sends more, or ends with less, raises here before anything of this message is
        written (its error then becomes a 500, or a cut response once the head is out:
        never a clean end on a wrong length)."""
        left -= size
        if left < 0 or (left and not more):
            raise RuntimeError(
                f"the ASGI app sent {'more' if left < 0 else 'less'} body than its Content-Length "
                f"promised ({'%d bytes over' % -left if left < 0 else '%d bytes short' % left})"
            )
        self.length_left = left


# The messages ``HTTPStream.send`` hands on by type (the body and pathsend it handles itself).
_SENDERS: dict[str, Callable[[HTTPStream, Message], None]] = {
    "http.response.start": HTTPStream._send_start,
    "http.response.trailers": HTTPStream._send_trailers,
    "http.response.early_hint": HTTPStream._send_early_hint,
    "http.response.push": HTTPStream._send_push,
    "http.disconnect": HTTPStream._send_nothing,
}
