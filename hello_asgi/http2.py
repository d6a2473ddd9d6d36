"""HTTP/2 connections on the h2 library: streams as ASGI exchanges, with flow control both ways.

Each stream is a ``stream.HTTPStream``, the same ASGI mapping HTTP/1.1 uses; this module
only turns h2's events into stream events and the streams' responses into frames.

Flow control: request body bytes are acknowledged (WINDOW_UPDATE) only once the app has
taken them with ``receive()``, so a client can have at most one stream window of body
buffered per stream. The connection window is opened to cover every stream's window, so
one app that does not read cannot stall the other streams of its connection. Response
data goes out as the peer's windows allow; ``send()`` waits while its stream has data
that does not fit.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.interfaces import IPushProducer, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .frame_budget import FrameBudget
from .h2_engine import Connection
from .h2_headers import request_problem, trailers_problem
from .h2_windows import ReceiveWindows
from .stream import NO_BODY_STATUSES, Headers, ConnectionScope, HTTPStream, RequestHead, cancel_apps, wake_all, wants_trailers
from .timeouts import Deadline

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .websocket import WebSocketConnection

    from .factory import ASGIServerFactory

log = Logger(namespace="hello_asgi.http2")

FLUSH_AT = 64 * 1024  # bytes of response DATA written at once rather than at the end of the loop's turn


# Headers that mean something only to one HTTP/1.1 hop (RFC 9113 section 8.2.2).
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
# Headers never sent on a response: those, and TE, a request's alone (section 8.2.2).
_NOT_IN_RESPONSES = _CONNECTION_SPECIFIC | {b"te"}
_WHITESPACE = (b" ", b"\t")
# What an h2c upgrade request carried for the HTTP/1.1 hop only; not part of stream 1.
_HOP_BY_HOP = _CONNECTION_SPECIFIC | {b"http2-settings"}
# An origin-form :path: what HTTP/1.1's parser takes in a request target (no space, control
# or fragment), so the same target is served or refused over both.
_is_origin_form = re.compile(rb"/[!\x24-\x7e]*").fullmatch


class _Settings(h2.settings.Settings):
    """The server's settings, as h2 sees them. h2 answers a stream past the advertised
    MAX_CONCURRENT_STREAMS with a GOAWAY that ends every stream of the connection (and
    counts from its own default, 100, before the client has our SETTINGS, when RFC 9113
    section 6.5.2 sets no limit yet). Here h2 takes them all and ``H2Connection`` refuses
    the streams past the limit one by one, with RST_STREAM REFUSED_STREAM, which a client
    may retry (section 5.1.2)."""

    @property
    def max_concurrent_streams(self) -> int:
        return 2**31 - 1


@dataclass
class _Outbound:
    """A stream's response data waiting for flow-control window."""

    pending: bytearray = field(default_factory=bytearray)
    end: bool = False
    trailers: Headers | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


@implementer(IPushProducer)
class H2Connection(Protocol):
    """One HTTP/2 connection, many concurrent streams, each running its own app call."""

    def __init__(self, factory: ASGIServerFactory, upgrade: RequestHead | None = None) -> None:
        self.factory = factory
        self.config = factory.config
        self._upgrade = upgrade
        self._streams: dict[int, HTTPStream] = {}
        self._websockets: dict[int, _WebSocketStream] = {}  # RFC 8441 extended CONNECT streams
        self._ids: dict[HTTPStream, int] = {}
        self._unacknowledged: dict[int, int] = {}
        self._outbound: dict[int, _Outbound] = {}
        self._write_paused = False
        self._closing = False
        self._flush_scheduled = False
        self._goaway_sent: int | None = None  # the last stream id a graceful GOAWAY promised
        self._handlers = {
            h2.events.RequestReceived: self._request_received,
            h2.events.DataReceived: self._data_received,
            h2.events.StreamEnded: self._stream_ended,
            h2.events.TrailersReceived: self._trailers_received,
            h2.events.StreamReset: self._stream_reset,
            h2.events.WindowUpdated: self._window_updated,
            h2.events.RemoteSettingsChanged: self._settings_changed,
            h2.events.ConnectionTerminated: self._terminated,
        }
        self._abuse_window_start = 0.0
        self._abuse: dict[str, int] = {}

    # Connection life.

    def connectionMade(self) -> None:
        config = self.config
        transport = self.transport
        transport.registerProducer(self, True)  # type: ignore[union-attr]
        self._connection = ConnectionScope.of(transport, self.factory)
        self._h2 = Connection(
            # Outbound headers are checked once already (stream.checked_headers; lower-cased,
            # trimmed and stripped of connection-specific fields here): h2 need not redo it.
            # Inbound ones are checked in one pass (h2_headers) and their cookies joined here.
            h2.config.H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False,
                                      normalize_outbound_headers=False, validate_inbound_headers=False,
                                      normalize_inbound_headers=False)
        )
        self._h2.local_settings = _Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: config.h2_max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.max_head_size,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: config.h2_initial_window_size,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: config.h2_max_frame_size,
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: int(config.websocket),  # RFC 8441
            },
        )
        self._deadline = Deadline(self.factory.ticks, self._idle_timeout)
        self._stall = Deadline(self.factory.ticks, self._stalled)
        self._windows = ReceiveWindows(config.h2_initial_window_size, config.h2_max_window_size,
                                       self.factory.clock.seconds)
        self._budget = FrameBudget(self.factory.clock.seconds, config.h2_max_control_frames,
                                   config.h2_max_empty_frames)
        upgrade = self._upgrade
        if upgrade is None:
            self._h2.initiate_connection()
        else:
            self._h2.initiate_upgrade_connection(upgrade.settings)
        # Cover every stream's window, so one stream that is not read cannot stall the rest.
        extra = config.h2_max_concurrent_streams * config.h2_initial_window_size - 65535
        if extra > 0:
            self._h2.increment_flow_control_window(extra)
        if upgrade is not None:
            headers = [(b":method", upgrade.method), (b":path", upgrade.target), (b":scheme", b"http")]
            self._open_stream(1, headers + upgrade.headers, ended=True)
        else:
            self._deadline.set(config.keep_alive_timeout)
        self._flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._deadline.cancel()
        self._stall.cancel()
        self._lose_streams(reason)

    def _lose_streams(self, reason: Failure) -> None:
        for stream in self._streams.values():
            stream.disconnect()
        for outbound in self._outbound.values():
            wake_all(outbound.waiters)
        for websocket in list(self._websockets.values()):
            websocket.lost(reason)

    def _idle(self) -> bool:
        return not self._streams and not self._websockets

    def _idle_timeout(self) -> None:
        if self._idle():
            self._h2.close_connection()
            self._close()

    def _stalled(self) -> None:
        if any(outbound.pending for outbound in self._outbound.values()):
            self._fail_connection(ErrorCodes.FLOW_CONTROL_ERROR,
                                  f"its flow-control window stayed shut for {self.config.h2_stall_timeout} s")

    def _fail_connection(self, code: ErrorCodes | None, why: str) -> None:
        """End the connection for the client's fault: GOAWAY with ``code`` (``None``: h2 has
        queued its own), one log line, every stream's app told the client is gone."""
        log.warn("GOAWAY {code} to {client}: {why}", code="from h2" if code is None else code.name,
                 client=self._connection.client_text, why=why)
        if code is not None:
            self._h2.close_connection(code)
        for stream in self._streams.values():
            stream.disconnect()
        self._close()

    def shutdown(self) -> None:
        """GOAWAY: no new streams; close once the open ones are done.

        The frame is written directly: h2's own ``close_connection`` would also stop the
        streams still open from sending their responses.
        """
        if self._closing:
            return
        self._closing = True
        self._goaway_sent = self._h2.highest_inbound_stream_id
        self._flush()
        goaway = GoAwayFrame(0, last_stream_id=self._goaway_sent, error_code=ErrorCodes.NO_ERROR)
        self.transport.write(goaway.serialize())  # type: ignore[union-attr]
        for websocket in self._websockets.values():
            websocket.protocol.shutdown()
        if self._idle():
            self._close()

    def cancel_apps(self) -> list[asyncio.Task[None]]:
        tasks = cancel_apps(self._streams.values())
        for websocket in self._websockets.values():
            tasks += websocket.protocol.cancel_apps()
        return tasks

    def _close(self) -> None:
        """Send what h2 holds, then close; unregistering first, since TLS waits for its producer."""
        self._closing = True
        for outbound in self._outbound.values():
            wake_all(outbound.waiters)  # an app waiting to send learns now, not at connectionLost
        self._flush()
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data:
            self.transport.write(data)  # type: ignore[union-attr]

    def _flush_soon(self) -> None:
        """Write what the apps produced in this turn of the loop as one write, not one each;
        at once from ``FLUSH_AT`` bytes of DATA, so that the transport's backpressure reaches
        a ``send()`` that never yields (and a fast stream is not all held here first)."""
        if self._h2.queued >= FLUSH_AT:
            self._flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.factory.loop.call_soon(self._flush)

    # Frames in.

    def dataReceived(self, data: bytes) -> None:
        if self._closing and self.transport.disconnecting:  # type: ignore[union-attr]
            return
        data, over_budget = self._budget.admit(data, bool(self._outbound))
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self._fail_connection(None, f"HTTP/2 protocol error: {error}")
            return
        if over_budget is not None:
            self._handle(events)
            self._fail_connection(ErrorCodes.ENHANCE_YOUR_CALM, over_budget)
            return
        self._handle(events)
        self._flush()

    def _handle(self, events: list[h2.events.Event]) -> None:
        handlers = self._handlers
        for event in events:
            if self._closing and self._h2.state_machine.state is h2.connection.ConnectionState.CLOSED:
                break
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        problem = request_problem(event.headers)
        if problem is not None:
            self._fail_connection(ErrorCodes.PROTOCOL_ERROR, f"malformed request headers: {problem}")
            return
        if self._goaway_sent is not None and event.stream_id > self._goaway_sent:
            self._h2.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)  # after GOAWAY
            return
        if len(self._streams) + len(self._websockets) >= self.config.h2_max_concurrent_streams:
            self._h2.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)  # retryable; the rest go on
            self._count_abuse("streams past the limit", self.config.h2_max_resets)
            return
        self._open_stream(event.stream_id, event.headers, ended=event.stream_ended is not None)

    def _open_stream(self, stream_id: int, raw_headers: Headers, ended: bool) -> None:
        pseudo, headers = _split_fields(raw_headers)
        method, path, protocol = pseudo.get(b":method", b""), pseudo.get(b":path", b""), pseudo.get(b":protocol", b"")
        raw_path, _, query = path.partition(b"?")
        if method == b"CONNECT":
            self._connect(stream_id, RequestHead(method, path, raw_path, query, headers), protocol)
            return
        if not (_is_origin_form(path) or (path == b"*" and method == b"OPTIONS")):
            self._refuse(stream_id, 400, "malformed :path")
            return
        factory = self.factory
        extensions: dict[str, dict[str, object]] = {"http.response.early_hint": {}}
        if wants_trailers(headers):
            extensions["http.response.trailers"] = {}
        if self._h2.remote_settings.enable_push and stream_id % 2 == 1:
            extensions["http.response.push"] = {}
        scope = self._connection.http(method.decode("ascii"), "2", raw_path, query, headers, extensions)
        stream = HTTPStream(scope, self, body_complete=ended)
        self._streams[stream_id] = stream
        self._ids[stream] = stream_id
        self._unacknowledged[stream_id] = 0
        self._windows.open(stream_id)
        self._deadline.set(None)
        stream.task = factory.loop.create_task(stream.run(factory.app, factory.config.request_timeout))
        limit = self.config.max_requests_per_connection
        if limit and stream_id % 2 == 1 and (stream_id + 1) // 2 >= limit:
            self.shutdown()  # the last stream this connection serves

    def _connect(self, stream_id: int, request: RequestHead, protocol: bytes) -> None:
        """Extended CONNECT with ``:protocol websocket`` opens a WebSocket (RFC 8441); this
        server is no proxy, so a plain CONNECT gets 405 and another protocol 501."""
        from .websocket import WebSocketConnection, handshake_problem  # loaded with the first WebSocket

        if protocol != b"websocket" or not self.config.websocket:
            problem = (405, "this server is not a proxy", []) if not protocol else (501, "unknown :protocol", [])
        else:
            problem = handshake_problem(request, http2=True)
        if problem is not None:
            status, reason, extra = problem
            self._refuse(stream_id, status, reason, extra)
            return
        websocket = self._websockets[stream_id] = _WebSocketStream(self, stream_id)
        websocket.protocol = WebSocketConnection(self.factory, request, "2", websocket, self._connection)
        self._deadline.set(None)
        websocket.protocol.makeConnection(websocket)

    def _refuse(self, stream_id: int, status: int, reason: str, extra: Headers | None = None) -> None:
        """Answer a request that is not served with ``status`` and no body, as HTTP/1.1
        answers the same request, and log why."""
        log.info("Refused a request from {client}: {status} {reason}", client=self._connection.client_text,
                 status=status, reason=reason)
        self._h2.send_headers(stream_id, [(b":status", b"%d" % status), *(extra or [])], end_stream=True)

    def _data_received(self, event: h2.events.DataReceived) -> None:
        websocket = self._websockets.get(event.stream_id)
        if websocket is not None:
            websocket.data_received(event.data, event.flow_controlled_length)
            return
        stream = self._streams.get(event.stream_id)
        if stream is None or stream.response_done or stream.disconnected:
            # Nobody will read it: give the window straight back.
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        self._unacknowledged[event.stream_id] += event.flow_controlled_length
        stream.feed_body(event.data)

    def _trailers_received(self, event: h2.events.TrailersReceived) -> None:
        problem = trailers_problem(event.headers)
        if problem is not None:
            self._fail_connection(ErrorCodes.PROTOCOL_ERROR, f"malformed trailers: {problem}")

    def _stream_ended(self, event: h2.events.StreamEnded) -> None:
        websocket = self._websockets.get(event.stream_id)
        if websocket is not None:
            websocket.loseConnection()  # the client's side is done: so is the WebSocket (RFC 8441 section 6)
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.end_body()

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        websocket = self._websockets.get(event.stream_id)
        if websocket is not None:
            websocket.lost(Failure(ConnectionLost("the client reset the stream")))
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            if not stream.response_done:
                self._count_abuse("streams reset before their response", self.config.h2_max_resets)
            stream.disconnect()
            outbound = self._outbound.pop(event.stream_id, None)
            if outbound is not None:
                wake_all(outbound.waiters)
            self._forget(stream)

    def _window_updated(self, event: h2.events.WindowUpdated) -> None:
        self._stall.set(None)  # the client is reading; _send_pending sets it again if still blocked
        if event.stream_id:
            self._send_pending(event.stream_id)
        else:
            for stream_id in list(self._outbound):
                self._send_pending(stream_id)

    def _count_abuse(self, kind: str, limit: int) -> None:
        """Count what costs the server more than the client; past ``limit`` in 10 s, GOAWAY."""
        now = self.factory.clock.seconds()
        if now - self._abuse_window_start > 10:
            self._abuse_window_start = now
            self._abuse.clear()
        count = self._abuse[kind] = self._abuse.get(kind, 0) + 1
        if count == limit + 1:
            self._fail_connection(ErrorCodes.ENHANCE_YOUR_CALM, f"more than {limit} {kind} in 10 s")

    def _settings_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        for stream_id in list(self._outbound):
            self._send_pending(stream_id)

    def _terminated(self, event: h2.events.ConnectionTerminated) -> None:
        """The client sent GOAWAY. h2 lets nothing more be sent after it, so the streams
        still open end here: their apps see the client gone, as it is going."""
        self._lose_streams(connectionDone)
        self._close()

    # Flow control of request bodies.

    def body_consumed(self, stream: HTTPStream) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None:
            return
        size = self._unacknowledged.get(stream_id, 0)
        if size:
            self._unacknowledged[stream_id] = 0
            try:
                self._h2.acknowledge_received_data(size, stream_id)
                self._grow_windows(stream_id, size)
            except h2.exceptions.StreamClosedError:
                return
            self._flush_soon()

    def _grow_windows(self, stream_id: int, taken: int) -> None:
        """Open the stream's window (and the connection's with it) wider while its app keeps up."""
        size, connection_growth = self._windows.taken(stream_id, taken)
        if size:
            # To the new size exactly: h2 then returns consumed bytes up to it, never beyond.
            increment = size - self._h2.remote_flow_control_window(stream_id)
            if increment > 0:
                self._h2.increment_flow_control_window(increment, stream_id)
        if connection_growth:
            self._h2.increment_flow_control_window(connection_growth)

    # IPushProducer: the transport says whether the client reads what we write.

    def pauseProducing(self) -> None:
        # The client is not reading: read nothing more from it either, so that frames the
        # server must answer (PING, SETTINGS) cannot pile replies up in memory.
        self._write_paused = True
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self._write_paused = False
        if not self._closing:
            self.transport.resumeProducing()  # type: ignore[union-attr]
        for outbound in self._outbound.values():
            if not outbound.pending:
                wake_all(outbound.waiters)
        for websocket in self._websockets.values():
            websocket.writable()

    def stopProducing(self) -> None:
        pass  # connectionLost follows

    def drained(self, stream: HTTPStream) -> Awaitable[None] | None:
        stream_id = self._ids.get(stream)
        outbound = self._outbound.get(stream_id) if stream_id is not None else None
        if self._closing or (not self._write_paused and (outbound is None or not outbound.pending)):
            return None
        if outbound is None:
            outbound = self._outbound[stream_id] = _Outbound()  # type: ignore[index]
        waiter = self.factory.loop.create_future()
        outbound.waiters.append(waiter)
        return waiter

    # Frames out: stream.ResponseWriter.

    def write_informational(self, stream: HTTPStream, status: int, headers: Headers) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is not None and not self._closing:
            self._h2.send_headers(stream_id, [(b":status", b"%d" % status), *headers])
            self._flush_soon()

    def write_trailers(self, stream: HTTPStream, headers: Headers) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None:
            return
        outbound = self._outbound.get(stream_id)
        if outbound is None:
            outbound = self._outbound[stream_id] = _Outbound()
        outbound.trailers = headers  # sent once the data before them is
        self._send_pending(stream_id)
        self._flush_soon()
        self._response_complete(stream)

    def push(self, stream: HTTPStream, path: str, headers: Headers) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None or self._closing or not self._h2.remote_settings.enable_push:
            return
        authority = next((value for name, value in stream.scope["headers"] if name == b"host"), b"")
        request = [(b":method", b"GET"), (b":path", path.encode()), (b":scheme", self._connection.scheme.encode()),
                   (b":authority", authority), *headers]
        promised = self._h2.get_next_available_stream_id()
        try:
            self._h2.push_stream(stream_id, promised, request)
        except h2.exceptions.ProtocolError:
            return  # the client's stream limit, or the stream is closing: a push is only a hint
        self._flush_soon()
        self._open_stream(promised, request, ended=True)

    def write_response(self, stream: HTTPStream, status: int, headers: Headers, body: bytes, end: bool) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None:
            return
        config = self.config
        block = [(b":status", b"%d" % status)]
        server_header = config.server_header
        date_header = config.date_header
        for name, value in headers:
            name = name.lower()
            if name in _NOT_IN_RESPONSES:
                continue
            if value[:1] in _WHITESPACE or value[-1:] in _WHITESPACE:
                value = value.strip(b" \t")  # RFC 9113 section 8.2.1
            if name == b"server":
                server_header = None
            elif name == b"date":
                date_header = False
            block.append((name, value))
        if server_header:
            block.append((b"server", server_header))
        if date_header:
            block.append((b"date", self.factory.http_date()))
        if status in NO_BODY_STATUSES or stream.scope["method"] == "HEAD":
            body = b""
        try:
            self._h2.send_headers(stream_id, block, end_stream=end and not body)
        except h2.exceptions.StreamClosedError:
            return
        if body:
            self._send_data(stream_id, body, end)
        self._flush_soon()
        if end:
            self._response_complete(stream)

    def write_body(self, stream: HTTPStream, body: bytes, end: bool) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None:
            return
        if stream.scope["method"] == "HEAD" or stream.status in NO_BODY_STATUSES:
            body = b""
        self._send_data(stream_id, body, end)
        self._flush_soon()
        if end:
            self._response_complete(stream)

    def _send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        outbound = self._outbound.get(stream_id)
        if outbound is None:
            data = self._send_fitting(stream_id, data, end)
            if data is None:
                return  # the common case: it all fits
            outbound = self._outbound[stream_id] = _Outbound()
        outbound.pending += data
        outbound.end = end
        self._send_pending(stream_id)

    def _send_fitting(self, stream_id: int, data: bytes, end: bool) -> bytes | memoryview | None:
        """Send what of ``data`` the windows take now, in frames that are views of it (not
        copies); the rest, or ``None`` once all of it (and ``end``) is sent."""
        connection = self._h2
        try:
            room = min(connection.local_flow_control_window(stream_id), len(data))
        except h2.exceptions.StreamClosedError:
            return data  # _send_pending finds it closed
        if not data or room <= 0:
            return data
        frame_size = connection.max_outbound_frame_size
        view = memoryview(data)
        sent = 0
        while sent < room:
            size = min(frame_size, room - sent)
            last = end and sent + size == len(data)
            connection.send_data(stream_id, view[sent:sent + size], end_stream=last)
            sent += size
        return None if sent == len(data) else view[sent:]

    def _send_pending(self, stream_id: int) -> None:
        """Send what the windows allow, in frames as large as the peer takes."""
        outbound = self._outbound.get(stream_id)
        if outbound is None:
            return
        connection = self._h2
        pending = outbound.pending
        try:
            while pending:
                size = min(connection.local_flow_control_window(stream_id), len(pending))
                if size <= 0:
                    break
                last = outbound.end and size == len(pending)
                with memoryview(pending) as view:  # released before the bytearray shrinks
                    self._send_fitting(stream_id, view[:size].tobytes(), last)  # all of it: it fits
                del pending[:size]
                if last:
                    outbound.end = False
            if not pending and outbound.end:
                connection.end_stream(stream_id)
                outbound.end = False
            if not pending and outbound.trailers is not None:
                connection.send_headers(stream_id, outbound.trailers, end_stream=True)
                outbound.trailers = None
        except h2.exceptions.StreamClosedError:
            pending.clear()
        if pending:
            self._stall.set(self.config.h2_stall_timeout)
        else:
            if not self._write_paused:
                wake_all(outbound.waiters)
                websocket = self._websockets.get(stream_id)
                if websocket is not None:
                    websocket.writable()
            if not outbound.waiters:
                del self._outbound[stream_id]
            stream = self._streams.get(stream_id)
            if stream is not None and stream.response_done:
                self._forget(stream)

    def _response_complete(self, stream: HTTPStream) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None:
            return  # sending the last data already finished it
        outbound = self._outbound.get(stream_id)
        if outbound is None or not outbound.pending:
            self._forget(stream)

    def abort(self, stream: HTTPStream) -> None:
        stream_id = self._ids.get(stream)
        if stream_id is None:
            return
        try:
            self._h2.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
        except h2.exceptions.StreamClosedError:
            pass
        self._flush()
        self._outbound.pop(stream_id, None)
        self._forget(stream)

    def finished(self, stream: HTTPStream) -> None:
        request_log = self.factory.request_log
        if request_log is not None:
            request_log.http(stream)

    def _forget(self, stream: HTTPStream) -> None:
        stream_id = self._ids.pop(stream, None)
        if stream_id is None:
            return
        self._streams.pop(stream_id, None)
        self._unacknowledged.pop(stream_id, None)
        self._windows.close(stream_id)
        self._became_idle()

    def _became_idle(self) -> None:
        if self._idle():
            if self._closing:
                self._close()
            else:
                self._deadline.set(self.config.keep_alive_timeout)



def _split_fields(raw_headers: Headers) -> tuple[dict[bytes, bytes], Headers]:
    """A request's pseudo-header fields, and its other fields as the scope has them:
    ``:authority`` as the host (RFC 9113 section 8.3.1), cookie fields joined into one, last
    (section 8.2.3), no HTTP/1.1 hop-by-hop fields."""
    pseudo = {}
    headers: Headers = []
    cookies = []
    for name, value in raw_headers:
        if name[:1] == b":":
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)
        elif name not in _HOP_BY_HOP:
            headers.append((name, value))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    authority = pseudo.get(b":authority")
    if authority is not None:
        headers = [(b"host", authority), *(h for h in headers if h[0] != b"host")]
    return pseudo, headers


@implementer(ITransport)
class _WebSocketStream:
    """An extended CONNECT stream as the byte transport its WebSocket runs over (RFC 8441).

    Also the WebSocket's ``HandshakeWriter``: the handshake is answered with a ``200``
    HEADERS frame, or denied with a whole response on the stream. Flow control stands in
    for TCP's: data is acknowledged as the WebSocket reads it, and the WebSocket's
    ``send()`` waits while its data does not fit the client's window.
    """

    disconnecting = False
    protocol: WebSocketConnection

    def __init__(self, connection: H2Connection, stream_id: int) -> None:
        self._connection = connection
        self._stream_id = stream_id
        self._read_paused = False
        self._unacknowledged = 0
        self._producer: IPushProducer | None = None
        self._producer_paused = False
        self._ended = False

    # HandshakeWriter.

    def accept(self, transport: Any, headers: Headers) -> None:  # transport: this stream
        self._send_headers(200, headers, end=False)

    def deny(self, transport: Any, status: int, headers: Headers, body: bytes) -> None:
        self._send_headers(status, headers, end=not body)
        if body:
            self.write(body, end=True)
        self._ended = True

    def _send_headers(self, status: int, headers: Headers, end: bool) -> None:
        connection = self._connection
        block = [(b":status", b"%d" % status)]
        block += [(name.lower(), value) for name, value in headers if name.lower() not in _CONNECTION_SPECIFIC]
        if connection.config.server_header:
            block.append((b"server", connection.config.server_header))
        try:
            connection._h2.send_headers(self._stream_id, block, end_stream=end)
        except h2.exceptions.StreamClosedError:
            return
        connection._flush_soon()

    # Events from the connection.

    def data_received(self, data: bytes, flow_controlled_length: int) -> None:
        self._unacknowledged += flow_controlled_length
        if not self._read_paused:
            self._acknowledge()
        self.protocol.dataReceived(data)

    def _acknowledge(self) -> None:
        size, self._unacknowledged = self._unacknowledged, 0
        if size:
            try:
                self._connection._h2.acknowledge_received_data(size, self._stream_id)
            except h2.exceptions.StreamClosedError:
                return
            self._connection._flush_soon()

    def writable(self) -> None:
        """The client reads again: let the WebSocket's ``send()`` go on."""
        if self._producer is not None and self._producer_paused:
            self._producer_paused = False
            self._producer.resumeProducing()

    def lost(self, reason: Failure) -> None:
        connection = self._connection
        if connection._websockets.pop(self._stream_id, None) is not None:
            self.protocol.connectionLost(reason)
            connection._became_idle()

    # ITransport, as much of it as the WebSocket uses.

    def write(self, data: bytes, end: bool = False) -> None:
        connection = self._connection
        if self._ended or self._stream_id not in connection._websockets:
            return
        connection._send_data(self._stream_id, data, end)
        connection._flush_soon()
        if self._producer is not None and not self._producer_paused and (
                connection._write_paused or self._stream_id in connection._outbound):
            self._producer_paused = True
            self._producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self._ended:
            self.write(b"", end=True)
            self._ended = True
        self._connection.factory.clock.callLater(0, self.lost, Failure(connectionDone.value))

    def abortConnection(self) -> None:
        connection = self._connection
        if self._stream_id in connection._websockets:
            try:
                connection._h2.reset_stream(self._stream_id, ErrorCodes.CANCEL)
            except h2.exceptions.StreamClosedError:
                pass
            connection._outbound.pop(self._stream_id, None)
            connection._flush_soon()
            self.lost(Failure(ConnectionAborted()))

    def getPeer(self) -> object:
        return self._connection.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> object:
        return self._connection.transport.getHost()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self._read_paused = True

    def resumeProducing(self) -> None:
        self._read_paused = False
        self._acknowledge()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None
