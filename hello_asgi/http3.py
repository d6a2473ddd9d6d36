"""HTTP/3 connections on aioquic: request streams as ASGI exchanges, with flow control both ways.

Each request stream is a ``stream.HTTPStream``, the same ASGI mapping HTTP/1.1 and HTTP/2
use; this module turns aioquic's QUIC and HTTP/3 events into stream events and the
streams' responses into HTTP/3 frames. ``quic.py`` owns the UDP socket and hands each
connection its datagrams; this module never touches the socket.

Flow control in: aioquic raises a stream's receive window by itself as data arrives,
whoever reads it. Here a request stream's window is the bytes the server has taken plus
``h3_stream_window``, where request body bytes count as taken only once the app has
``receive()``d them, so a client has at most one window of body buffered per stream (as
HTTP/2's WINDOW_UPDATE only once the app read). The same rule holds every client stream
to one window of what aioquic holds unparsed (a header block or control frame still
arriving). Flow control out: aioquic keeps what a stream sends until the peer
acknowledges it; ``send()`` waits while that is above ``SEND_HIGH`` bytes (the peer's
window is shut, or the path is slower than the app), and a stream that makes no progress
for ``h3_stall_timeout`` is reset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import ErrorCode, FrameType, H3Connection, Setting, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicFrameType
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from .context import ServerContext
from .flow import Drain
from .h2_headers import NOT_IN_RESPONSES, is_origin_form, response_block, split_request
from .stream import NO_BODY_STATUSES, ConnectionScope, Headers, HTTPStream, RequestHead, cancel_apps, extensions
from .wire import http_date

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aioquic.quic.packet_builder import QuicPacketBuilder
    from aioquic.quic.recovery import QuicPacketSpace
    from aioquic.quic.stream import QuicStream
    from .http3_websocket import WebSocketStream

log = Logger(namespace="hello_asgi.http3")


class Endpoint(Protocol):
    """What a connection asks of the UDP endpoint that feeds it (``quic.QuicEndpoint``),
    named here so that this module need not import that one, which imports this."""

    def route(self, cid: bytes, connection: HTTP3Connection) -> None: ...
    def unroute(self, cid: bytes) -> None: ...
    def wants_transmit(self, connection: HTTP3Connection) -> None: ...
    def closed(self, connection: HTTP3Connection) -> None: ...
    def forget(self, connection: HTTP3Connection) -> None: ...
    def tls_extension(self, quic: QuicConnection) -> dict[str, Any]: ...

SEND_HIGH = 256 * 1024  # response bytes a stream may have unacknowledged before send() waits
SEND_LOW = 64 * 1024  # ... and the level at which it goes on
_MAX_STREAM_DATA_CAPACITY = 1 + 8 + 8  # frame type, stream id, limit
_ANSWERED = 0  # the credit of a stream answered before its body ended: its window is not raised again


# A UDP peer as ``recvfrom`` gives it and ``sendto`` takes it: (host, port), or IPv6's
# (host, port, flowinfo, scope_id).
UDPAddress = tuple[str, int] | tuple[str, int, int, int]


class FlowControlledQuic(QuicConnection):
    """aioquic's QUIC connection, with client streams' receive windows set by ``credit``
    (the highest offset the peer may send to) rather than doubled as data arrives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.credit: dict[int, int] = {}

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream) -> None:
        stream_id = stream.stream_id  # (None only on a crypto stream, which never comes here)
        if stream_id is None or (credit := self.credit.get(stream_id)) is None:
            super()._write_stream_limits(builder, space, stream)  # our own uni streams
            return
        if credit > stream.max_stream_data_local:
            stream.max_stream_data_local = credit
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(QuicFrameType.MAX_STREAM_DATA, capacity=_MAX_STREAM_DATA_CAPACITY,
                                      handler=self._on_max_stream_data_delivery, handler_args=(stream,))
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local


class _H3(H3Connection):
    """aioquic's HTTP/3 layer with the server's own SETTINGS: a QPACK dynamic table of
    ``table_capacity`` bytes (see docs/http3.rst: every reference to it may be expanded
    many times over), the largest header section the server takes, and extended CONNECT
    (RFC 9220) offered only while WebSockets are served."""

    def __init__(self, quic: QuicConnection, table_capacity: int, max_field_section_size: int,
                 websocket: bool) -> None:
        self.table_capacity = table_capacity  # set first: aioquic's __init__ sends the SETTINGS
        self.max_field_section_size = max_field_section_size
        self.websocket = websocket
        super().__init__(quic)

    def _init_connection(self) -> None:
        import pylsqpack

        self._max_table_capacity = self.table_capacity
        self._blocked_streams = 16 if self.table_capacity else 0
        self._decoder = pylsqpack.Decoder(self._max_table_capacity, self._blocked_streams)
        super()._init_connection()

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        if not self.websocket:
            settings.pop(Setting.ENABLE_CONNECT_PROTOCOL, None)
        settings[Setting.MAX_FIELD_SECTION_SIZE] = self.max_field_section_size
        return settings


class _Outbound:
    """A stream's writers waiting for the peer to take its response, and since when."""

    __slots__ = ("stalled", "writers")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.writers = Drain(loop)
        self.stalled: asyncio.TimerHandle | None = None


class HTTP3Connection:
    """One QUIC connection carrying HTTP/3: many request streams, each its own app call.

    ``endpoint`` is the UDP side (``quic.QuicEndpoint``): it feeds ``receive`` and
    ``timer``, and calls ``transmit`` once per loop turn after ``endpoint.wants_transmit``.
    """

    def __init__(self, endpoint: Endpoint, quic: FlowControlledQuic, context: ServerContext,
                 peer: IPv4Address | IPv6Address, host: IPv4Address | IPv6Address) -> None:
        self.endpoint = endpoint
        self.quic = quic
        self.context = context
        self.config = config = context.config
        self._loop = context.loop
        self.peer = self._peer = peer
        self.host = self._host = host
        self._h3: _H3 | None = None
        self._connection: ConnectionScope | None = None
        self._streams: dict[int, HTTPStream] = {}
        self.websockets: dict[int, WebSocketStream] = {}  # extended CONNECT streams (RFC 9220)
        self._ws_waiting: set[int] = set()  # ... whose writer waits for the client to take more
        self._ids: dict[HTTPStream, int] = {}
        self._outbound: dict[int, _Outbound] = {}
        self._taken: dict[int, int] = {}  # bytes the server has read off each client stream
        self._window = config.h3_stream_window
        self._requests = 0
        self.closing = False  # GOAWAY sent, or closed
        self.closed = False  # CONNECTION_CLOSE sent or received: no app work left
        self._goaway_id: int | None = None
        self._handshake_timer: asyncio.TimerHandle | None = self._loop.call_later(
            config.request_head_timeout, self._handshake_too_slow)
        # Each handler takes the one event type it is filed under (so Any: no single type fits).
        self._handlers: dict[type[quic_events.QuicEvent], Callable[[Any], None]] = {
            quic_events.ProtocolNegotiated: self._negotiated,
            quic_events.HandshakeCompleted: self._handshake_completed,
            quic_events.StreamDataReceived: self._stream_data,
            quic_events.StreamReset: self._stream_reset,
            quic_events.StopSendingReceived: self._stop_sending,
            quic_events.ConnectionIdIssued: self._cid_issued,
            quic_events.ConnectionIdRetired: self._cid_retired,
            quic_events.ConnectionTerminated: self._terminated,
        }

    # Datagrams and timers in, from the endpoint.

    def receive(self, data: bytes, addr: UDPAddress, now: float) -> None:
        self.quic.receive_datagram(data, addr, now)
        self._process()

    def timer(self, now: float) -> None:
        self.quic.handle_timer(now)
        self._process()

    def _process(self) -> None:
        quic = self.quic
        handlers = self._handlers
        while (event := quic.next_event()) is not None:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
            elif self._h3 is not None:  # DatagramFrameReceived and the like
                self._h3.handle_event(event)
        if self._outbound or self._ws_waiting:
            self._wake_writers()
        if self.closing and not self.closed and self._idle():
            self._close_idle()
        self.endpoint.wants_transmit(self)

    # QUIC events.

    def _negotiated(self, event: quic_events.ProtocolNegotiated) -> None:
        if event.alpn_protocol != "h3":  # ALPN offers h3 alone, so the TLS handshake has failed already
            return
        config = self.config
        self._h3 = _H3(self.quic, config.h3_qpack_table_capacity, config.max_head_size, config.websocket)

    def _handshake_completed(self, event: quic_events.HandshakeCompleted) -> None:
        self._handshake_done()

    def _handshake_done(self) -> ConnectionScope:
        """What the connection's requests share, now that TLS's facts are known."""
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        connection = self._connection = self.context.scope_between(self._peer, self._host, "https",
                                                                   tls=self.endpoint.tls_extension(self.quic))
        return connection

    def _handshake_too_slow(self) -> None:
        """A handshake not done within ``request_head_timeout`` is dropped without a word:
        the peer may not even own its address."""
        self._handshake_timer = None
        if self._connection is None and not self.closed:
            self.closed = self.closing = True
            self.endpoint.closed(self)
            self.endpoint.forget(self)

    def _cid_issued(self, event: quic_events.ConnectionIdIssued) -> None:
        self.endpoint.route(event.connection_id, self)

    def _cid_retired(self, event: quic_events.ConnectionIdRetired) -> None:
        self.endpoint.unroute(event.connection_id)

    def _terminated(self, event: quic_events.ConnectionTerminated) -> None:
        self.closed = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._end_streams()
        self.endpoint.forget(self)

    def _stream_data(self, event: quic_events.StreamDataReceived) -> None:
        h3 = self._h3
        if h3 is None or self.closed:
            return
        stream_id = event.stream_id
        counted = self.quic.credit.get(stream_id) != _ANSWERED
        if counted:
            self._taken[stream_id] = self._taken.get(stream_id, 0) + len(event.data)
        for h3_event in h3.handle_event(event):
            if isinstance(h3_event, DataReceived):
                self._body(h3_event)
            elif isinstance(h3_event, HeadersReceived):
                self._headers(h3_event)
        if self.closed or self.quic._close_event is not None:  # noqa: SLF001 (aioquic closed it: a protocol error)
            return
        if counted:
            self._check_held(stream_id)

    def _check_held(self, stream_id: int) -> None:
        """Hold what aioquic keeps unparsed on a client stream to bounds, and open the
        stream's window by what the server took."""
        held = self._h3._stream.get(stream_id) if self._h3 is not None else None  # noqa: SLF001
        unparsed = len(held.buffer) if held is not None else 0
        if held is not None and held.frame_type == FrameType.HEADERS and held.frame_size is not None \
                and held.frame_size > self.config.max_head_size:
            self._fail(ErrorCode.H3_EXCESSIVE_LOAD, f"a header block of {held.frame_size} bytes, above "
                                                    f"max_head_size {self.config.max_head_size}")
            return
        stream = self._streams.get(stream_id)
        websocket = self.websockets.get(stream_id) if stream is None else None
        self._credit(stream_id, unparsed + (stream.buffered if stream is not None else
                                            websocket.unread if websocket is not None else 0))

    def _credit(self, stream_id: int, unread: int) -> None:
        """Let the client send ``h3_stream_window`` bytes past what the server has read,
        raised in steps of half a window so that a MAX_STREAM_DATA goes once per half."""
        quic = self.quic
        target = self._taken.get(stream_id, 0) - unread + self._window
        current = quic.credit.get(stream_id)
        if current is None or target - current >= self._window // 2:
            quic.credit[stream_id] = target
            if current is not None:
                self.endpoint.wants_transmit(self)

    def _stream_reset(self, event: quic_events.StreamReset) -> None:
        self.quic.credit.pop(event.stream_id, None)
        self._taken.pop(event.stream_id, None)
        if self._h3 is not None:
            self._h3.handle_event(event)
        self._lose_stream(event.stream_id)

    def _stop_sending(self, event: quic_events.StopSendingReceived) -> None:
        if self._h3 is not None:
            self._h3.handle_event(event)  # aioquic has reset our side of the stream already
        self._lose_stream(event.stream_id)

    def _lose_stream(self, stream_id: int) -> None:
        """The client cancelled a request: its app hears ``http.disconnect``."""
        websocket = self.websockets.get(stream_id)
        if websocket is not None:
            websocket.lost(Failure(ConnectionLost("the client reset the stream")))
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.disconnect()
            self._forget(stream)
        outbound = self._outbound.pop(stream_id, None)
        if outbound is not None:
            _release(outbound)

    # HTTP/3 events.

    def _headers(self, event: HeadersReceived) -> None:
        stream_id = event.stream_id
        stream = self._streams.get(stream_id)
        if stream is None and stream_id in self.websockets:
            return  # trailers on a WebSocket's stream: nothing to do with them
        if stream is not None:  # trailers: ASGI has no place for them; they end the body
            if event.stream_ended:
                stream.end_body()
            return
        if self._goaway_id is not None and stream_id >= self._goaway_id:
            self._reject(stream_id, ErrorCode.H3_REQUEST_REJECTED)  # after GOAWAY: the client may retry
            return
        if len(self._streams) + len(self.websockets) >= self.config.h3_max_concurrent_streams:
            self._reject(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            return
        self._open_stream(stream_id, event.headers, event.stream_ended)

    def _open_stream(self, stream_id: int, fields: Headers, ended: bool) -> None:
        config = self.config
        if len(fields) > config.max_header_count + 4 or \
                sum(len(name) + len(value) for name, value in fields) > config.max_head_size:
            # QPACK's references expand: a block within max_head_size can decode to far more.
            self._refuse(stream_id, 431, b"Request Header Fields Too Large")
            return
        pseudo, headers, trailers = split_request(fields)
        method, path = pseudo.get(b":method", b""), pseudo.get(b":path", b"")
        connection = self._connection
        if connection is None:  # 0-RTT data before the handshake: no TLS facts yet
            connection = self._handshake_done()
        if method == b"CONNECT":
            self._connect(stream_id, pseudo, headers, connection)
            return
        if not (is_origin_form(path) or (path == b"*" and method == b"OPTIONS")):
            self._refuse(stream_id, 400, b"malformed :path")
            return
        raw_path, _, query = path.partition(b"?")
        scope = connection.http(method.decode("ascii"), "3", raw_path, query, headers,
                                extensions(True, trailers))
        stream = HTTPStream(scope, self, body_complete=ended)
        self._streams[stream_id] = stream
        self._ids[stream] = stream_id
        stream.task = self.context.start(stream)
        self._requests += 1
        limit = self.config.max_requests_per_connection
        if limit and self._requests >= limit:
            self.shutdown()

    def _connect(self, stream_id: int, pseudo: dict[bytes, bytes], headers: Headers,
                 connection: ConnectionScope) -> None:
        """Extended CONNECT with ``:protocol websocket`` opens a WebSocket (RFC 9220); this
        server is no proxy, so a plain CONNECT gets 405 and another protocol 501."""
        from .http3_websocket import WebSocketStream  # loaded with the first WebSocket
        from .websocket import WebSocketConnection, connect_problem

        protocol, path = pseudo.get(b":protocol", b""), pseudo.get(b":path", b"/")
        raw_path, _, query = path.partition(b"?")
        request = RequestHead(b"CONNECT", path, raw_path, query, headers)
        problem = connect_problem(request, protocol, self.config.websocket)  # RFC 9220: RFC 8441's rules
        if problem is not None:
            status, reason, extra = problem
            self._refuse(stream_id, status, reason.encode(), extra)
            return
        websocket = self.websockets[stream_id] = WebSocketStream(self, stream_id)
        websocket.protocol = WebSocketConnection(self.context, request, "3", websocket, connection)
        websocket.protocol.makeConnection(websocket)

    def _body(self, event: DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            websocket = self.websockets.get(event.stream_id)
            if websocket is not None:
                if event.data:
                    websocket.data_received(event.data)
                if event.stream_ended:
                    websocket.loseConnection()  # the client's side is done: so is the WebSocket
            return
        if event.data:
            stream.feed_body(event.data)
        if event.stream_ended:
            stream.end_body()

    def _reject(self, stream_id: int, code: int) -> None:
        """Refuse a request before the app sees it; the client may send it again."""
        try:
            self.quic.reset_stream(stream_id, code)
            self.quic.stop_stream(stream_id, code)
        except (ValueError, AssertionError):
            return
        self._h3_sending_ended(stream_id)

    def _refuse(self, stream_id: int, status: int, reason: bytes, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """Answer a request the app cannot be given (with ``extra`` fields, such as the
        WebSocket version a 426 asks for), and read no more of it."""
        h3 = self._h3
        assert h3 is not None
        block = self.response_fields(status, [*extra, (b"content-type", b"text/plain; charset=utf-8"),
                                              (b"content-length", b"%d" % len(reason))])
        h3.send_headers(stream_id, block)
        h3.send_data(stream_id, reason, end_stream=True)
        self._stop_reading(stream_id)

    def _stop_reading(self, stream_id: int) -> None:
        """The response is complete before the request body: ask the client to stop sending
        it (STOP_SENDING H3_NO_ERROR, RFC 9114 section 4.1)."""
        quic_stream = self.quic._streams.get(stream_id)  # noqa: SLF001
        if quic_stream is not None and not quic_stream.receiver.is_finished:
            try:
                self.quic.stop_stream(stream_id, ErrorCode.H3_NO_ERROR)
            except (ValueError, AssertionError):
                pass

    def _h3_sending_ended(self, stream_id: int) -> None:
        """Tell aioquic's HTTP/3 layer that nothing more goes out on a reset stream, so it
        forgets the stream once the peer's side ends too."""
        h3 = self._h3
        if h3 is None:
            return
        held = h3._stream.get(stream_id)  # noqa: SLF001
        if held is not None:
            held.sending_ended = True
            if held.is_ended():
                h3._stream.pop(stream_id, None)  # noqa: SLF001

    # Ending the connection.

    def _fail(self, code: int | None, why: str, silent: bool = False) -> None:
        """End the connection for the client's fault: CONNECTION_CLOSE with ``code``, one
        log line, every stream's app told the client is gone."""
        if not silent:
            log.warn("CONNECTION_CLOSE {code} to {client}: {why}", code=hex(code or 0), client=self._client(),
                     why=why)
        self.quic.close(error_code=code or ErrorCode.H3_NO_ERROR, reason_phrase=why[:100])
        self._closed_by_us()

    def _client(self) -> str:
        return f"{self._peer.host}:{self._peer.port}"

    def _closed_by_us(self) -> None:
        self.closed = self.closing = True
        self._end_streams()
        self.endpoint.wants_transmit(self)
        self.endpoint.closed(self)

    def _end_streams(self) -> None:
        """The connection is gone, whichever end closed it: every request and WebSocket
        hears so, and the sends waiting on the client's window are let go."""
        for stream in list(self._streams.values()):
            stream.disconnect()
        for outbound in self._outbound.values():
            _release(outbound)
        self._outbound.clear()
        self._lose_websockets()

    def shutdown(self) -> None:
        """GOAWAY: no new requests; close once the open ones are done."""
        if self.closing:
            return
        self.closing = True
        h3 = self._h3
        if h3 is None or h3._local_control_stream_id is None:  # noqa: SLF001 (still in its handshake)
            self.quic.close(error_code=ErrorCode.H3_NO_ERROR)
            self._closed_by_us()
            return
        highest = max(self._taken.keys() | {-4}, key=lambda sid: sid if sid % 4 == 0 else -4)
        self._goaway_id = highest + 4  # the first request stream id that will not be served
        self.quic.send_stream_data(h3._local_control_stream_id,  # noqa: SLF001
                                   encode_frame(FrameType.GOAWAY, encode_uint_var(self._goaway_id)))
        self.endpoint.wants_transmit(self)
        for websocket in list(self.websockets.values()):
            websocket.protocol.shutdown()
        if self._idle():
            self._close_idle()

    def _idle(self) -> bool:
        return not self._streams and not self.websockets

    def _lose_websockets(self) -> None:
        for websocket in list(self.websockets.values()):
            websocket.lost(Failure(ConnectionLost("the QUIC connection closed")))

    def websocket_ended(self) -> None:
        """A WebSocket's stream is done: a connection shutting down may now close."""
        if self.closing and not self.closed and self._idle():
            self._close_idle()

    # What a WebSocket's stream asks of its connection (http3_websocket.py).

    def send_headers(self, stream_id: int, block: Headers, end: bool) -> bool:
        if self._h3 is None or self.closed:
            return False
        try:
            self._h3.send_headers(stream_id, block, end_stream=end)
        except Exception:  # noqa: BLE001 (the client reset the stream)
            return False
        self.endpoint.wants_transmit(self)
        return True

    def send_data(self, stream_id: int, data: bytes, end: bool) -> bool:
        if self._h3 is None or self.closed:
            return False
        try:
            self._h3.send_data(stream_id, data, end)
        except Exception:  # noqa: BLE001
            return False
        self.endpoint.wants_transmit(self)
        return True

    def sending(self, stream_id: int) -> bool:
        """Whether the client has more than ``SEND_HIGH`` of this stream to take: its writer
        pauses, and is resumed by ``_wake_writers``."""
        quic_stream = self.quic._streams.get(stream_id)  # noqa: SLF001
        if quic_stream is None or len(quic_stream.sender._buffer) <= SEND_HIGH:  # noqa: SLF001
            return False
        self._ws_waiting.add(stream_id)
        return True

    def reset(self, stream_id: int, code: int) -> None:
        try:
            self.quic.reset_stream(stream_id, code)
        except (ValueError, AssertionError):
            pass
        self._stop_reading(stream_id)
        self._h3_sending_ended(stream_id)
        self.endpoint.wants_transmit(self)

    def read_again(self, stream_id: int) -> None:
        if not self.closed:
            self._credit(stream_id, 0)

    def _close_idle(self) -> None:
        """Close a connection shutting down, once the client has every response (what it has
        not acknowledged would be lost with the close); until then, each acknowledgement
        brings this back."""
        if any(stream.sender._buffer for stream in self.quic._streams.values()):  # noqa: SLF001
            return
        self.quic.close(error_code=ErrorCode.H3_NO_ERROR)
        self._closed_by_us()

    def abort_connection(self) -> None:
        """Graceful shutdown ran out of time: close at once."""
        if not self.closed:
            self._fail(ErrorCode.H3_NO_ERROR, "the server is stopping", silent=True)

    def cancel_apps(self) -> list[asyncio.Task[None]]:
        tasks = cancel_apps(self._streams.values())
        for websocket in self.websockets.values():
            tasks += websocket.protocol.cancel_apps()
        return tasks

    # Response frames out: stream.ResponseWriter.

    def write_response(self, stream: HTTPStream, status: int, headers: Headers, body: bytes, end: bool) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None or self._h3 is None or self.closed:
            return
        block = self.response_fields(status, headers)
        if status in NO_BODY_STATUSES or stream.scope["method"] == "HEAD":
            body = b""
        try:
            self._h3.send_headers(stream_id, block, end_stream=end and not body)
            if body:
                self._h3.send_data(stream_id, body, end)
        except Exception:  # noqa: BLE001 (the client reset the stream: nothing to send it)
            return
        self.endpoint.wants_transmit(self)
        if end:
            self._response_complete(stream)


    def write_body(self, stream: HTTPStream, body: bytes, end: bool) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None or self._h3 is None or self.closed:
            return
        if stream.scope["method"] == "HEAD" or stream.status in NO_BODY_STATUSES:
            body = b""
        try:
            self._h3.send_data(stream_id, body, end)
        except Exception:  # noqa: BLE001
            return
        self.endpoint.wants_transmit(self)
        if end:
            self._response_complete(stream)

    def response_fields(self, status: int, headers: Headers) -> Headers:
        """A HEADERS frame's fields: HTTP/3 keeps HTTP/2's rules for them (RFC 9114 section
        4.2), so HTTP/2's builder makes them, with its one Server and Date policy."""
        config = self.config
        return response_block(status, headers, config.server_header, http_date if config.date_header else None)

    def write_informational(self, stream: HTTPStream, status: int, headers: Headers) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is not None and self._h3 is not None and not self.closed:
            self._h3.send_headers(stream_id, self.response_fields(status, headers))
            self.endpoint.wants_transmit(self)

    def write_trailers(self, stream: HTTPStream, headers: Headers) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None or self._h3 is None or self.closed:
            return
        trailers = [(name.lower(), value) for name, value in headers if name.lower() not in NOT_IN_RESPONSES]
        try:
            self._h3.send_headers(stream_id, trailers, end_stream=True)
        except Exception:  # noqa: BLE001
            return
        self.endpoint.wants_transmit(self)
        self._response_complete(stream)

    def push(self, stream: HTTPStream, path: str, headers: Headers) -> None:
        pass  # server push is not offered (no http.response.push extension): browsers dropped it

    def send_file(self, stream: HTTPStream, file: BinaryIO, count: int) -> None:
        """``None``: the stream reads the file and writes it as body chunks (QUIC's packets
        are built and encrypted here, so there is no socket for ``os.sendfile``)."""
        return None

    def body_consumed(self, stream: HTTPStream) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is not None and not self.closed:
            self._credit(stream_id, 0)

    def drained(self, stream: HTTPStream) -> Awaitable[None] | None:
        stream_id = self._ids.get(stream)
        if stream_id is None or self.closed:
            return None
        quic_stream = self.quic._streams.get(stream_id)  # noqa: SLF001
        if quic_stream is None or len(quic_stream.sender._buffer) <= SEND_HIGH:  # noqa: SLF001
            return None
        outbound = self._outbound.get(stream_id)
        if outbound is None:
            outbound = self._outbound[stream_id] = _Outbound(self._loop)
            outbound.stalled = self._loop.call_later(self.config.h3_stall_timeout, self._stalled, stream_id)
        return outbound.writers.waiter()

    def _wake_writers(self) -> None:
        """After acknowledgements: let ``send()`` go on where the peer has taken enough."""
        streams = self.quic._streams  # noqa: SLF001
        for stream_id, outbound in list(self._outbound.items()):
            quic_stream = streams.get(stream_id)
            if quic_stream is None or len(quic_stream.sender._buffer) <= SEND_LOW:  # noqa: SLF001
                del self._outbound[stream_id]
                _release(outbound)
        for stream_id in list(self._ws_waiting):
            quic_stream = streams.get(stream_id)
            if quic_stream is None or len(quic_stream.sender._buffer) <= SEND_LOW:  # noqa: SLF001
                self._ws_waiting.discard(stream_id)
                websocket = self.websockets.get(stream_id)
                if websocket is not None:
                    websocket.writable()

    def _stalled(self, stream_id: int) -> None:
        """The client took nothing of this response for ``h3_stall_timeout``: a zero-window
        client would otherwise pin the app and its buffers."""
        outbound = self._outbound.get(stream_id)
        if outbound is None:
            return
        outbound.stalled = None
        log.warn("Reset stream {stream} of {client}: it took nothing for {timeout} s", stream=stream_id,
                 client=self._client(), timeout=self.config.h3_stall_timeout)
        stream = self._streams.get(stream_id)
        if stream is not None:
            self.abort_stream(stream, ErrorCode.H3_REQUEST_CANCELLED)
            stream.disconnect()

    def abort(self, stream: HTTPStream) -> None:
        self.abort_stream(stream)

    def abort_stream(self, stream: HTTPStream, code: int = ErrorCode.H3_INTERNAL_ERROR) -> None:
        """Cut a response short: the client sees the stream reset, not a clean end."""
        stream_id = self._ids.get(stream)
        if stream_id is None:
            return
        outbound = self._outbound.pop(stream_id, None)
        if outbound is not None:
            _release(outbound)
        self.reset(stream_id, code)
        self._forget(stream)

    def finished(self, stream: HTTPStream) -> None:
        request_log = self.context.request_log
        if request_log is not None:
            request_log.http(stream)

    def _response_complete(self, stream: HTTPStream) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None:
            return
        if not stream.body_complete:
            self._stop_reading(stream_id)
        self._forget(stream)

    def _forget(self, stream: HTTPStream) -> None:
        stream_id = self._ids.pop(stream, None)
        if stream_id is None:
            return
        self._streams.pop(stream_id, None)
        self._taken.pop(stream_id, None)
        quic_stream = self.quic._streams.get(stream_id)  # noqa: SLF001
        if quic_stream is not None and not quic_stream.receiver.is_finished:
            self.quic.credit[stream_id] = _ANSWERED  # its window stays as it is: nobody reads the rest
        else:
            self.quic.credit.pop(stream_id, None)
        if self.closing and self._idle() and not self.closed:
            self._close_idle()


def _release(outbound: _Outbound) -> None:
    if outbound.stalled is not None:
        outbound.stalled.cancel()
        outbound.stalled = None
    outbound.writers.release()



