"""One HTTP/2 stream as its connection keeps it: one record from the frame that opens it to
the one call that ends it.

In the spirit of Twisted's ``H2Stream``: everything the connection knows of a stream is
here (its state, its receive window and the body bytes not yet acknowledged, the response
bytes waiting for the peer's window, the ``send()`` calls waiting for them to go, and its
ASGI side), so the connection holds one map of streams, not a dict per fact.

A stream carries a request (its ``exchange``: the ``stream.HTTPStream`` the app talks to,
for which this record is the ``ResponseWriter``) or a WebSocket (RFC 8441; its
``websocket``: an ``h2_websocket.H2WebSocket``). Both write, acknowledge and end through
``StreamOwner``, the narrow interface the connection offers its streams.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, BinaryIO, Protocol

from h2.errors import ErrorCodes

from .stream import NO_BODY_STATUSES, Headers

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from twisted.python.failure import Failure

    from .flow import Drain
    from .transport import IConnectionTransport
    from .h2_windows import StreamWindow
    from .stream import HTTPStream
    from .websocket import WebSocketConnection


class StreamWebSocket(Protocol):
    """What the connection asks of a WebSocket stream's transport (``h2_websocket.H2WebSocket``),
    named here so that this module need not import that one, which imports this."""

    protocol: WebSocketConnection

    def data_received(self, data: bytes, flow_controlled_length: int) -> None: ...
    def writable(self) -> None: ...
    def closed(self, reason: Failure) -> None: ...
    def loseConnection(self) -> None: ...


class State(enum.Enum):
    """Where a stream is in its life, as the connection sees it."""

    OPEN = "open"  # the app may still write
    ENDING = "ending"  # the response is complete; its last bytes wait for the peer's window
    CLOSED = "closed"  # ended, once, by StreamOwner.close_stream: no longer in the connection's map


OPEN, ENDING, CLOSED = State.OPEN, State.ENDING, State.CLOSED


class StreamOwner(Protocol):
    """What a stream may ask of its connection (``http2.HTTP2Connection``), and all it may."""

    transport: IConnectionTransport  # the connection's own: its addresses are the stream's

    def send_response(self, stream: H2Stream, status: int, headers: Headers, body: bytes, end: bool) -> bool:
        """Send a response head (the server's Server and Date policy applied) and the first
        of its body (``send_data``); ``False`` when the stream is gone and nothing was sent."""

    def send_data(self, stream: H2Stream, data: bytes, end: bool) -> None:
        """Send ``data`` as far as the flow-control windows allow now; queue the rest."""

    def send_trailers(self, stream: H2Stream, headers: Headers) -> None:
        """End the stream with trailers, once the data queued before them has gone."""

    def acknowledge(self, stream: H2Stream) -> None:
        """The stream's reader took its ``unacknowledged`` bytes: give the peer that window back."""

    def reset(self, stream: H2Stream, code: ErrorCodes, reason: Failure | None) -> None:
        """RST_STREAM with ``code``, then ``close_stream``."""

    def close_stream(self, stream: H2Stream, reason: Failure | None) -> None:
        """The one way a stream ends. ``reason`` says the peer is gone (the app is told);
        ``None``, that the stream ended as it should."""

    def push(self, stream: H2Stream, path: str, headers: Headers) -> None:
        """Promise a pushed response for ``path`` on ``stream``, served as a request of its own."""

    def finished(self, exchange: HTTPStream) -> None:
        """The app of a request stream returned: the exchange goes to the request log."""


class H2Stream:
    """One HTTP/2 stream.

    @ivar id: the stream identifier.
    @ivar owner: the connection, through its streams' interface.
    @ivar state: ``OPEN``, ``ENDING`` or ``CLOSED``.
    @ivar exchange: the ASGI side of a request stream, ``None`` on a WebSocket's.
    @ivar websocket: the byte transport of a WebSocket stream, ``None`` on a request's.
    @ivar window: the receive window of a request stream, grown while its app keeps up.
    @ivar unacknowledged: body bytes received and not yet given back to the peer's window.
    @ivar pending: response bytes waiting for the peer's window (``None``: nothing waits).
    @ivar end: END_STREAM goes after ``pending``.
    @ivar trailers: the trailers that go after ``pending``, if any.
    @ivar drain: paused while this stream may not write more (its data waits for window,
        or the client is not reading the connection): ``send()`` waits on it. Made when
        the stream is first held back: most never are.
    """

    __slots__ = ("drain", "end", "exchange", "id", "owner", "pending", "state", "trailers", "unacknowledged",
                 "websocket", "window")

    def __init__(self, stream_id: int, owner: StreamOwner) -> None:
        self.id = stream_id
        self.owner = owner
        self.state = OPEN
        self.exchange: HTTPStream | None = None
        self.websocket: StreamWebSocket | None = None
        self.window: StreamWindow | None = None
        self.unacknowledged = 0
        self.pending: bytearray | None = None
        self.end = False
        self.trailers: Headers | None = None
        self.drain: Drain | None = None

    def __repr__(self) -> str:
        return f"<H2Stream {self.id} {self.state.value}>"

    # stream.ResponseWriter, for the exchange of a request stream.

    def write_response(self, stream: HTTPStream, status: int, headers: Headers, body: bytes, end: bool) -> None:
        if self.state is not OPEN:
            return
        if status in NO_BODY_STATUSES or stream.scope["method"] == "HEAD":
            body = b""
        if self.owner.send_response(self, status, headers, body, end) and end:
            self._responded()

    def write_body(self, stream: HTTPStream, body: bytes, end: bool) -> None:
        if self.state is not OPEN:
            return
        if stream.scope["method"] == "HEAD" or stream.status in NO_BODY_STATUSES:
            body = b""
        self.owner.send_data(self, body, end)
        if end:
            self._responded()

    def write_informational(self, stream: HTTPStream, status: int, headers: Headers) -> None:
        if self.state is OPEN:
            self.owner.send_response(self, status, headers, b"", False)

    def write_trailers(self, stream: HTTPStream, headers: Headers) -> None:
        if self.state is OPEN:
            self.owner.send_trailers(self, headers)
            self._responded()

    def push(self, stream: HTTPStream, path: str, headers: Headers) -> None:
        if self.state is OPEN:
            self.owner.push(self, path, headers)

    def body_consumed(self, stream: HTTPStream) -> None:
        if self.unacknowledged:
            self.owner.acknowledge(self)

    def drained(self, stream: HTTPStream) -> Awaitable[None] | None:
        drain = self.drain
        return None if drain is None else drain.wait()

    def send_file(self, stream: HTTPStream, file: BinaryIO, count: int) -> None:
        """Never ``os.sendfile`` here: DATA frames are framed in Python, so the file is read."""
        return None

    def abort(self, stream: HTTPStream) -> None:
        self.owner.reset(self, ErrorCodes.INTERNAL_ERROR, None)

    def finished(self, stream: HTTPStream) -> None:
        self.owner.finished(stream)

    def _responded(self) -> None:
        """The response is complete: the stream ends once its last bytes are sent."""
        if self.state is OPEN:
            self.state = ENDING
            if self.pending is None:
                self.owner.close_stream(self, None)
