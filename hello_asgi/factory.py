"""The server factory, and the per-connection switcher that picks the protocol.

Switching protocols happens here and only here: ``http1`` reports "this request wants
h2c" or "this request wants a WebSocket" and the switcher swaps ``http2`` or
``websocket`` in, so the protocol modules never import each other.
"""

from __future__ import annotations

import asyncio
import functools
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IProtocolNegotiationFactory
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

from .access_log import RequestLog, access_log
from .bridge import app_loop
from .config import Config
from .http1 import HTTP11Connection
from .proxy import TrustedProxies
from .stream import RequestHead, wake_all
from .threaded import ReactorSide
from .timeouts import Deadline, Ticks
from .loading import as_asgi3, asgi_version
from .frame_budget import PREFACE
from .wire import error_response, head

if TYPE_CHECKING:  # HTTP/2 and WebSockets are loaded when a connection first needs them
    from autobahn.twisted.websocket import WebSocketServerFactory

    from .http2 import HTTP2Connection
    from .websocket import WebSocketConnection

log = Logger(namespace="hello_asgi.factory")

FIRST_REQUEST_GRACE = 1.0  # seconds a connection with nothing read yet gets when shutdown begins


class _Overloaded(Protocol):
    """Answers 503 and closes: the connection limit is reached."""

    def __init__(self, server_header: bytes | None, date: bool) -> None:
        self._stamps = server_header, date  # (wire's Server and Date policy)

    def connectionMade(self) -> None:
        self.transport.write(error_response(503, "too many connections", *self._stamps))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class ServerConnection(Protocol):
    """What a listener builds for each connection: it reads the first bytes to choose
    HTTP/2 (the client opened with the HTTP/2 preface) or HTTP/1.1, and can switch an
    HTTP/1.1 connection to HTTP/2 once, on ``Upgrade: h2c``."""

    __slots__ = ("_buffer", "_deadline", "_shutting_down", "factory", "inner")  # one per connection

    def __init__(self, factory: ASGIServerFactory) -> None:
        self.factory = factory
        self.inner: HTTP11Connection | HTTP2Connection | WebSocketConnection | None = None
        self._buffer = b""
        self._shutting_down = False

    def connectionMade(self) -> None:
        self.factory.connection_opened(self)
        self._deadline: Deadline | None = Deadline(self.factory.ticks, self.transport.loseConnection)  # type: ignore[union-attr]
        self._deadline.set(self.factory.config.request_head_timeout)

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is None:
            data = self._buffer + data
            if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
                inner = _http2(self.factory)  # chosen by TLS ALPN
            elif self.factory.config.h2_prior_knowledge and PREFACE.startswith(data[: len(PREFACE)]):
                if len(data) < 3:
                    self._buffer = data  # "P" could still be POST
                    return
                inner = _http2(self.factory)
            else:
                inner = HTTP11Connection(self.factory, switch=self.switch)
            self._buffer = b""
            self._deadline.cancel()
            self._deadline = None  # the inner protocol keeps its own
            self.inner = inner
            inner.makeConnection(self.transport)
            inner.dataReceived(data)
            if self._shutting_down:  # shutdown began before this first request: it is the last
                inner.shutdown()
        else:
            inner.dataReceived(data)

    def switch(self, kind: str, request: RequestHead, rest: bytes) -> None:
        """Carry on as HTTP/2 (``kind`` h2c; the request becomes stream 1) or as a WebSocket."""
        old = self.inner
        assert isinstance(old, HTTP11Connection)
        old.detach()
        transport = self.transport
        config = self.factory.config
        stamps = config.server_header, config.date_header
        inner: HTTP2Connection | WebSocketConnection
        if kind == "h2c":
            transport.write(head(101, (), b"connection: upgrade\r\nupgrade: h2c\r\n", *stamps))  # type: ignore[union-attr]
            inner = _http2(self.factory, upgrade=request)
        else:
            from .websocket import HTTP11Handshake, WebSocketConnection, handshake_problem

            problem = handshake_problem(request, http2=False)
            if problem is not None:
                status, reason, headers = problem
                log.info("Bad WebSocket handshake: {status} {reason}", status=status, reason=reason)
                transport.write(error_response(status, reason, *stamps, headers))  # type: ignore[union-attr]
                transport.loseConnection()  # type: ignore[union-attr]
                return
            inner = WebSocketConnection(self.factory, request, "1.1", HTTP11Handshake(request, self.factory))
        self.inner = inner
        inner.makeConnection(transport)
        if rest:
            inner.dataReceived(rest)

    def connectionLost(self, reason: Any = None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self.inner is not None:
            self.inner.connectionLost(reason)
        self.factory.connection_closed(self)

    def shutdown(self) -> None:
        if self.inner is not None:
            self.inner.shutdown()
        elif self._deadline is not None:
            # Accepted an instant ago, its first request probably on the way: it gets a
            # moment to arrive, is answered, and the connection closes after it.
            self._shutting_down = True
            self._deadline.set(min(FIRST_REQUEST_GRACE, self.factory.config.request_head_timeout))

    def cancel_apps(self) -> list[Any]:
        return [] if self.inner is None else self.inner.cancel_apps()


def _http2(factory: ASGIServerFactory, upgrade: RequestHead | None = None) -> HTTP2Connection:
    """An HTTP/2 connection; h2 is loaded with the first one."""
    from .http2 import HTTP2Connection

    return HTTP2Connection(factory, upgrade)


@implementer(IProtocolNegotiationFactory)
class ASGIServerFactory(ServerFactory):
    """Serves an ASGI app on any ``IStreamServerEndpoint``: ``endpoint.listen(factory)``.

    On any reactor: under one that is not asyncio's, connections are carried over to the
    ``AppLoop`` thread (``threaded.py``) and everything above the socket runs there.
    ``state`` is the lifespan state copied into every request scope; ``scheme`` is
    ``https`` for factories that TLS endpoints wrap; ``access_observer``, if given, receives
    the access log as twisted.logger events (``access_log.py`` says where lines go otherwise).
    """

    noisy = False  # one "Serving ..." line per listener comes from the service instead

    def __init__(
        self,
        app: Any,
        config: Config | None = None,
        *,
        reactor: Any = None,
        state: dict[str, Any] | None = None,
        scheme: str = "http",
        access_observer: ILogObserver | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.config = config = config or Config()
        config.validate()
        self.app = as_asgi3(app, config.interface)
        self.asgi_version = asgi_version(self.app)
        self.app_loop = app_loop(reactor)
        self.loop = self.app_loop.loop
        self.clock = self.app_loop.clock  # timers on the thread the protocols run on
        self.ticks = Ticks(self.clock)  # the connections' deadlines share its timers
        self.state: dict[str, Any] = {} if state is None else state
        self.scheme = scheme
        self.trusted_proxies = TrustedProxies(config.forwarded_allow_ips) if config.proxy_headers else None
        self.access_log = access_log(config.access_log, config.access_log_format, self.loop.call_soon,
                                     access_observer)
        # What the protocols call once per finished exchange: the access log, or the metrics
        # counter that hands on to it (metrics.meter puts it there).
        self.request_log: RequestLog | None = self.access_log
        self.connections: set[ServerConnection] = set()
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._date_second = 0
        self._date = b""
        self._date_line = b""

    @functools.cached_property
    def websocket_options(self) -> WebSocketServerFactory:
        """autobahn's options for this server's WebSockets, made with the first one."""
        from .websocket import autobahn_options

        return autobahn_options(self.config, self.clock)

    def acceptableProtocols(self) -> list[bytes]:
        """What TLS ALPN offers when a TLS endpoint (``ssl:``) wraps this factory."""
        return [b"h2", b"http/1.1"] if self.config.h2_alpn else [b"http/1.1"]

    def buildProtocol(self, addr: IAddress) -> Protocol:
        protocol: Protocol
        if len(self.connections) >= self.config.max_connections:
            log.warn("Connection limit of {limit} reached; answering 503", limit=self.config.max_connections)
            protocol = _Overloaded(self.config.server_header, self.config.date_header)
        else:
            protocol = ServerConnection(self)
        return ReactorSide(protocol, self.app_loop) if self.app_loop.threaded else protocol

    def connection_opened(self, connection: ServerConnection) -> None:
        self.connections.add(connection)

    def connection_closed(self, connection: ServerConnection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            wake_all(self._drain_waiters)

    async def drained(self) -> None:
        """On the app loop: return once no connection is open."""
        if self.connections:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def whenDrained(self) -> Deferred[None]:
        """A Deferred that fires, on the reactor's thread, once no connection is open."""
        return self.app_loop.run(self.drained())

    def http_date(self) -> bytes:
        """The ``Date`` header's value, formatted once a second rather than once a response."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True).encode("ascii")
            self._date_line = b"date: " + self._date + b"\r\n"
        return self._date

    def date_header(self) -> bytes:
        """The whole HTTP/1.1 ``Date`` header line."""
        self.http_date()
        return self._date_line

    def shutdown(self) -> None:
        """Ask every connection to close once its in-flight response is done."""
        for connection in list(self.connections):
            connection.shutdown()

    def abort(self) -> list[Any]:
        """Cut every connection still open and cancel its app calls; return their tasks."""
        tasks = []
        for connection in list(self.connections):
            tasks += connection.cancel_apps()
            connection.transport.abortConnection()  # type: ignore[union-attr]
        return tasks
