"""HTTP/1.1 connections: keep-alive, pipelining, chunked bodies, 100-continue, strict parsing.

Requests are parsed by httptools (llhttp, Node's parser): it rejects the request-smuggling
shapes (CL with TE, duplicate or malformed Content-Length, bad chunk sizes, bare CR or LF,
obs-fold) and is the fastest parser measured (docs/design.rst). This module adds what a
parser does not: limits, timeouts, the framing of responses, and the order of pipelined
responses. The ASGI side of each request lives in ``stream.HTTPStream``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import re
from collections.abc import Awaitable
from collections.abc import Callable
from typing import BinaryIO, cast

import httptools
from twisted.internet.interfaces import IPushProducer, ISSLTransport, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .flow import Drain
from .http1_framing import LENGTH, BodyWriter, framing
from .context import ServerContext
from .known_good import KnownGood
from .proxy import FORWARDING_FIELDS
from .stream import Headers, HTTPStream, RequestHead, cancel_apps, extensions
from .timeouts import Deadline
from .transport import IConnectionTransport, SocketTransport
from .wire import error_response, head

log = Logger(namespace="hello_asgi.http1")

# The request fields on_headers_complete reads, noted by name as on_header receives them
# (the values of a field sent twice joined by a LF, which no value has), so that it looks
# them up rather than walking every field once for each.
_NOTED = frozenset({b"host", b"transfer-encoding", b"content-length", b"te", b"expect", *FORWARDING_FIELDS})
_SERVED_VERSIONS = ("1.1", "1.0")  # (a 505 for any other)
_NO_FIELDS: dict[bytes, bytes] = {}  # an idle connection's, never written: each request gets its own

_NO_HEADERS = cast("Headers", ())  # an idle connection's: shared, and a tuple so no one adds to it
# A Host value: uri-host (a reg-name or an IP literal) and an optional port (RFC 9112 section 3.2).
_is_host = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?").fullmatch
_is_token = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# Host values found good: a server hears the same few again and again. A value kept is at
# most a DNS name with a port.
_good_hosts: KnownGood[bytes] = KnownGood(most=256, longest=260)


def _new_parser(protocol: HTTP11Connection) -> httptools.HttpRequestParser:
    """llhttp, strict but for whitespace before a chunk extension (``3 ;a=b``), which RFC 9112
    section 7.1.1 allows and llhttp refuses unless told."""
    parser = httptools.HttpRequestParser(protocol)
    parser.set_dangerous_leniencies(lenient_spaces_after_chunk_size=True)
    return parser


class _BadRequest(Exception):
    """The request cannot be served; ``status`` says why (400, 408, 414, 431, 501, 505)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _Closed(Exception):
    """Raised from a parser callback to stop parsing: the connection is closing."""


class State(enum.IntEnum):
    """Where an HTTP/1.1 connection is in its life; each state, and what moves it on.

    The first three read requests; responses are owed meanwhile, oldest first, in
    ``_streams`` (a pipelined request's head and body may be read while an earlier one's
    response goes). From the fourth on, no request is read any more.

    =========== =================================== ==========================================
    state       the connection                      moves on to, when
    =========== =================================== ==========================================
    IDLE        waits for a request's first byte    HEAD: ``on_message_begin``
                (keep-alive, or the first request's
                head deadline)
    HEAD        reads a request head (head          BODY: ``on_headers_complete``, a request
                deadline, size limits)              served here; SWITCHING: one that upgrades;
                                                    REJECTED: ``_reject``
    BODY        reads that request's body (body     IDLE: ``on_message_complete``;
                deadline; none for a request         REJECTED: ``_reject``
                without one, which ends at once)
    SWITCHING   has read an upgrade's head; the      SWITCHED: ``_switch_now``, once the
                switch waits for the responses       responses before it are sent
                owed before it; bytes that arrive
                are kept for the next protocol
    REJECTED    has refused a request; its error     CLOSING: ``_send_rejection``, once the
                response waits for those owed        responses before it are sent
                before it
    CLOSING     closes once written (lingering      CLOSED: ``connectionLost``
                while input may still come)
    SWITCHED    has handed its transport to          (final)
                another protocol (``detach``)
    CLOSED      is gone                             (final)
    =========== =================================== ==========================================

    Any state before CLOSING moves to CLOSING on ``_close`` (a timeout, ``Connection:
    close``, shutdown, a cut response) and to CLOSED on ``connectionLost``. States are
    ordered so that ``state <= BODY`` reads requests and ``state >= CLOSING`` is ending.
    """

    IDLE = 1
    HEAD = 2
    BODY = 3
    SWITCHING = 4
    REJECTED = 5
    CLOSING = 6
    SWITCHED = 7
    CLOSED = 8


# The states as plain ints, as globals: CPython 3.11 specialises comparing two ints and
# not two IntEnum members (about 80 instructions each, three a request). ``State(n)`` names one.
IDLE, HEAD, BODY, SWITCHING, REJECTED, CLOSING, SWITCHED, CLOSED = map(int, State)


@implementer(IPushProducer)
class HTTP11Connection(Protocol):
    """One HTTP/1.1 connection: requests in order, one app call at a time per request.

    Pipelined requests are parsed as they arrive and queued; each one's app starts when
    the response before it is complete, so responses leave in request order. ``_state``
    (``State``) says where the connection is; each response's framing is decided once,
    by ``http1_framing.framing``, and carried out by the writer it picks (``_body``).
    """

    # More than 30 attributes would turn every connection's compact attribute values into
    # a whole dict (CPython's shared-key limit): 1.7 KiB more for each idle connection.
    __slots__ = ("_body", "_completed_in_read", "_connection", "_deadline", "_drain", "_dropped", "_head_size",
                 "_headers", "_keep_alive", "_noted", "_parser", "_parsing", "_read_paused", "_rejection",
                 "_requests", "_state", "_streams", "_switch", "_switch_pending", "_unfinished_head", "_upgrade",
                 "_upgrade_body", "_url", "config", "context")

    transport: IConnectionTransport  # set by makeConnection, before any other call

    def __init__(
        self,
        context: ServerContext,
        switch: Callable[[str, RequestHead, bytes], None] | None = None,
    ) -> None:
        self.context = context
        self._state: int = IDLE  # a State
        # Hands the connection to another protocol: "h2c" or "websocket", the request, the bytes after it.
        self._switch = switch
        self._upgrade: tuple[str, RequestHead] | None = None  # the upgrade SWITCHING waits to make
        self._switch_pending = b""  # in SWITCHING: the bytes after the upgrade's head, for the next protocol
        # llhttp stops parsing at an Upgrade request's head; the body of one not upgraded is
        # passed to its stream from here (its Content-Length bytes), then parsing resumes.
        self._upgrade_body = 0
        self.config = context.config
        self._streams: list[HTTPStream] = []  # responses owed, oldest first (a deque costs 0.7 KiB even empty)
        self._parsing: HTTPStream | None = None  # in BODY: the request whose body is arriving
        self._url = b""
        self._headers: Headers = _NO_HEADERS  # a list from each request's first byte
        self._noted = _NO_FIELDS  # its fields named in _NOTED, for on_headers_complete
        self._head_size = 0
        self._unfinished_head = 0
        self._completed_in_read = False  # a request ended in the read being parsed
        self._read_paused = False
        self._drain: Drain | None = None  # made when the client first stops reading
        self._body: BodyWriter = LENGTH  # the framing of the response being written
        self._keep_alive = True  # False once the connection is to close after this response
        self._requests = 0
        self._rejection = b""  # in REJECTED: the error response owed once earlier ones are sent
        self._dropped = 0  # body bytes read after their response was complete, to be dropped

    # Connection life.

    def connectionMade(self) -> None:
        transport = self.transport
        transport.registerProducer(self, True)
        self._parser: httptools.HttpRequestParser | None = _new_parser(self)
        self._connection = self.context.scope_of(transport)
        self._deadline = Deadline(self.context.ticks, self._timed_out)
        self._deadline.set(self.config.request_head_timeout)

    def detach(self) -> None:
        """Hand the transport over to another protocol (an h2c or WebSocket upgrade)."""
        self._state = SWITCHED
        self._deadline.cancel()
        self.transport.unregisterProducer()
        if self._read_paused:
            self._read_paused = False
            self.transport.resumeProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._state = CLOSED
        self._deadline.cancel()
        for stream in self._streams:
            stream.disconnect()
        if self._parsing is not None:
            self._parsing.disconnect()
        self._release_writers()

    def cancel_apps(self) -> list[asyncio.Task[None]]:
        return cancel_apps(self._streams)

    def _timed_out(self) -> None:
        """The one deadline ran out: for the request head, the request body, or keep-alive."""
        if self._state == HEAD:
            log.info("Closing {client}: no complete request head within {timeout} s",
                     client=self._connection.client_text, timeout=self.config.request_head_timeout)
        elif self._parsing is not None and not self._parsing.response_done:
            self._reject(408, f"no request body bytes for {self.config.body_timeout} s")
            return
        self._close()

    def _close(self) -> None:
        """Close once written; unregistering first, since TLS waits for its producer to go.

        With input perhaps still coming (a request refused or answered before it was all
        read, or pipelined after ``Connection: close``) the close lingers, as RFC 9112
        section 9.6 asks: half-close, then read on and drop what comes until the client's
        FIN, for ``close_timeout`` at most. Closing a socket with unread input resets it,
        and the client could lose the response it had not read yet. TLS lingers by
        itself, waiting for the client's close_notify (``tls.BoundedTLSProtocol``).
        """
        if self._state >= CLOSING:
            return  # closing already, or the transport handed on to another protocol
        self._state = CLOSING
        self._release_writers()  # an app waiting to send learns now, not at connectionLost
        transport = self.transport
        transport.unregisterProducer()
        if (self._read_paused or self._parsing is not None) and not ISSLTransport.providedBy(transport) \
                and ITCPTransport.providedBy(transport):
            self._deadline.cancel()
            self._deadline = Deadline(self.context.ticks, transport.abortConnection)
            self._deadline.set(self.config.close_timeout)
            self._read_paused = False
            transport.resumeProducing()
            transport.loseWriteConnection()
        else:
            transport.loseConnection()

    def shutdown(self) -> None:
        """Finish the response in progress, if any, then close: for graceful shutdown."""
        self._keep_alive = False
        if not self._streams and self._parsing is None:
            self._close()

    # Bytes in.

    def dataReceived(self, data: bytes) -> None:
        if self._state > BODY:
            if self._state == SWITCHING:
                self._switch_pending += data  # the next protocol's (reading was paused; a read was on its way)
            return
        if self._upgrade_body:
            data = self._take_upgrade_body(data)
            if not data:
                return
        self._completed_in_read = False
        parser = self._parser
        if parser is None:
            parser = self._parser = _new_parser(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade_reached(data[upgrade.args[0]:])
            return
        except httptools.HttpParserCallbackError as error:
            self._callback_failed(error)
            return
        except httptools.HttpParserError as error:
            self._unparsable(str(error), data)
            return
        if self._state == HEAD:
            # An unfinished head: a read in which no request ended belongs to it whole. (In a
            # read where one did, its share is unknown; the finished lines still count.)
            if not self._completed_in_read:
                self._unfinished_head += len(data)
            if max(self._unfinished_head, self._head_size) > self.config.max_head_size:
                self._reject(431, "request head too large")

    def _callback_failed(self, error: httptools.HttpParserCallbackError) -> None:
        """A parser callback raised: a request to refuse, or a close under way; else a bug,
        which the transport logs, aborting the connection."""
        cause = error.__context__
        if isinstance(cause, _BadRequest):
            self._reject(cause.status, str(cause))
        elif not isinstance(cause, _Closed):
            raise error

    def _upgrade_reached(self, rest: bytes) -> None:
        """llhttp stopped at an Upgrade request's head; ``rest`` is what followed it."""
        if self._state == SWITCHING:
            self._switch_pending = rest
            if self._streams:
                self._pause_reading()  # the responses owed before the upgrade go first
            else:
                self._switch_now()
            return
        # An upgrade not served here: the request is served as HTTP/1.1; parse on.
        self._parser = _new_parser(self)
        if rest:
            self.dataReceived(rest)

    def _unparsable(self, reason: str, data: bytes) -> None:
        """llhttp refused the input, saying ``reason``: answer with the status it calls for."""
        if reason.startswith("Data after `Connection: close`"):
            self._pause_reading()  # the client said it was done; ignore what follows
        elif reason.startswith("Pause on PRI"):
            self._reject(505, "HTTP/2 is not served on this listener")
        elif reason.startswith(("Invalid method", "Expected space after method")) and self._unknown_method(data):
            self._reject(501, "the method is not implemented here")
        else:
            self._reject(505 if reason.startswith("Invalid HTTP version") else 400, reason)

    def _unknown_method(self, data: bytes) -> bool:
        """Whether the request llhttp refused for its method names a method llhttp does not
        know (methods are extensible, RFC 9110 section 9.1: 501), not a malformed one (400).
        Its request line starts this read when no request ended earlier in it."""
        method = data.partition(b" ")[0]
        return not self._completed_in_read and method != data and _is_token(method) is not None

    def _switch_now(self) -> None:
        upgrade, switch = self._upgrade, self._switch
        # SWITCHING: _upgrade_taken set the upgrade, which _wanted_upgrade takes only with a switch.
        assert upgrade is not None and switch is not None
        rest, self._switch_pending = self._switch_pending, b""
        switch(*upgrade, rest)  # (calls detach: SWITCHED)

    def _reject(self, status: int, reason: str) -> None:
        """Answer an unreadable request with ``status`` once the responses owed before it are sent."""
        log.info("Bad request from {client}: {status} {reason}", client=self._connection.client_text,
                 status=status, reason=reason)
        self._pause_reading()
        self._state = REJECTED
        self._rejection = error_response(status, reason, *self._stamps())
        streams = self._streams
        broken, self._parsing = self._parsing, None
        if broken is not None:
            broken.disconnect()  # its request was never read whole
            if broken.response_started:
                self._close()  # too late for an error response: cut the connection
                return
            if broken in streams:
                streams.remove(broken)
        if not streams:
            self._send_rejection()

    def _send_rejection(self) -> None:
        self.transport.write(self._rejection)
        self._close()

    def _stamps(self) -> tuple[bytes | None, bool]:
        """The Server value (``None`` if off) and whether Date is on, for ``wire.head``."""
        return self.config.server_header, self.config.date_header

    # httptools callbacks.

    def on_message_begin(self) -> None:
        if self._state >= CLOSING:
            raise _Closed  # no request is started on a connection that is closing
        self._state = HEAD
        self._url = b""
        self._headers = []
        self._noted = {}
        self._head_size = 0
        self._unfinished_head = 0
        self._deadline.set(self.config.request_head_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.config.max_request_line:
            raise _BadRequest(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._parsing is not None:  # (in BODY, which this tells as cheaply as _state: once a field)
            return  # a trailer of a chunked body: ASGI has no place for it
        headers = self._headers
        self._head_size += len(name) + len(value) + 4
        if len(headers) >= self.config.max_header_count:
            raise _BadRequest(431, "too many header fields")
        if self._head_size > self.config.max_head_size:
            raise _BadRequest(431, "request head too large")
        name = name.lower()
        value = value.rstrip(b" \t")
        headers.append((name, value))
        if name in _NOTED:
            noted = self._noted
            noted[name] = noted[name] + b"\n" + value if name in noted else value  # no value has a LF

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # it is calling us
        noted = self._noted
        upgrade = parser.should_upgrade()
        if upgrade or _has_body(noted):
            self._deadline.set(self.config.body_timeout)  # until the body ends (on_message_complete)
        # (else on_message_complete follows in this same call: a request without a body ends here)
        http_version = parser.get_http_version()
        if http_version not in _SERVED_VERSIONS:
            raise _BadRequest(505, f"HTTP/{http_version} is not served here")
        method = parser.get_method()
        raw_path, query = self._target(method, http_version)
        if b"transfer-encoding" in noted:
            _check_transfer_coding(noted[b"transfer-encoding"])
        if upgrade and self._upgrade_taken(method, http_version, raw_path, query):
            self._state = SWITCHING
            return
        self._state = BODY
        http11 = http_version == "1.1"  # an HTTP/1.0 client takes neither 1xx responses nor trailers
        scope = self._connection.http(method.decode("ascii"), http_version, raw_path, query, self._headers,
                                      extensions(http11, http11 and b"te" in noted and b"trailers" in noted[b"te"].lower()),
                                      forwarded=not FORWARDING_FIELDS.isdisjoint(noted))
        stream = HTTPStream(scope, self, body_complete=False)
        self._requests += 1
        limit = self.config.max_requests_per_connection
        stream.keep_alive = parser.should_keep_alive() and not (limit and self._requests >= limit)
        if b"expect" in noted:
            stream.expect_continue = _expects_continue(noted[b"expect"], http11)
        self._parsing = stream
        self._streams.append(stream)
        if len(self._streams) == 1:
            self._start_next()
        elif not self._read_paused:
            self._pause_reading()  # a pipelined request waits its turn: read no further ahead

    def _target(self, method: bytes, http_version: str) -> tuple[bytes, bytes]:
        """The request target's path and query, once it and Host are checked (RFC 9112 section 3).

        An absolute-form target's authority replaces Host (section 3.2.2); ``*`` is for
        OPTIONS only, and CONNECT (which this server, no proxy, does not serve) takes only
        an authority."""
        url = self._url
        _check_host(self._noted.get(b"host"), http_version)
        if url.find(b"#") != -1:  # (cheaper than ``in``, which tries the byte as a number first)
            raise _BadRequest(400, "a request target has no fragment")
        if method == b"CONNECT":
            raise _BadRequest(405 if url[:1] != b"/" else 400, "this server is not a proxy")
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
            return raw_path, query
        if url == b"*":
            if method != b"OPTIONS":
                raise _BadRequest(400, "only OPTIONS takes the target '*'")
            return url, b""
        authority, raw_path, query = _absolute_form(url)
        self._headers = [(b"host", authority), *(field for field in self._headers if field[0] != b"host")]
        return raw_path, query

    def _upgrade_taken(self, method: bytes, http_version: str, raw_path: bytes, query: bytes) -> bool:
        """Whether the connection switches protocols after this request (llhttp stopped at its
        head); if not, the request is served here, its body passed on from ``dataReceived``."""
        kind = self._wanted_upgrade(http_version)
        if kind is not None:
            self._upgrade = kind, RequestHead(method, self._url, raw_path, query, self._headers,
                                              dict(self._headers).get(b"http2-settings", b""))
            return True
        fields = dict(self._headers)
        if b"transfer-encoding" in fields:
            raise _BadRequest(400, "an Upgrade request with a chunked body is not served")
        self._upgrade_body = int(fields.get(b"content-length", b"0"))
        return False

    def _wanted_upgrade(self, http_version: str) -> str | None:
        """``h2c`` or ``websocket`` if this request's upgrade is served here, else ``None``.

        Only bodiless HTTP/1.1 requests are upgraded; h2c only with no response owed before
        it (the upgrade is optional there), a WebSocket once those responses are sent.
        """
        fields = dict(self._headers)
        if self._switch is None or http_version != "1.1" or b"transfer-encoding" in fields \
                or fields.get(b"content-length", b"0") != b"0":
            return None
        protocols = [token.strip().lower() for token in fields.get(b"upgrade", b"").split(b",")]
        if b"websocket" in protocols and self.config.websocket:
            return "websocket"
        if protocols == [b"h2c"] and self.config.h2c_upgrade and not self._streams \
                and _decodable_settings(fields.get(b"http2-settings")):
            return "h2c"
        return None

    def on_body(self, body: bytes) -> None:
        stream = self._parsing
        if stream is None:
            return
        self._deadline.set(self.config.body_timeout)
        if stream.response_done:  # answered already: the rest of its body is read only to be dropped
            self._dropped += len(body)
            if self._dropped > self.config.max_body_drain:
                self._close()  # too much to read for nothing: close (the close lingers)
                raise _Closed
            return
        stream.feed_body(body)
        if stream.buffered > self.config.body_buffer_size and not self._read_paused:
            self._deadline.set(None)  # the app is not reading: the client is not to blame
            self._pause_reading()

    def on_message_complete(self) -> None:
        self._completed_in_read = True
        stream = self._parsing
        if stream is not None and not self._upgrade_body:
            self._parsing = None
            self._state = IDLE
            stream.end_body()
            if not self._streams:  # its response was sent before its body ended
                self._deadline.set(self.config.keep_alive_timeout)
            else:
                self._deadline.set(None)  # the app has the request; request_timeout bounds it

    def _take_upgrade_body(self, data: bytes) -> bytes:
        """Feed the body of an Upgrade request that stays HTTP/1.1; return what follows it."""
        body, rest = data[: self._upgrade_body], data[self._upgrade_body :]
        self._upgrade_body -= len(body)
        self.on_body(body)
        if not self._upgrade_body:
            self.on_message_complete()
        return rest

    # Flow control of the request body.

    def _pause_reading(self) -> None:
        self._read_paused = True
        self.transport.pauseProducing()

    def _maybe_resume_reading(self) -> None:
        if not self._read_paused or self._state >= CLOSING or len(self._streams) > 1:
            return
        parsing = self._parsing
        if parsing is not None and parsing.buffered > self.config.body_buffer_size:
            return
        drain = self._drain
        if drain is not None and drain.paused:
            return  # the client is not reading its responses: read no more requests from it
        self._read_paused = False
        if parsing is not None:
            self._deadline.set(self.config.body_timeout)
        self.transport.resumeProducing()

    def body_consumed(self, stream: HTTPStream) -> None:
        self._maybe_resume_reading()

    def _start(self, stream: HTTPStream) -> None:
        stream.task = self.context.start(stream)

    def _start_next(self) -> None:
        """Start the oldest request waiting, unless the client is not reading the responses
        before it: each would pile up in memory (``resumeProducing`` starts it then)."""
        streams = self._streams
        if streams and streams[0].task is None and (self._drain is None or not self._drain.paused):
            self._start(streams[0])

    # IPushProducer: the transport tells us when the client is not reading (flow.Drain).

    def pauseProducing(self) -> None:
        drain = self._drain
        if drain is None:
            drain = self._drain = Drain(self.context.loop)  # (not kept by connections never paused)
        drain.pause()

    def resumeProducing(self) -> None:
        drain = self._drain
        if drain is not None:
            drain.resume()
        if self._state < CLOSING:
            self._start_next()
            self._maybe_resume_reading()

    def stopProducing(self) -> None:
        pass  # connectionLost follows and disconnects the streams

    def drained(self, stream: HTTPStream) -> Awaitable[None] | None:
        drain = self._drain
        if drain is None or self._state >= CLOSING:
            return None
        return drain.wait()

    def _release_writers(self) -> None:
        """Wake every ``send()`` waiting for the client to read: the connection is ending."""
        if self._drain is not None:
            self._drain.release()

    # Bytes out: stream.ResponseWriter. Every head comes from wire.head.

    def write_informational(self, stream: HTTPStream, status: int, headers: Headers) -> None:
        if self._streams and stream is self._streams[0] and self._state < CLOSING:
            self.transport.write(head(status, headers, b"", *self._stamps()))

    def write_response(self, stream: HTTPStream, status: int, headers: Headers, body: bytes, end: bool) -> None:
        """The head, and with it the first body chunk: one write."""
        scope = stream.scope
        config = self.config
        try:
            writer, keep_alive, lines = framing(scope["method"], scope["http_version"], status, headers,
                                                stream.keep_alive and self._keep_alive,
                                                len(body) if end else None, stream.trailers)
            self._body = writer
            if not keep_alive:
                self._keep_alive = False  # the connection closes once this response is complete
            if writer.raw:
                tail = body  # (which ``last`` of a raw writer never adds to)
            else:
                tail = writer.chunk(body) if body else b""
                if end:
                    tail += writer.last
            self.transport.write(
                head(status, headers, lines, config.server_header, config.date_header, tail, writer.chunked_head)
            )
        except Exception:
            self._write_failed(stream, Failure(), sent=False)
            return
        if end:
            self._response_complete(stream)

    def write_body(self, stream: HTTPStream, body: bytes, end: bool) -> None:
        writer = self._body
        try:
            data = writer.chunk(body) if body else b""
            if end:
                data += writer.last
            if data:
                self.transport.write(data)
        except Exception:
            self._write_failed(stream, Failure(), sent=True)
            return
        if end:
            self._response_complete(stream)

    def write_trailers(self, stream: HTTPStream, headers: Headers) -> None:
        try:
            data = self._body.trailers(headers)
            if data:
                self.transport.write(data)
        except Exception:
            self._write_failed(stream, Failure(), sent=True)
            return
        self._response_complete(stream)

    def _write_failed(self, stream: HTTPStream, failure: Failure, sent: bool) -> None:
        """Writing ``stream``'s response raised (issue 17: what the stream passed on was not
        what the framing takes). Logged once, here; the client gets a 500 if nothing of the
        response was ``sent``, else a cut connection; the app's next ``send()`` learns the
        client is gone, not the reason, so the error is not logged again."""
        log.failure("Could not write the response to {method} {path}; {outcome}", failure=failure,
                    method=stream.scope["method"], path=stream.scope["path"],
                    outcome="the connection is cut" if sent else "answering 500")
        stream.disconnect()
        if sent:
            self.abort(stream)
            return
        stream.status = 500  # what the access log says was sent
        self._keep_alive = False
        self._body = LENGTH
        if self._state < CLOSING:
            self.transport.write(error_response(500, "the response could not be written", *self._stamps()))
        self._response_complete(stream)

    def push(self, stream: HTTPStream, path: str, headers: Headers) -> None:
        pass  # HTTP/1.1 has no push; the extension is never advertised here

    def send_file(self, stream: HTTPStream, file: BinaryIO, count: int) -> Awaitable[int] | None:
        """By ``os.sendfile`` on hello-asgi's own socket transport, for a body framed by its
        length; ``None`` (the stream reads the file) on TLS, on Twisted's transports (another
        reactor, the companion loop's crossing, a wrapper such as PROXY's) and for chunks."""
        transport = self.transport
        if type(transport) is not SocketTransport or not self._body.raw or self._state >= CLOSING:
            return None
        return self._send_file(stream, transport, file, count)

    async def _send_file(self, stream: HTTPStream, transport: SocketTransport, file: BinaryIO, count: int) -> int:
        sent = await transport.send_file(file, 0, count)
        if transport.lost:
            stream.disconnect()  # before connectionLost says so: the app learns it now
        return sent

    def _response_complete(self, stream: HTTPStream) -> None:
        streams = self._streams
        if streams and streams[0] is stream:
            del streams[0]
        if (self._state > BODY or not self._keep_alive) and self._after_last(streams):
            return
        if self._parsing is stream:  # the app answered without reading the whole body
            stream.drop_body()  # what was buffered, and what comes, is dropped (on_body)
            self._dropped = 0
        if streams:
            self._start_next()
        elif self._parsing is None:
            self._deadline.set(self.config.keep_alive_timeout)
            if self._state == IDLE:
                # Idle between requests: the last request's fields need not stay. Nor, after
                # a first request, need the parser (0.9 KiB): most connections that then
                # sit idle made one (a browser's spare, a flood's). One that has carried
                # more keeps it for the next: making one took 5.5k instructions of a
                # request's 131k (callgrind, h2load --h1 -c25).
                if self._requests == 1:
                    self._parser = None
                self._headers = _NO_HEADERS
                self._noted = _NO_FIELDS
        self._maybe_resume_reading()

    def _after_last(self, streams: list[HTTPStream]) -> bool:
        """A response is complete on a connection that reads no more requests (REJECTED,
        SWITCHING, closing or not kept alive): send the rejection, close or switch, once
        no response is owed before it; whether that is done (else serve on)."""
        state = self._state
        if state == REJECTED and not streams:
            self._send_rejection()
            return True
        if not self._keep_alive or state >= CLOSING:
            self._close()
            for waiting in streams:
                waiting.disconnect()
            return True
        if state == SWITCHING and not streams:
            self._switch_now()
            return True
        return False

    def abort(self, stream: HTTPStream) -> None:
        """Cut the response: a clean close where its framing (a length, chunks) shows the
        client it is cut; a reset where only the close would end it, so it cannot pass
        for a whole one."""
        if self._streams and self._streams[0] is stream:
            del self._streams[0]
        for waiting in self._streams:
            waiting.disconnect()
        if self._body.shows_cut:
            self._close()
            return
        if self._state < CLOSING:
            self._state = CLOSING
            self._release_writers()
        self.transport.abortConnection()

    def finished(self, stream: HTTPStream) -> None:
        request_log = self.context.request_log
        if request_log is not None:
            request_log.http(stream)


def _has_body(noted: dict[bytes, bytes]) -> bool:
    """Whether a body follows a request's head: in chunks, or of a length above 0."""
    return b"transfer-encoding" in noted or noted.get(b"content-length", b"0") != b"0"


def _expects_continue(expect: bytes, http11: bool) -> bool:
    """Whether the client waits for ``100 Continue`` (its Expect fields, joined by LF); an
    HTTP/1.0 one cannot be sent a 1xx."""
    return http11 and b"100-continue" in expect.lower().split(b"\n")


def _check_transfer_coding(value: bytes) -> None:
    """Refuse a body in a transfer coding other than chunked alone (RFC 9112 section 6.1:
    501); llhttp has already refused one whose last coding is not chunked. ``value`` is
    every Transfer-Encoding field's, one a line."""
    codings = [coding.strip().lower() for coding in value.replace(b"\n", b",").split(b",")]
    if codings != [b"chunked"]:
        raise _BadRequest(501, "only the chunked transfer coding is served")


def _decodable_settings(value: bytes | None) -> bool:
    """Whether an h2c upgrade's ``HTTP2-Settings`` is a base64url SETTINGS payload (RFC 9113
    section 3.2.1 of RFC 7540): an upgrade with one that is not is served as HTTP/1.1."""
    if value is None:
        return False
    try:
        payload = base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return False
    return len(payload) % 6 == 0


def _check_host(host: bytes | None, http_version: str) -> None:
    """One Host in an HTTP/1.1 request, at most one in an HTTP/1.0 one, and a host in it.
    ``host`` is every Host field's value, one a line."""
    if host is None:
        if http_version == "1.1":
            raise _BadRequest(400, "the request needs exactly one Host header")
        return
    if host in _good_hosts:
        return
    if _is_host(host) is None:  # which a LF, joining two Host fields, is not part of
        raise _BadRequest(400, "the request needs exactly one Host header" if b"\n" in host
                          else "the Host header is not a host")
    _good_hosts.remember(host, len(host))


def _absolute_form(url: bytes) -> tuple[bytes, bytes, bytes]:
    """An absolute-form target's authority, path and query."""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise _BadRequest(400, "malformed request target") from None
    if not parsed.host:
        raise _BadRequest(400, "malformed request target")
    authority = parsed.host if parsed.port is None else b"%s:%d" % (parsed.host, parsed.port)
    return authority, parsed.path or b"/", parsed.query or b""
