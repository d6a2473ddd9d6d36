"""WebSocket connections on autobahn's framing, over HTTP/1.1 (Upgrade) or an HTTP/2 stream.

autobahn does what is easy to get wrong: framing, masking, fragment reassembly, UTF-8
validation, permessage-deflate with a bound on inflation, pings and the closing handshake.
The opening handshake is not handed to it as text: the request was parsed once, by
httptools or h2, and autobahn re-parsing a re-serialised copy is how a second parser
comes to read a request differently (Daphne, CVE-2026-44546). So this module checks the
parsed request itself, writes the handshake answer through a ``HandshakeWriter`` (a
``101`` on HTTP/1.1, a ``200`` HEADERS frame on HTTP/2) and moves autobahn straight to
its open state. The ASGI side is ``websocket_session.WebSocketSession``. One shape of
frame, small, whole and unremarkable, is read before autobahn sees it, by
``websocket_frames.simple_messages``: the frame of chat and echo traffic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

from autobahn.twisted.util import peer2str
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.wamp.types import TransportDetails
from autobahn.websocket.compress import PerMessageDeflate, PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .config import Config
from .context import ServerContext
from .flow import Drain
from .stream import ConnectionScope, RequestHead
from .transport import IConnectionTransport
from .websocket_frames import simple_messages
from .websocket_session import SENDABLE_CLOSE_CODES, WebSocketDisconnected, WebSocketSession, subprotocols
from .wire import Headers, head

log = Logger(namespace="hello_asgi.websocket")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_OPEN = WebSocketServerProtocol.STATE_OPEN
_CONNECTING = WebSocketServerProtocol.STATE_CONNECTING
# Close codes registered since autobahn's list was written: 1014 Bad Gateway (IANA registry).
_REGISTERED_SINCE_AUTOBAHN = SENDABLE_CLOSE_CODES - set(WebSocketServerProtocol.CLOSE_STATUS_CODES_ALLOWED)


class _Timers:
    """Plain reactor timers for autobahn, in place of its batched ones: a connection's
    timers then go when it does, instead of lingering in a shared bucket until it fires."""

    def __init__(self, reactor: IReactorTime) -> None:
        self.call_later = reactor.callLater


def autobahn_options(config: Config, reactor: IReactorTime) -> WebSocketServerFactory:
    """The autobahn factory that carries the limits into every connection's framing."""
    options = WebSocketServerFactory(server=None)
    options._batched_timer = _Timers(reactor)
    options.setProtocolOptions(
        maxFramePayloadSize=config.ws_max_frame_size,
        maxMessagePayloadSize=config.ws_max_message_size,  # checked after inflation too
        openHandshakeTimeout=config.ws_handshake_timeout,
        closeHandshakeTimeout=5,
        autoPingInterval=config.ws_ping_interval,
        autoPingTimeout=config.ws_ping_timeout,
        failByDrop=False,  # a violation gets a close frame with its code (1002, 1007, 1009)
        tcpNoDelay=True,
    )
    return options


def connect_problem(request: RequestHead, protocol: bytes, serving: bool) -> tuple[int, str, Headers] | None:
    """Why an extended CONNECT (RFC 8441 over HTTP/2, RFC 9220 over HTTP/3) opens no
    WebSocket, or ``None``: this server is no proxy, so a plain CONNECT gets 405, another
    ``:protocol`` 501; one for a WebSocket (while ``serving`` them) has RFC 8441's rules."""
    if protocol != b"websocket" or not serving:
        return (405, "this server is not a proxy", []) if not protocol else (501, "unknown :protocol", [])
    return handshake_problem(request, http2=True)


def handshake_problem(request: RequestHead, http2: bool) -> tuple[int, str, Headers] | None:
    """Why the request cannot open a WebSocket (status, reason, extra headers), or ``None``.

    RFC 6455 section 4.2.1 over HTTP/1.1; over HTTP/2 (RFC 8441) the Upgrade, Connection
    and key fields have no place, and the method was CONNECT with ``:protocol websocket``.
    """
    fields: dict[bytes, list[bytes]] = {}
    for name, value in request.headers:
        fields.setdefault(name, []).append(value)
    versions = fields.get(b"sec-websocket-version", [])
    if (versions or not http2) and [v.strip() for v in versions] != [b"13"]:
        return 426, "this server speaks WebSocket version 13", [(b"sec-websocket-version", b"13")]
    if http2:
        return None
    if request.method != b"GET":
        return 400, "a WebSocket handshake is a GET request", []
    connection = b",".join(fields.get(b"connection", [])).lower()
    if b"upgrade" not in (token.strip() for token in connection.split(b",")):
        return 400, "a WebSocket handshake needs 'Connection: Upgrade'", []
    keys = fields.get(b"sec-websocket-key", [])
    try:
        valid_key = len(keys) == 1 and len(base64.b64decode(keys[0].strip(), validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        return 400, "a WebSocket handshake needs one Sec-WebSocket-Key of 16 bytes in base64", []
    return None


class HandshakeWriter(Protocol):
    """Writes the answer to a WebSocket handshake, the HTTP/1.1 way or the HTTP/2 way."""

    def accept(self, transport: ITransport, headers: Headers) -> None:
        """Answer on ``transport`` (the connection's) that the WebSocket is open; frames follow."""

    def deny(self, transport: ITransport, status: int, headers: Headers, body: bytes) -> None:
        """Answer with a complete HTTP response instead."""


class HTTP11Handshake:
    """The HTTP/1.1 answers: ``101 Switching Protocols``, or a ``Connection: close`` response."""

    def __init__(self, request: RequestHead, context: ServerContext) -> None:
        self._key = next(value.strip() for name, value in request.headers if name == b"sec-websocket-key")
        self._context = context

    def accept(self, transport: ITransport, headers: Headers) -> None:
        accept = base64.b64encode(hashlib.sha1(self._key + _GUID).digest())
        own = b"upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: " + accept + b"\r\n"
        transport.write(head(101, headers, own, *self._stamps()))

    def deny(self, transport: ITransport, status: int, headers: Headers, body: bytes) -> None:
        own = b"content-length: %d\r\nconnection: close\r\n" % len(body)
        transport.write(head(status, headers, own, *self._stamps(), body, drop_length=True))

    def _stamps(self) -> tuple[bytes | None, bool]:
        """The Server value (``None`` if off) and whether Date is on, for ``wire.head``."""
        return self._context.config.server_header, self._context.config.date_header


@implementer(IPushProducer)
class WebSocketConnection(WebSocketServerProtocol):
    """One WebSocket: autobahn's framing below, an ASGI ``WebSocketSession`` above.

    Backpressure both ways: ``send()`` waits while the transport's buffer is full (this
    is its producer), and reading stops while the app leaves ``ws_max_queue`` messages
    untaken, and while a client that does not read what is written to it pings: it is owed
    one pong, the latest (RFC 6455 section 5.5.3), not one a ping. (A client that sends
    data while it does not read is read on, within ``ws_max_queue``: one that reads only
    once it has sent would otherwise wait for the server as the server waits for it.)

    A broken frame after valid messages fails the connection only once the app has
    answered them (it waits for the next message), as it would have had it answered at
    once; see ``_fail_after_answers``.
    """

    websocket_version = 13
    session: WebSocketSession
    transport: IConnectionTransport  # set by makeConnection, before any other call
    # autobahn copies these from its options (``self.factory``) onto each connection, in
    # _connectionMade, by name; they are read here too.
    maxFramePayloadSize: int
    maxMessagePayloadSize: int
    closeHandshakeTimeout: float
    autoPingInterval: float
    tcpNoDelay: bool
    logOctets: bool

    def __init__(self, context: ServerContext, request: RequestHead, http_version: str,
                 handshake: HandshakeWriter, connection: ConnectionScope | None = None) -> None:
        super().__init__()
        # autobahn's code reads its options (limits, timeouts, its timers) off ``self.factory``,
        # so that name stays autobahn's: the ASGI server this connection serves is ``context``.
        self.factory = context.websocket_options
        self.context = context
        self._request = request
        self._http_version = http_version
        self._handshake = handshake
        self._connection = connection
        self._reading_stopped: set[str] = set()  # why: "handshake", "queue", "pongs", "failure"
        self._pong_owed: bytes | None = None  # the latest ping's payload, while writes wait
        self._failure_waits = False  # a protocol failure waits for the app's answers
        self._failure_waited = False  # one did: the next is not held
        self._failure_first: Callable[[], object] | None = None
        self._failure_timeout: IDelayedCall | None = None
        self._drain = Drain(self.context.loop)
        self._shutting_down = False

    def connectionMade(self) -> None:
        # autobahn's own connectionMade, less reading TLS details (tls-unique, the peer's
        # certificate) off the transport on every connection: nothing here uses them, and a
        # wrapper above TLS (a twisted.web site's WrappingFactory policies) hides them.
        self._transport_details = TransportDetails(
            channel_type=TransportDetails.CHANNEL_TYPE_TCP,
            channel_framing=TransportDetails.CHANNEL_FRAMING_WEBSOCKET,
            peer=peer2str(self.transport),
            is_server=True,
        )
        self.peer = self._transport_details.peer
        self._connectionMade()  # copies the options, tcpNoDelay among them, from the factory
        # The largest frame simple_messages may read: autobahn's own limits (0 for none).
        limits = [size for size in (self.maxFramePayloadSize, self.maxMessagePayloadSize) if size]
        self._simple_limit = min(limits, default=1 << 64)
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(self.tcpNoDelay)
            except OSError:
                pass  # not TCP: a UNIX socket
        self.transport.registerProducer(self, True)
        self._stop_reading("handshake")  # read no frames before the accept
        if self._connection is None:
            self._connection = self.context.scope_of(self.transport)
        request = self._request
        scope = self._connection.websocket(self._http_version, request.raw_path, request.query_string,
                                           request.headers, subprotocols(request.headers))
        session = self.session = WebSocketSession(scope, self)
        session.task = self.context.start(session)

    def processHandshake(self) -> None:
        """autobahn's hook for bytes that arrive before the handshake is answered: they wait
        in ``self.data`` until the app accepts (the request itself was parsed already)."""

    # The session's requests: websocket_session.WebSocketChannel.

    def accept(self, subprotocol: str | None, headers: Headers) -> None:
        if self.state != _CONNECTING:
            return  # the handshake timed out, or the client left
        fields: Headers = []
        if subprotocol is not None:
            fields.append((b"sec-websocket-protocol", subprotocol.encode("latin-1")))
        compression = self._negotiate_compression()
        if compression is not None:
            fields.append((b"sec-websocket-extensions", compression.encode("latin-1")))
        self._handshake.accept(self.transport, fields + headers)
        self.session.status = 101 if self._http_version == "1.1" else 200
        self._open(subprotocol)

    def _negotiate_compression(self) -> str | None:
        """Accept the client's first permessage-deflate offer we can honour (RFC 7692)."""
        if not self.context.config.ws_per_message_deflate:
            return None
        for name, value in self._request.headers:
            if name != b"sec-websocket-extensions":
                continue
            for extension, params in self._parseExtensionsHeader(value.decode("latin-1")):
                if extension != "permessage-deflate":
                    continue
                try:
                    offer = PerMessageDeflateOffer.parse(params)
                except Exception:
                    continue  # a malformed offer is declined, not fatal
                accept = PerMessageDeflateOfferAccept(offer)
                self._perMessageCompress = PerMessageDeflate.create_from_offer_accept(True, accept)
                self.websocket_extensions_in_use = [self._perMessageCompress]
                return accept.get_extension_string()
        return None

    def _open(self, subprotocol: str | None) -> None:
        """Move autobahn to its open state, as its own handshake would have."""
        self.websocket_protocol_in_use = subprotocol
        self.state = _OPEN
        if self.openHandshakeTimeoutCall is not None:
            self.openHandshakeTimeoutCall.cancel()
            self.openHandshakeTimeoutCall = None
        self.inside_message = False
        self.current_frame = None  # type: ignore[assignment]  # as autobahn sets it: its annotation omits None
        if self.autoPingInterval:
            self.autoPingPendingCall = self.factory._batched_timer.call_later(self.autoPingInterval,
                                                                               self._sendAutoPing)
        if self._shutting_down:
            self.close(1001, "server shutting down")
            return
        self._read_again("handshake")
        if self.data:
            self.consumeData()

    def deny(self, status: int, headers: Headers, body: bytes) -> None:
        if self.state != _CONNECTING:
            return
        self._handshake.deny(self.transport, status, headers, body)
        self.wasClean = True
        self.dropConnection(abort=False)

    def send_message(self, payload: bytes, binary: bool) -> None:
        if self.state != _OPEN:
            raise WebSocketDisconnected("the WebSocket is closing; cannot send")
        if self._perMessageCompress is not None:
            self.sendMessage(payload, binary)
            return
        # An uncompressed message is one final frame whose header is two to ten bytes
        # (RFC 6455 section 5.2; servers never mask): written here, it costs a tenth of
        # autobahn's general-purpose frame builder, which serves fuzzing clients too.
        size = len(payload)
        opcode = 0x82 if binary else 0x81
        if size < 126:
            header = bytes((opcode, size))
        elif size < 65536:
            header = struct.pack("!BBH", opcode, 126, size)
        else:
            header = struct.pack("!BBQ", opcode, 127, size)
        if size < 4096:
            self.transport.write(header + payload)
        else:  # two writes rather than a copy of a large payload
            self.transport.write(header)
            self.transport.write(payload)

    def close(self, code: int, reason: str) -> None:
        if self.state == _OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)
        self._fail_now()  # the app closed first: the broken frame, read now, ends the closing

    def drained(self) -> Awaitable[None] | None:
        return self._drain.wait() if self.state == _OPEN else None

    def message_taken(self) -> None:
        if "queue" in self._reading_stopped and self.session.queued < self.context.config.ws_max_queue:
            self._read_again("queue")

    def waiting(self) -> None:
        if self._failure_waits:
            self._fail_now()

    def finished(self, session: WebSocketSession) -> None:
        request_log = self.context.request_log
        if request_log is not None:
            request_log.websocket(session)

    # autobahn's hot path, less what this server does not use: its debug lines build their
    # arguments (coloured text) even when debug logging is off, and every message is also
    # fired to observers through a Deferred. These three were a third of the CPU time of an
    # echo round trip; the behaviour is otherwise autobahn's own. Before autobahn sees a
    # read, the small whole frames at its start are read by ``simple_messages``, which
    # halves the cost of an echo round trip again (the module says how it stays exact).

    def dataReceived(self, data: bytes) -> None:
        if self._failure_waits:  # read after the reading stopped (TLS, an HTTP/2 window)
            self.data += data
            return
        if (self.state == _OPEN and self._perMessageCompress is None and not self.data
                and self.current_frame is None and not self.inside_message):
            messages, taken = simple_messages(data, self._simple_limit)
            if messages:
                for message in messages:
                    self._deliver(message)
                if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                    self._cancelAutoPingTimeoutCall()  # a data frame shows the peer alive, as in autobahn
                if taken == len(data):
                    return
                data = data[taken:]
        self._dataReceived(data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if sync or chopsize or self.send_queue or self.logOctets:
            super().sendData(data, sync, chopsize)
        else:
            self.transport.write(data)

    def onMessageEnd(self) -> None:
        if not self.failedByMe:
            data = self.message_data
            self.onMessage(data[0] if len(data) == 1 else b"".join(data), self.message_is_binary)
        self.message_data = None  # type: ignore[assignment]  # as autobahn sets it: its annotation omits None

    # autobahn's events.

    def onPing(self, payload: bytes) -> None:
        if self._drain.paused:
            self._pong_owed = payload  # answered once writes go on again, with the latest ping's
            self._stop_reading("pongs")  # till then, what it sends only adds to what it does not read
        else:
            self.sendPong(payload)

    # autobahn's failures. Its own server answers each message before it reads the next
    # frame; here the app answers later, on the loop. A failure found in the frames after
    # a message the app has not answered yet would close the connection under it, and its
    # answer be refused: so the failure waits, reading stopped at the broken frame, until
    # the app waits for its next message, closes, or has had ``closeHandshakeTimeout``
    # seconds; then autobahn reads on from that frame, and fails there. With nothing to
    # answer, it fails at once.

    def _protocol_violation(self, reason: str) -> bool:
        return self._fail_after_answers(reason, super()._protocol_violation)

    def _invalid_payload(self, reason: str) -> bool:
        return self._fail_after_answers(reason, super()._invalid_payload)

    def _fail_after_answers(self, reason: str, fail: Callable[[str], bool]) -> bool:
        """Fail now, or hold the failure while the app owes answers; ``True``, that autobahn
        stop reading, while it is held."""
        frame = self.current_frame
        if (self._failure_waited or self.state != _OPEN or not self.session.owes_answers
                or (frame is not None and frame.opcode > 7)):  # a control frame's own checks go on
            return fail(reason)
        self._failure_waits = self._failure_waited = True
        # A fault in a frame's header is found again when autobahn reads it again; one in
        # its payload (bad UTF-8), read already, is reported first.
        self._failure_first = None if frame is None else functools.partial(fail, reason)
        self._stop_reading("failure")
        self._failure_timeout = self.factory._batched_timer.call_later(self.closeHandshakeTimeout, self._fail_now)
        return True

    def _fail_now(self) -> None:
        """Let autobahn read on from the broken frame, which fails the connection."""
        if not self._failure_waits:
            return
        self._failure_waits = False
        timeout = self._failure_timeout  # set with _failure_waits
        if timeout is not None and timeout.active():
            timeout.cancel()
        first, self._failure_first = self._failure_first, None
        if first is not None:
            first()
        self._read_again("failure")
        self.consumeData()

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:
        """autobahn's answer to a close frame, for the codes registered since its list was
        written too (it refuses 1014 with 1002): they are valid to receive, and the app is
        told the peer's code."""
        # autobahn calls this with None for a close frame without a code or a reason, and
        # handles None in its own: its annotations omit it.
        if code not in _REGISTERED_SINCE_AUTOBAHN:
            return super().onCloseFrame(code, reasonRaw)  # type: ignore[arg-type]
        result = super().onCloseFrame(1000, reasonRaw)  # type: ignore[arg-type]  # answered as a normal close
        self.remoteCloseCode = code  # onClose, later, reports it
        return result

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self._deliver(payload if isBinary else payload.decode("utf-8"))  # autobahn checked the UTF-8

    def _deliver(self, message: str | bytes) -> None:
        """Hand a message to the app; stop reading while it leaves too many untaken."""
        session = self.session
        session.message(message)
        if session.queued >= self.context.config.ws_max_queue:
            self._stop_reading("queue")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not wasClean:
            code, reason = 1006, ""  # autobahn's reason here is its own diagnosis, not the peer's
        self.session.closed(1005 if code is None else code, reason or "")
        self._drain.release()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._failure_waits = False
        if self._failure_timeout is not None and self._failure_timeout.active():
            self._failure_timeout.cancel()
        super().connectionLost(reason)
        if self.closeHandshakeTimeoutCall is not None:  # autobahn leaves this one behind
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        self._drain.release()

    # IPushProducer: the transport says whether the client reads what we write.

    def pauseProducing(self) -> None:
        self._drain.pause()

    def resumeProducing(self) -> None:
        pong, self._pong_owed = self._pong_owed, None
        if pong is not None:
            self.sendPong(pong)
        self._read_again("pongs")
        self._drain.resume()

    def _stop_reading(self, why: str) -> None:
        if not self._reading_stopped:
            self.transport.pauseProducing()
        self._reading_stopped.add(why)

    def _read_again(self, why: str) -> None:
        """Read again once no other reason to stop holds."""
        stopped = self._reading_stopped
        if why in stopped:
            stopped.discard(why)
            if not stopped:
                self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass  # connectionLost follows


    # Server life: what the factory asks of every connection.

    def shutdown(self) -> None:
        """Close with 1001 Going Away; one still in its handshake closes once accepted."""
        self._shutting_down = True
        self.close(1001, "server shutting down")

    def cancel_apps(self) -> list[asyncio.Task[None]]:
        task = self.session.task
        if task is None or task.done():
            return []
        task.cancel()
        return [task]
