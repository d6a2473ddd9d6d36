"""One WebSocket as an ASGI ``websocket`` scope with ``receive`` and ``send``.

Written once for every way a WebSocket arrives (HTTP/1.1 Upgrade, HTTP/2 extended
CONNECT): the connection feeds events in (``message``, ``closed``) and carries out what
the app asks through the small ``WebSocketChannel`` interface. This module owns the ASGI
rules: the order of messages, what may be sent when, and what an app error becomes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from .loading import ASGIApp, Message, Scope
from .stream import checked_headers
from .wire import Headers

log = Logger(namespace="hello_asgi.app")

# The server's side of the handshake and the connection.
_CONNECTING, _DENYING, _OPEN, _CLOSING, _CLOSED = range(5)

_CONNECT: Message = {"type": "websocket.connect"}
# Close codes an endpoint may send, so may receive (RFC 6455 section 7.4 and the IANA registry;
# 1004 is reserved, and 1005, 1006 and 1015 are never sent).
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


class WebSocketDisconnected(OSError):
    """``send()`` was called after the WebSocket closed (ASGI WebSocket spec 2.4)."""


class WebSocketChannel(Protocol):
    """What a WebSocket connection does for its session, over HTTP/1.1 or HTTP/2."""

    def accept(self, subprotocol: str | None, headers: Headers) -> None:
        """Complete the handshake: ``101`` (HTTP/1.1) or ``200`` (HTTP/2), then frames."""

    def deny(self, status: int, headers: Headers, body: bytes) -> None:
        """Refuse the handshake with this HTTP response, then close."""

    def send_message(self, payload: bytes, binary: bool) -> None:
        """Send one data message."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake."""

    def drained(self) -> Awaitable[None] | None:
        """A waitable while the peer is not reading fast enough, else ``None``."""

    def message_taken(self) -> None:
        """The app took a queued message: reading may resume."""

    def waiting(self) -> None:
        """The app waits for a message with none queued: it has answered those before."""

    def finished(self, session: WebSocketSession) -> None:
        """The app returned."""


class WebSocketSession:
    """The ASGI side of one WebSocket: its scope, its queue of received messages, its state.

    One is kept per open WebSocket, idle ones too: slots, not a dict
    (``tests/test_idle_memory.py`` holds them so)."""

    __slots__ = ("_answering", "_channel", "_denial", "_disconnect", "_queue", "_state", "_waiter", "scope",
                 "started_at", "status", "task")

    def __init__(self, scope: Scope, channel: WebSocketChannel) -> None:
        self.scope = scope
        self._channel = channel
        self._state = _CONNECTING
        self._queue: deque[Message] = deque([_CONNECT])
        self._disconnect: Message | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._answering = False  # the app took a message and has not asked for the next yet
        self._denial: tuple[int, Headers, list[bytes]] | None = None
        self.started_at = time.monotonic()
        self.status = 0  # the HTTP status the handshake was answered with, for the access log
        self.task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Received messages the app has not taken yet."""
        return len(self._queue)

    @property
    def owes_answers(self) -> bool:
        """Whether the app has messages to answer still: queued ones, or the last it took,
        until it asks for the next."""
        return self._answering or bool(self._queue)

    @property
    def disconnected(self) -> bool:
        return self._disconnect is not None

    # Events from the connection.

    def message(self, data: str | bytes) -> None:
        if type(data) is str:
            self._queue.append({"type": "websocket.receive", "text": data})
        else:
            self._queue.append({"type": "websocket.receive", "bytes": data})
        self._wake()

    def closed(self, code: int, reason: str) -> None:
        """The connection is gone: ``code`` is the peer's (1005 when it gave none, 1006 when
        it vanished without a closing handshake)."""
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._state = _CLOSED
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # The app's side.

    async def run(self, app: ASGIApp) -> None:
        """Call the app; an error becomes a 500 before the handshake, a 1011 close after it."""
        try:
            await app(self.scope, self.receive, self.send)
        except (asyncio.CancelledError, GeneratorExit):
            self._fail(1001)  # the server is cutting this connection off (shutdown)
            raise
        except BaseException as error:
            if not isinstance(error, WebSocketDisconnected):
                log.failure("Exception in ASGI app for WebSocket {path}", failure=Failure(error),
                            path=self.scope["path"], level=LogLevel.error)
            self._fail(1011)
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if self._state in (_CONNECTING, _DENYING):
                log.error("ASGI app returned without accepting or closing the WebSocket {path}",
                          path=self.scope["path"])
                self._fail(1011)
            elif self._state == _OPEN:
                self._state = _CLOSING
                self._channel.close(1000, "")
        finally:
            self._channel.finished(self)

    def _fail(self, code: int) -> None:
        state = self._state
        if state in (_CONNECTING, _DENYING):
            self._state = _CLOSED
            self.status = 500
            self._channel.deny(500, [(b"content-type", b"text/plain; charset=utf-8")], b"Internal Server Error")
        elif state == _OPEN:
            self._state = _CLOSING
            self._channel.close(code, "")

    async def receive(self) -> Message:
        self._answering = False
        while True:
            queue = self._queue
            if queue:
                message = queue.popleft()
                self._answering = message is not _CONNECT
                self._channel.message_taken()
                return message
            if self._disconnect is not None:
                return self._disconnect
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            self._channel.waiting()  # what it calls (a message, the close) wakes the waiter
            await waiter

    async def send(self, message: Message) -> None:
        """Carry out one message of the app's. A data message on an open WebSocket, the
        message of nearly every call, is sent here; every other is handled by the method of
        the WebSocket's state (``_SENDERS``), which says what that state allows."""
        message_type = message["type"]
        if message_type == "websocket.send" and self._state == _OPEN:
            data: Any = message.get("bytes")  # exactly one of the two is given (checked next)
            text: Any = message.get("text")
            if (data is None) == (text is None):
                raise ValueError("'websocket.send' needs exactly one of 'bytes' and 'text'")
            if text is not None:
                self._channel.send_message(text.encode("utf-8"), False)
            else:
                self._channel.send_message(bytes(data), True)
            waiting = self._channel.drained()
        else:
            waiting = _SENDERS[self._state](self, message_type, message)
        if waiting is not None:
            await waiting

    def _send_open(self, message_type: str, message: Message) -> None:
        """Open, for all but a data message (``send`` sends those): the close."""
        if message_type != "websocket.close":
            raise RuntimeError(f"unexpected ASGI message {message_type!r} on an open WebSocket")
        code = message.get("code") or 1000
        if code not in SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"'websocket.close' code {code!r} cannot be sent (RFC 6455 section 7.4)")
        self._state = _CLOSING
        self._channel.close(code, message.get("reason") or "")

    def _send_connecting(self, message_type: str, message: Message) -> None:
        """Before the handshake is answered: accept it, refuse it (a close is a 403), or begin
        an HTTP response that refuses it (the denial response extension)."""
        if message_type == "websocket.accept":
            self._accept(message)
        elif message_type == "websocket.close":
            self._state = _CLOSED
            self.status = 403
            self._channel.deny(403, [(b"content-type", b"text/plain; charset=utf-8")], b"Forbidden")
        elif message_type == "websocket.http.response.start":
            status = message["status"]
            if type(status) is not int or not 200 <= status <= 999:
                raise ValueError(f"'websocket.http.response.start' status must be an int from 200 to 999, "
                                 f"not {status!r}")
            self._state = _DENYING
            self._denial = (status, checked_headers(message.get("headers") or ()), [])
        else:
            raise RuntimeError(f"{message_type!r} sent before 'websocket.accept' or 'websocket.close'")

    def _accept(self, message: Message) -> None:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in self.scope["subprotocols"]:
            raise ValueError(f"'websocket.accept' subprotocol {subprotocol!r} was not offered by the client")
        headers = checked_headers(message.get("headers") or ())
        if any(name.lower() == b"sec-websocket-protocol" for name, _ in headers):
            raise ValueError("'websocket.accept' gives the subprotocol in 'subprotocol', not in 'headers'")
        self._state = _OPEN
        self._channel.accept(subprotocol, headers)

    def _send_denying(self, message_type: str, message: Message) -> None:
        """Within a denial response: its body, until the last piece sends it all."""
        if message_type != "websocket.http.response.body":
            raise RuntimeError(f"{message_type!r} sent during a 'websocket.http.response'")
        denial = self._denial
        assert denial is not None  # set by the 'websocket.http.response.start' that entered this state
        status, headers, body = denial
        body.append(bytes(message.get("body", b"")))
        if not message.get("more_body", False):
            self._state = _CLOSED
            self.status = status
            self._channel.deny(status, headers, b"".join(body))

    def _send_closed(self, message_type: str, message: Message) -> None:
        """Closing or closed: nothing more goes, and a close after the close is harmless."""
        if message_type != "websocket.close":
            raise WebSocketDisconnected(f"the WebSocket is closed; cannot send {message_type!r}")


# ``WebSocketSession.send``'s method for each state, in the states' order.
_SENDERS: tuple[Callable[[WebSocketSession, str, Message], Awaitable[None] | None], ...] = (
    WebSocketSession._send_connecting,  # _CONNECTING
    WebSocketSession._send_denying,  # _DENYING
    WebSocketSession._send_open,  # _OPEN
    WebSocketSession._send_closed,  # _CLOSING
    WebSocketSession._send_closed,  # _CLOSED
)


def subprotocols(headers: Headers) -> list[str]:
    """The subprotocols a client offers, in its order, from all its ``Sec-WebSocket-Protocol`` fields."""
    offered = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            offered += [token.strip() for token in value.decode("latin-1").split(",") if token.strip()]
    return offered
