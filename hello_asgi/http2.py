"""HTTP/2 connections on the h2 library: streams as ASGI exchanges, with flow control both ways.

Each stream is one ``h2_stream.H2Stream`` record in one map: a request's carries a
``stream.HTTPStream``, the same ASGI mapping HTTP/1.1 uses, and a WebSocket's an
``h2_websocket.H2WebSocket``. This module turns h2's events into stream events and the
streams' output into frames; it is the ``StreamOwner`` its streams write through.

Flow control: request body bytes are acknowledged (WINDOW_UPDATE) only once the app has
taken them with ``receive()``, so a client can have at most one stream window of body
buffered per stream. The connection window is opened to cover every stream's window, so
one app that does not read cannot stall the other streams of its connection. Response
data goes out as the peer's windows allow; ``send()`` waits while its stream has data
that does not fit.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any

import h2.events
import h2.exceptions
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .context import ServerContext
from .frame_budget import FrameBudget
from .flow import Drain
from .h2_engine import server_engine
from .h2_headers import is_origin_form, request_problem, response_block, split_request, trailers_problem
from .h2_stream import CLOSED, ENDING, OPEN, H2Stream
from .h2_websocket import H2WebSocket
from .h2_windows import ReceiveWindows
from .stream import Headers, HTTPStream, RequestHead, cancel_apps, extensions, wants_continue
from .timeouts import Deadline
from .transport import IConnectionTransport, SocketTransport
from .wire import http_date

if TYPE_CHECKING:
    from collections.abc import Callable


log = Logger(namespace="hello_asgi.http2")

FLUSH_AT = 256 * 1024  # bytes of response DATA written at once rather than at the end of the loop's turn



class _Life(enum.Enum):
    """The connection's states. OPEN -> DRAINING (``shutdown``: a graceful GOAWAY, the open
    streams finish) -> CLOSING (``_close``: every stream ended, the transport closing);
    OPEN -> CLOSING directly on a failure, an idle timeout or the client's GOAWAY; any ->
    LOST (``connectionLost``)."""

    OPEN = "open"
    DRAINING = "draining"
    CLOSING = "closing"
    LOST = "lost"


_OPEN, _DRAINING, _CLOSING, _LOST = _Life.OPEN, _Life.DRAINING, _Life.CLOSING, _Life.LOST


@implementer(IPushProducer)
class HTTP2Connection(Protocol):
    """One HTTP/2 connection, many concurrent streams, each running its own app call.

    @ivar _streams: every stream not yet ended, by id: the one map of them.
    @ivar _queued: the streams of ``_streams`` whose data waits for the peer's window.
    """

    transport: IConnectionTransport  # set by makeConnection, before any other call

    def __init__(self, context: ServerContext, upgrade: RequestHead | None = None) -> None:
        self.context = context
        self.config = context.config
        self._upgrade = upgrade
        self._streams: dict[int, H2Stream] = {}
        self._queued: dict[int, H2Stream] = {}
        self._life = _OPEN
        self._write_paused = False
        self._flush_scheduled = False
        self._goaway_sent: int | None = None  # the last stream id a graceful GOAWAY promised
        self._handlers: dict[type, Callable[[Any], None]] = {
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
        context = self.context
        self.transport.registerProducer(self, True)
        self._scope = context.scope_of(self.transport)
        self._server = config.server_header or None
        self._date = http_date if config.date_header else None
        self._h2 = server_engine(config)
        self._deadline = Deadline(context.ticks, self._idle_timeout)
        self._stall = Deadline(context.ticks, self._stalled)
        self._windows = ReceiveWindows(config.h2_initial_window_size, config.h2_max_window_size, context.clock.seconds)
        self._budget = FrameBudget(context.clock.seconds, config.h2_max_control_frames, config.h2_max_empty_frames)
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
        self._life = _LOST
        self._deadline.cancel()
        self._stall.cancel()
        self._close_streams(reason)

    def _close_streams(self, reason: Failure) -> None:
        """End every stream: the client is gone, or about to be."""
        for stream in list(self._streams.values()):
            self.close_stream(stream, reason)

    def _idle_timeout(self) -> None:
        if not self._streams:
            self._h2.close_connection()
            self._close()

    def _stalled(self) -> None:
        if self._queued:
            self._fail_connection(ErrorCodes.FLOW_CONTROL_ERROR,
                                  f"its flow-control window stayed shut for {self.config.h2_stall_timeout} s")

    def _fail_connection(self, code: ErrorCodes, why: str) -> None:
        """Every fatal GOAWAY: the connection ends for the client's fault, with ``code`` (h2's
        own GOAWAY, if h2 sent one already), one log line, and every stream's app told the
        client is gone."""
        log.warn("GOAWAY {code} to {client}: {why}", code=code.name, client=self._scope.client_text, why=why)
        if self._h2.state_machine.state is not ConnectionState.CLOSED:
            self._h2.close_connection(code)
        self._close(Failure(ConnectionLost(why)))

    def shutdown(self) -> None:
        """GOAWAY: no new streams; close once the open ones are done.

        The frame is written directly: h2's own ``close_connection`` would also stop the
        streams still open from sending their responses.
        """
        if self._life is not _OPEN:
            return
        self._life = _DRAINING
        self._goaway_sent = self._h2.highest_inbound_stream_id
        self._flush()
        goaway = GoAwayFrame(0, last_stream_id=self._goaway_sent, error_code=ErrorCodes.NO_ERROR)
        self.transport.write(goaway.serialize())
        for stream in list(self._streams.values()):
            if stream.websocket is not None:
                stream.websocket.protocol.shutdown()
        if not self._streams:
            self._close()

    def cancel_apps(self) -> list[asyncio.Task[None]]:
        streams = list(self._streams.values())
        tasks = cancel_apps(stream.exchange for stream in streams if stream.exchange is not None)
        for stream in streams:
            if stream.websocket is not None:
                tasks += stream.websocket.protocol.cancel_apps()
        return tasks

    def _close(self, reason: Failure = connectionDone) -> None:
        """The one way this side ends the connection: the streams still open end with
        ``reason``, what h2 holds is sent, then the transport closes (unregistering first,
        since TLS waits for its producer)."""
        if self._life is _CLOSING or self._life is _LOST:
            return
        self._life = _CLOSING
        self._close_streams(reason)
        self._flush()
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _flush(self) -> None:
        self._flush_scheduled = False
        pieces = self._h2.pieces_to_send()
        if len(pieces) > 1:
            if type(self.transport) is SocketTransport:
                self.transport.writeSequence(pieces)  # gathered by one sendmsg, not joined
            else:
                self.transport.write(b"".join(pieces))  # Twisted's transports take bytes only
        elif pieces:
            self.transport.write(pieces[0])  # bytes: h2's buffer, or an empty DATA frame's header

    def _flush_soon(self) -> None:
        """Write what the apps produced in this turn of the loop as one write, not one each;
        at once from ``FLUSH_AT`` bytes of DATA, so that the transport's backpressure reaches
        a ``send()`` that never yields (and a fast stream is not all held here first)."""
        if self._h2.queued >= FLUSH_AT:
            self._flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.context.loop.call_soon(self._flush)

    # Frames in.

    def dataReceived(self, data: bytes) -> None:
        if self._life is _CLOSING or self._life is _LOST:
            return
        data, over_budget = self._budget.admit(data, bool(self._queued))
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self._fail_connection(error.error_code, f"HTTP/2 protocol error: {error}")
            return
        self._handle(events)
        if over_budget is not None:
            self._fail_connection(ErrorCodes.ENHANCE_YOUR_CALM, over_budget)
            return
        self._flush()

    def _handle(self, events: list[h2.events.Event]) -> None:
        handlers = self._handlers
        for event in events:
            if self._life is not _OPEN and self._h2.state_machine.state is ConnectionState.CLOSED:
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
        if len(self._streams) >= self.config.h2_max_concurrent_streams:
            self._h2.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)  # retryable; the rest go on
            self._count_abuse("streams past the limit", self.config.h2_max_resets)
            return
        self._open_stream(event.stream_id, event.headers, ended=event.stream_ended is not None)

    def _open_stream(self, stream_id: int, raw_headers: Headers, ended: bool) -> None:
        """A request: served on a stream of its own, refused, or a WebSocket's CONNECT."""
        pseudo, headers, trailers = split_request(raw_headers)
        method, path = pseudo.get(b":method", b""), pseudo.get(b":path", b"")
        raw_path, _, query = path.partition(b"?")
        if method == b"CONNECT":
            self._connect(stream_id, RequestHead(method, path, raw_path, query, headers), pseudo.get(b":protocol", b""))
            return
        if not (is_origin_form(path) or (path == b"*" and method == b"OPTIONS")):
            self._refuse(stream_id, 400, "malformed :path")
            return
        context = self.context
        offered = extensions(True, trailers, bool(self._h2.remote_settings.enable_push) and stream_id % 2 == 1)
        scope = self._scope.http(method.decode("ascii"), "2", raw_path, query, headers, offered)
        stream = self._new_stream(stream_id)
        stream.window = self._windows.open()
        exchange = stream.exchange = HTTPStream(scope, stream, body_complete=ended)
        if not ended:
            exchange.expect_continue = wants_continue(headers)  # (RFC 9110 section 10.1.1, over HTTP/2 too)
        exchange.task = context.start(exchange)
        limit = self.config.max_requests_per_connection
        if limit and stream_id % 2 == 1 and (stream_id + 1) // 2 >= limit:
            self.shutdown()  # the last stream this connection serves

    def _new_stream(self, stream_id: int) -> H2Stream:
        """The one way in: a stream's record, in the map until ``close_stream``."""
        stream = self._streams[stream_id] = H2Stream(stream_id, self)
        if self._write_paused:
            self._hold(stream)
        self._deadline.set(None)
        return stream

    def _connect(self, stream_id: int, request: RequestHead, protocol: bytes) -> None:
        """Extended CONNECT with ``:protocol websocket`` opens a WebSocket (RFC 8441); this
        server is no proxy, so a plain CONNECT gets 405 and another protocol 501."""
        from .websocket import WebSocketConnection, connect_problem  # loaded with the first WebSocket

        problem = connect_problem(request, protocol, self.config.websocket)
        if problem is not None:
            status, reason, extra = problem
            self._refuse(stream_id, status, reason, extra)
            return
        stream = self._new_stream(stream_id)
        websocket = stream.websocket = H2WebSocket(self, stream, self.context.clock)
        websocket.protocol = WebSocketConnection(self.context, request, "2", websocket, self._scope)
        websocket.protocol.makeConnection(websocket)

    def _refuse(self, stream_id: int, status: int, reason: str, extra: Headers | None = None) -> None:
        """Answer a request that is not served with ``status`` and no body, as HTTP/1.1
        answers the same request, and log why."""
        log.info("Refused a request from {client}: {status} {reason}", client=self._scope.client_text,
                 status=status, reason=reason)
        self._h2.send_headers(stream_id, response_block(status, extra or [], self._server, self._date),
                              end_stream=True)

    def _data_received(self, event: h2.events.DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            exchange = stream.exchange
            if exchange is not None:
                if stream.state is OPEN:
                    stream.unacknowledged += event.flow_controlled_length
                    exchange.feed_body(event.data)
                    return
            elif stream.websocket is not None:
                stream.websocket.data_received(event.data, event.flow_controlled_length)
                return
        # Nobody will read it: give the window straight back.
        self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _trailers_received(self, event: h2.events.TrailersReceived) -> None:
        problem = trailers_problem(event.headers)
        if problem is not None:
            self._fail_connection(ErrorCodes.PROTOCOL_ERROR, f"malformed trailers: {problem}")

    def _stream_ended(self, event: h2.events.StreamEnded) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        if stream.exchange is not None:
            stream.exchange.end_body()
        elif stream.websocket is not None:
            stream.websocket.loseConnection()  # the client's side is done: so is the WebSocket (RFC 8441 section 6)

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        if stream.exchange is not None and stream.state is OPEN:
            self._count_abuse("streams reset before their response", self.config.h2_max_resets)
        self.close_stream(stream, Failure(ConnectionLost("the client reset the stream")))

    def _window_updated(self, event: h2.events.WindowUpdated) -> None:
        self._stall.set(None)  # the client is reading; _send_pending sets it again if still blocked
        if event.stream_id:
            stream = self._queued.get(event.stream_id)
            if stream is not None:
                self._send_pending(stream)
        else:
            self._send_all_pending()

    def _settings_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        self._send_all_pending()

    def _count_abuse(self, kind: str, limit: int) -> None:
        """Count what costs the server more than the client; past ``limit`` in 10 s, GOAWAY."""
        now = self.context.clock.seconds()
        if now - self._abuse_window_start > 10:
            self._abuse_window_start = now
            self._abuse.clear()
        count = self._abuse[kind] = self._abuse.get(kind, 0) + 1
        if count == limit + 1:
            self._fail_connection(ErrorCodes.ENHANCE_YOUR_CALM, f"more than {limit} {kind} in 10 s")

    def _terminated(self, event: h2.events.ConnectionTerminated) -> None:
        """The client sent GOAWAY. h2 lets nothing more be sent after it, so the streams
        still open end here: their apps see the client gone, as it is going."""
        self._close()

    # IPushProducer: the transport says whether the client reads what we write.

    def pauseProducing(self) -> None:
        # The client is not reading: read nothing more from it either, so that frames the
        # server must answer (PING, SETTINGS) cannot pile replies up in memory.
        self._write_paused = True
        self.transport.pauseProducing()
        for stream in self._streams.values():
            self._hold(stream)

    def resumeProducing(self) -> None:
        self._write_paused = False
        if self._life is _OPEN or self._life is _DRAINING:
            self.transport.resumeProducing()
        for stream in list(self._streams.values()):
            if stream.pending is None:
                self._writable(stream)

    def stopProducing(self) -> None:
        pass  # connectionLost follows

    def _hold(self, stream: H2Stream) -> None:
        """``stream`` may not write more for now: its ``send()`` waits."""
        drain = stream.drain
        if drain is None:
            drain = stream.drain = Drain(self.context.loop)
        drain.pause()

    def _writable(self, stream: H2Stream) -> None:
        """``stream`` may write again: nothing of it waits, and the client reads."""
        if stream.drain is not None:
            stream.drain.resume()
        if stream.websocket is not None:
            stream.websocket.writable()

    # StreamOwner: what the streams ask of their connection (h2_stream.py).

    def send_response(self, stream: H2Stream, status: int, headers: Headers, body: bytes, end: bool) -> bool:
        try:
            self._h2.send_headers(stream.id, response_block(status, headers, self._server, self._date),
                                  end_stream=end and not body)
        except h2.exceptions.StreamClosedError:  # h2 closed it: end it here too, after the caller's turn
            self.context.loop.call_soon(self.close_stream, stream, Failure(ConnectionLost("the stream was closed")))
            return False
        if body:
            self.send_data(stream, body, end)
        else:
            self._flush_soon()
        return True

    def send_data(self, stream: H2Stream, data: bytes, end: bool) -> None:
        pending = stream.pending
        if pending is None:
            rest = self._send_fitting(stream.id, data, end)
            if rest is None:  # the common case: it all fits
                self._flush_soon()
                return
            pending = stream.pending = bytearray(rest)
            self._queued[stream.id] = stream
            self._hold(stream)  # its send() waits until the queue is sent
        else:
            pending += data
        stream.end = end
        self._send_pending(stream)
        self._flush_soon()

    def send_trailers(self, stream: H2Stream, headers: Headers) -> None:
        if stream.pending is not None:
            stream.trailers = headers  # sent once the data before them is
            self._send_pending(stream)
        else:
            try:
                self._h2.send_headers(stream.id, headers, end_stream=True)
            except h2.exceptions.StreamClosedError:
                pass
        self._flush_soon()

    def acknowledge(self, stream: H2Stream) -> None:
        size = stream.unacknowledged
        if not size or stream.state is CLOSED:
            return
        stream.unacknowledged = 0
        try:
            self._h2.acknowledge_received_data(size, stream.id)
            self._grow_windows(stream, size)
        except h2.exceptions.StreamClosedError:
            return
        self._flush_soon()

    def reset(self, stream: H2Stream, code: ErrorCodes, reason: Failure | None) -> None:
        if stream.state is CLOSED:
            return
        try:
            self._h2.reset_stream(stream.id, code)
        except h2.exceptions.StreamClosedError:
            pass
        self._flush()
        self.close_stream(stream, reason)

    def close_stream(self, stream: H2Stream, reason: Failure | None) -> None:
        """The one way a stream ends, whatever ends it: its response sent, an abort, the
        client's reset, the connection's end, a WebSocket closed. ``reason``, if any, is
        why the client is gone, for its app."""
        if stream.state is CLOSED:
            return
        stream.state = CLOSED
        del self._streams[stream.id]
        if stream.pending is not None:
            stream.pending = None
            del self._queued[stream.id]
        if stream.drain is not None:
            stream.drain.resume()  # a send() that waits learns now
        if stream.window is not None:
            self._windows.close(stream.window)
        # The record lets go of its ASGI side: with no cycle between them, a request's
        # objects are freed as soon as its app returns, and the collector never runs for them.
        websocket, stream.websocket = stream.websocket, None
        exchange, stream.exchange = stream.exchange, None
        if websocket is not None:
            websocket.closed(reason or Failure(connectionDone.value))
        elif reason is not None and exchange is not None:
            exchange.disconnect()
        if not self._streams:
            self._became_idle()

    def push(self, stream: H2Stream, path: str, headers: Headers) -> None:
        if self._life is not _OPEN or not self._h2.remote_settings.enable_push or stream.exchange is None:
            return
        authority = next((value for name, value in stream.exchange.scope["headers"] if name == b"host"), b"")
        request = [(b":method", b"GET"), (b":path", path.encode()), (b":scheme", self._scope.scheme.encode()),
                   (b":authority", authority), *headers]
        promised = self._h2.get_next_available_stream_id()
        try:
            self._h2.push_stream(stream.id, promised, request)
        except h2.exceptions.ProtocolError:
            return  # the client's stream limit, or the stream is closing: a push is only a hint
        self._flush_soon()
        self._open_stream(promised, request, ended=True)

    def finished(self, exchange: HTTPStream) -> None:
        request_log = self.context.request_log
        if request_log is not None:
            request_log.http(exchange)

    def _became_idle(self) -> None:
        if self._life is _DRAINING:
            self._close()
        elif self._life is _OPEN:
            self._deadline.set(self.config.keep_alive_timeout)

    # Flow control: response data out as the peer's windows allow, request bodies acknowledged.

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
        connection.send_in_frames(stream_id, data, room, end and room == len(data))
        return None if room == len(data) else memoryview(data)[room:]

    def _send_pending(self, stream: H2Stream) -> None:
        """Send what of the stream's queue the windows allow; once it is all sent, the
        stream may write again, and a complete response's stream ends."""
        pending = stream.pending
        if pending is None:
            return
        try:
            self._send_queued(stream, pending)
        except h2.exceptions.StreamClosedError:
            pending.clear()
        if pending:
            self._stall.set(self.config.h2_stall_timeout)
            return
        stream.pending = None
        del self._queued[stream.id]
        if not self._write_paused:
            self._writable(stream)
        if stream.state is ENDING:
            self.close_stream(stream, None)

    def _send_queued(self, stream: H2Stream, pending: bytearray) -> None:
        """Send the queue in frames as large as the peer takes, then END_STREAM or the
        trailers owed after it, once it is empty."""
        connection = self._h2
        stream_id = stream.id
        while pending:
            size = min(connection.local_flow_control_window(stream_id), len(pending))
            if size <= 0:
                return
            last = stream.end and size == len(pending)
            with memoryview(pending) as view:  # released before the bytearray shrinks
                self._send_fitting(stream_id, view[:size].tobytes(), last)  # all of it: it fits
            del pending[:size]
            if last:
                stream.end = False
        if stream.end:
            stream.end = False
            connection.end_stream(stream_id)
        if stream.trailers is not None:
            trailers, stream.trailers = stream.trailers, None
            connection.send_headers(stream_id, trailers, end_stream=True)

    def _send_all_pending(self) -> None:
        for stream in list(self._queued.values()):
            self._send_pending(stream)

    def _grow_windows(self, stream: H2Stream, taken: int) -> None:
        """Open the stream's window (and the connection's with it) wider while its app keeps up."""
        window = stream.window
        if window is None:
            return
        size, connection_growth = self._windows.taken(window, taken)
        if size:
            # To the new size exactly: h2 then returns consumed bytes up to it, never beyond.
            increment = size - self._h2.remote_flow_control_window(stream.id)
            if increment > 0:
                self._h2.increment_flow_control_window(increment, stream.id)
        if connection_growth:
            self._h2.increment_flow_control_window(connection_growth)
