"""One WSGI call in a worker thread, and the channel it talks to the loop through.

The thread runs the app, ``start_response``, ``write()`` and the response iterable, and
posts ASGI messages to the loop; the loop (``wsgi.py``) sends them with the exchange's
``send()`` and answers the thread's two questions: the next chunk of the request body,
and whether what was posted so far has gone out (so a slow client slows the app).
"""

from __future__ import annotations

import asyncio
import enum
import os
import queue
import re
import stat
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Literal, Protocol

from .loading import Message, Scope
from .stream import ClientDisconnected
from .wsgi_environ import build_environ
from .wsgi_io import ErrorStream, InputStream
from .wsgi_pool import Waker

class CallSource(Protocol):
    """What a call needs of its ``wsgi.WSGIApp`` (the app, the environ's constants,
    ``wsgi.errors``), named here so that this module need not import that one, which
    imports this."""

    app: Any
    constants: dict[str, Any]

    def errors(self, loop: asyncio.AbstractEventLoop) -> ErrorStream: ...

# What the thread posts to the loop.
SEND, MARK, READ, DONE = range(4)


class _Signal(enum.Enum):
    """The loop's answers that are not a request message (members, so that ``is`` tells
    the type checker which kind of answer it has)."""

    ACK = enum.auto()  # to MARK: everything posted before it went out
    GONE = enum.auto()  # to anything: the loop gave up on the call


ACK: Final = _Signal.ACK
_GONE: Final = _Signal.GONE

#: Response bytes a thread may post ahead of what the loop has sent: past it the thread
#: waits for the loop to send the previous window's worth, which waits while the client
#: is slow (the writer's high-water mark). A response holds at most two windows in flight.
WINDOW = 256 * 1024

_status = re.compile(r"([1-5][0-9][0-9])(?: [^\r\n\x00]*)?").fullmatch
_is_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_has_forbidden = re.compile(r"[\x00\r\n]").search
# PEP 3333: an app must not send hop-by-hop fields; the server frames the message itself.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailers", "transfer-encoding", "upgrade"})


class Channel:
    """The crossing between a worker thread and the loop task of one exchange.

    The thread posts under a lock and wakes the loop only when it waits (one
    ``call_soon_threadsafe`` for a burst of posts); the loop answers on ``replies``.
    ``gone`` is set by the loop when nothing posted can be sent any more (the client left,
    the server gave up on the request); the thread then stops at its next post or read.
    """

    __slots__ = ("_abandoned", "_finished", "_lock", "_outbox", "_release", "_waiter", "_waker", "gone", "loop",
                 "replies")

    def __init__(self, waker: Waker, release: Callable[[], None]) -> None:
        self.loop = waker.loop
        self._waker = waker
        self._release = release
        self._lock = threading.Lock()
        self._outbox: list[tuple[int, Any]] = []
        self._waiter: asyncio.Future[None] | None = None
        # Made by the thread before it first asks (most calls never do); the loop answers on it.
        self.replies: queue.SimpleQueue[Message | _Signal] | None = None
        self.gone: BaseException | None = None
        self._abandoned = False
        self._finished = False

    # The thread's side.

    def ask(self, kind: int) -> None:
        """Post a question (READ, MARK) the loop answers on ``replies``."""
        if self.replies is None:
            self.replies = queue.SimpleQueue()  # before the question: the loop's answer needs it
        self.post([(kind, None)])

    def post(self, items: list[tuple[int, Any]]) -> None:
        with self._lock:
            self._outbox += items
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._waker.call(_wake, waiter)

    def reply(self) -> Message | Literal[_Signal.ACK]:
        """Wait for the loop's next answer; ``ClientDisconnected`` once the loop gave up."""
        if self.gone is not None:
            raise ClientDisconnected("the client went away, or the server gave up on the request")
        assert self.replies is not None
        answer = self.replies.get()
        if answer is _GONE:
            raise ClientDisconnected("the client went away, or the server gave up on the request")
        return answer

    def finish(self, items: list[tuple[int, Any]], error: BaseException | None) -> None:
        """The call is over (the iterable closed): the last ``items`` and the end go to the
        loop together, or, if the loop left already, the thread's slot is given back from here."""
        with self._lock:
            self._finished = True
            abandoned = self._abandoned
            if not abandoned:
                self._outbox += items
                self._outbox.append((DONE, error))
                waiter, self._waiter = self._waiter, None
        if abandoned:
            self._waker.call(_release, self._release)
        elif waiter is not None:
            self._waker.call(_wake, waiter)

    # The loop's side.

    def take(self) -> list[tuple[int, Any]] | asyncio.Future[None]:
        """What the thread posted, or a future that resolves when it posts again."""
        with self._lock:
            batch = self._outbox
            if batch:
                self._outbox = []
                return batch
            waiter = self._waiter = self.loop.create_future()
        return waiter

    def answer(self, answer: Message | _Signal) -> None:
        assert self.replies is not None
        self.replies.put(answer)

    def fail(self, error: BaseException) -> None:
        """Nothing more can be sent: the thread's next post or read raises. (``gone`` is set
        before ``replies`` is looked at, and the thread makes ``replies`` before it looks at
        ``gone``: one of the two sees the other.)"""
        if self.gone is None:
            self.gone = error
            replies = self.replies
            if replies is not None:
                replies.put(_GONE)

    def abandon(self, error: BaseException) -> bool:
        """The loop task is leaving before the call ended (cancelled); True if the thread
        had already finished, so its slot is the caller's to give back."""
        self.fail(error)
        with self._lock:
            self._abandoned = True
            return self._finished


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _release(release: Callable[[], None]) -> None:
    release()


class FileWrapper:
    """``wsgi.file_wrapper``: a file the server may send by its path (``http.response.pathsend``,
    so ``os.sendfile`` over cleartext HTTP/1.1) or else reads ``blksize`` bytes at a time."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:  # any object with read()
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def path(self) -> tuple[str, int] | None:
        """The path and size of a regular file still at its start, whose path names the
        file that is open (not one renamed over it); ``None`` for anything else."""
        name = getattr(self.filelike, "name", None)
        try:
            if not isinstance(name, (str, bytes)) or self.filelike.tell() != 0:
                return None
            opened = os.fstat(self.filelike.fileno())
            named = os.stat(name)
        except (OSError, AttributeError, ValueError):
            return None
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
            return None
        return os.path.abspath(os.fsdecode(name)), opened.st_size


# start_response's statuses and header fields found good, as what goes on the wire: an
# app sends the same few again and again (bounded: a field may carry a value per request).
_good_statuses: dict[str, int] = {}
_good_fields: dict[tuple[str, str], tuple[bytes, bytes] | None] = {}  # None: hop-by-hop, dropped
_MOST_KNOWN = 512


def checked_start(status: object, headers: Any) -> tuple[int, list[tuple[bytes, bytes]], int | None]:
    """``start_response``'s arguments as an ASGI status and headers, and the Content-Length;
    ``ValueError`` naming what is wrong, before anything reaches the wire.

    Hop-by-hop fields are dropped, as Gunicorn does: the server frames the response.
    """
    code = _good_statuses.get(status) if type(status) is str else None
    if code is None:
        code = _check_status(status)
    checked = []
    length = None
    for field in headers:
        try:
            good = _good_fields[field]
        except (KeyError, TypeError):
            good = _check_field(field)
        if good is not None:
            checked.append(good)
            if good[0] == b"Content-Length" or good[0].lower() == b"content-length":
                length = int(good[1]) if good[1].strip().isdigit() else None
    return code, checked, length


def _check_status(status: object) -> int:
    if type(status) is not str or not (match := _status(status)):
        raise ValueError(f"WSGI start_response: the status must be a str of three digits and a reason, "
                         f"e.g. '200 OK', not {status!r}")
    code = int(match.group(1))
    if len(_good_statuses) < _MOST_KNOWN:
        _good_statuses[status] = code
    return code


def _check_field(field: object) -> tuple[bytes, bytes] | None:
    if type(field) is not tuple or len(field) != 2 or type(field[0]) is not str or type(field[1]) is not str:
        raise ValueError(f"WSGI start_response: each header must be a (str, str) tuple, not {field!r}")
    name, value = field
    if not _is_token(name) or _has_forbidden(value) or not value.isascii() and not _latin1(value):
        raise ValueError(f"WSGI start_response: bad header {name!r}: {value!r} (a token name, and a "
                         f"latin-1 value without CR, LF or NUL)")
    good = None if name.lower() in HOP_BY_HOP else (name.encode("latin-1"), value.encode("latin-1"))
    if len(_good_fields) < _MOST_KNOWN and len(value) <= 100:
        _good_fields[field] = good
    return good


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


class WSGICall:
    """One request's WSGI call, run by a worker thread: ``run()`` calls the app, sends what
    it returns, always calls the iterable's ``close()``, and tells the channel it finished
    (with the app's exception, if it raised)."""

    __slots__ = ("_body_ended", "_ended", "_head_sent", "_left", "_pending", "_since_mark", "_start", "_unacked",
                 "channel", "environ", "first", "head", "loop", "scope", "wsgi")

    # Most calls never change these.
    _start: tuple[int, list[tuple[bytes, bytes]], int | None] | None
    _left: int | None  # body bytes the Content-Length still allows

    def __init__(self, wsgi: CallSource, scope: Scope, channel: Channel, loop: asyncio.AbstractEventLoop,
                 first: Message | None = None) -> None:
        self.wsgi = wsgi  # the WSGIApp: the app, the environ's constants, wsgi.errors
        self.scope = scope
        self.first = first  # the request's first message, if the loop had it at once
        self.channel = channel
        self.loop = loop
        self._start = None
        self._head_sent = False
        self._ended = False
        self._pending: list[tuple[int, Any]] = []  # posts held back until more comes
        self._unacked = 0  # MARKs posted and not yet answered
        self._since_mark = 0

    def __call__(self) -> None:
        """In a worker thread: the environ, the app, its response, and the end."""
        error = None
        try:
            scope = self.scope
            self.head = scope["method"] == "HEAD"  # the body is iterated (the app may count on it) and not sent
            self._body_ended = self.first is None and not may_have_body(scope)  # not asked for one
            environ = self.environ = build_environ(scope, self.wsgi.constants)
            environ["wsgi.input"] = InputStream(self.fetch_body)
            environ["wsgi.errors"] = self.wsgi.errors(self.loop)
            self._respond()
        except BaseException as raised:  # the loop re-raises it: a 500, or a cut response
            error = raised
        pending, self._pending = self._pending, []
        self.channel.finish([] if error is not None else pending, error)

    def _respond(self) -> None:
        result = self.wsgi.app(self.environ, self.start_response)
        try:
            if isinstance(result, FileWrapper) and self._by_path(result):
                return
            if (type(result) is list or type(result) is tuple) and len(result) > 1:  # already in memory: one write
                result = [b"".join(result)]
            for item in result:
                self._write(item)
                if self._ended or self.channel.gone is not None:
                    break
            self._end()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    # What PEP 3333 gives the app.

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None,
                       ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self._head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the traceback
        elif self._start is not None:
            raise RuntimeError("WSGI start_response called a second time without exc_info (PEP 3333)")
        self._start = checked_start(status, headers)
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable: the data is posted before it returns."""
        if self.channel.gone is not None:
            raise ClientDisconnected("the client went away; cannot write")
        self._write(data)
        if self._pending:
            self._flush()

    # Sending.

    def _write(self, data: bytes) -> None:
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"a WSGI app's body must be bytes, not {type(data).__name__}")
            data = bytes(data)
        if self._start is None:
            raise RuntimeError("the WSGI app sent body before calling start_response")
        if not data or self._ended or self.head:
            return  # (a HEAD's head goes with the end, framed as Gunicorn frames it: no Transfer-Encoding)
        if not self._head_sent:
            self._send_head()
        left = self._left
        if left is not None:
            if len(data) >= left:
                data = data[:left]  # PEP 3333: never more than the Content-Length
                self._ended = True
            self._left = left - len(data)
        self._pending.append((SEND, {"type": "http.response.body", "body": data, "more_body": not self._ended}))
        if not self._ended:  # the last bytes wait for close(), to go with the end
            self._flush()
            self._flow(len(data))

    def _send_head(self) -> None:
        assert self._start is not None
        status, headers, length = self._start
        self._head_sent = True
        self._left = length
        self._pending.append((SEND, {"type": "http.response.start", "status": status, "headers": headers}))

    def _end(self) -> None:
        if self._start is None:
            raise RuntimeError("the WSGI app returned without calling start_response")
        if not self._head_sent:
            self._send_head()
        if not self._ended:
            self._ended = True
            self._pending.append((SEND, {"type": "http.response.body", "body": b"", "more_body": False}))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self.channel.post(pending)

    def _flow(self, size: int) -> None:
        """Every ``WINDOW`` bytes, ask the loop to say when they are out, and wait for the
        answer about the window before: the app runs at most two windows ahead of the client."""
        self._since_mark += size
        if self._since_mark < WINDOW:
            return
        self._since_mark = 0
        self.channel.ask(MARK)
        self._unacked += 1
        while self._unacked > 1:
            self._answer()

    def _answer(self) -> Message | Literal[_Signal.ACK]:
        """The loop's next answer that is not an ACK (those are counted), or ACK itself."""
        answer = self.channel.reply()
        if answer is ACK:
            self._unacked -= 1
        return answer

    def fetch_body(self) -> bytes | None:
        """The next chunk of the request body (``wsgi.input``), or ``None`` at its end."""
        if self._body_ended:
            return None
        message = self.first
        if message is not None:
            self.first = None
        else:
            self.channel.ask(READ)
            while (answer := self._answer()) is ACK:
                pass
            message = answer
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client went away before the request body ended")
        if not message.get("more_body", False):
            self._body_ended = True
        return message.get("body", b"") or (None if self._body_ended else b"")

    def _by_path(self, wrapper: FileWrapper) -> bool:
        """Send a wrapped file by its path, if the server and the file allow it."""
        if self._start is None or "http.response.pathsend" not in self.scope["extensions"] \
                or self._start[0] in (204, 304):
            return False
        found = wrapper.path()
        if found is None or (self._start[2] is not None and self._start[2] != found[1]):
            return False
        self._send_head()
        self._ended = True
        self._pending.append((SEND, {"type": "http.response.pathsend", "path": found[0]}))
        return True


def may_have_body(scope: Scope) -> bool:
    """Whether the request may have a body: over HTTP/1 only with a Content-Length other
    than 0 or a Transfer-Encoding (RFC 9112 section 6.3); over HTTP/2 unless its
    Content-Length is 0. ``wsgi.input`` of one that cannot is at its end without asking."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() != b"0"
        if name == b"transfer-encoding":
            return True
    return not scope["http_version"].startswith("1")
