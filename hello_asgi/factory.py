"""The server factory, and the per-connection switcher that picks the protocol.

Switching protocols happens here and only here: ``http1`` reports "this request wants
h2c" or "this request wants a WebSocket" and the switcher swaps ``http2`` or
``websocket`` in, so the protocol modules never import each other.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IProtocolNegotiationFactory
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .bridge import AppLoop, app_loop
from .config import Config
from .context import ServerContext
from .frame_budget import PREFACE
from .http1 import HTTP11Connection
from .loading import ASGIApp
from .flow import Drain
from .stream import RequestHead
from .threaded import ReactorSide
from .timeouts import Deadline
from .transport import IConnectionTransport
from .wire import error_response, head

if TYPE_CHECKING:  # HTTP/2 and WebSockets are loaded when a connection first needs them
    from .http2 import HTTP2Connection
    from .websocket import WebSocketConnection

log = Logger(namespace="hello_asgi.factory")

FIRST_REQUEST_GRACE = 1.0  # seconds a connection with nothing read yet gets when shutdown begins


class _Overloaded(Protocol):
    """Answers 503 and closes: the connection limit is reached."""

    transport: IConnectionTransport  # set by makeConnection, before any other call

    def __init__(self, server_header: bytes | None, date: bool) -> None:
        self._stamps = server_header, date  # (wire's Server and Date policy)

    def connectionMade(self) -> None:
        self.transport.write(error_response(503, "too many connections", *self._stamps))
        self.transport.loseConnection()


class ServerConnection(Protocol):
    """What a listener builds for each connection: it reads the first bytes to choose
    HTTP/2 (the client opened with the HTTP/2 preface) or HTTP/1.1, and can switch an
    HTTP/1.1 connection to HTTP/2 once, on ``Upgrade: h2c``."""

    __slots__ = ("_buffer", "_deadline", "_shutting_down", "factory", "inner")  # one per connection
    transport: IConnectionTransport  # set by makeConnection, before any other call
    _deadline: Deadline | None  # the first request's, until the inner protocol takes over

    def __init__(self, factory: ASGIServerFactory) -> None:
        self.factory = factory
        self.inner: HTTP11Connection | HTTP2Connection | WebSocketConnection | None = None
        self._buffer = b""
        self._shutting_down = False

    def connectionMade(self) -> None:
        self.factory.connection_opened(self)
        self._deadline = Deadline(self.factory.context.ticks, self.transport.loseConnection)
        self._deadline.set(self.factory.config.request_head_timeout)

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is None:
            data = self._buffer + data
            if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
                inner = _http2(self.factory.context)  # chosen by TLS ALPN
            elif self.factory.config.h2_prior_knowledge and PREFACE.startswith(data[: len(PREFACE)]):
                if len(data) < 3:
                    self._buffer = data  # "P" could still be POST
                    return
                inner = _http2(self.factory.context)
            else:
                inner = HTTP11Connection(self.factory.context, switch=self.switch)
            self._buffer = b""
            deadline = self._deadline
            assert deadline is not None  # set by connectionMade, dropped only here
            deadline.cancel()
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
            transport.write(head(101, (), b"connection: upgrade\r\nupgrade: h2c\r\n", *stamps))
            inner = _http2(self.factory.context, upgrade=request)
        else:
            from .websocket import HTTP11Handshake, WebSocketConnection, handshake_problem

            problem = handshake_problem(request, http2=False)
            if problem is not None:
                status, reason, headers = problem
                log.info("Bad WebSocket handshake: {status} {reason}", status=status, reason=reason)
                transport.write(error_response(status, reason, *stamps, headers))
                transport.loseConnection()
                return
            inner = WebSocketConnection(self.factory.context, request, "1.1", HTTP11Handshake(request, self.factory.context))
        self.inner = inner
        inner.makeConnection(transport)
        if rest:
            inner.dataReceived(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
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


def _http2(context: ServerContext, upgrade: RequestHead | None = None) -> HTTP2Connection:
    """An HTTP/2 connection; h2 is loaded with the first one."""
    from .http2 import HTTP2Connection

    return HTTP2Connection(context, upgrade)


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
        config = config or Config()
        config.validate()
        self.context = ServerContext(app, config, app_loop(reactor), state=state, scheme=scheme,
                                     access_observer=access_observer)
        self.connections: set[ServerConnection] = set()
        self._closed_all = Drain(self.context.loop)  # drained() waits on it, the last close releases it

    # What embedding code reads of a factory; the protocols read the context.

    @property
    def config(self) -> Config:
        return self.context.config

    @property
    def app(self) -> ASGIApp:
        """The app as ASGI 3 (an ASGI 2 or WSGI app wrapped)."""
        return self.context.app

    @property
    def app_loop(self) -> AppLoop:
        return self.context.app_loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.context.loop

    @property
    def state(self) -> dict[str, Any]:
        """The lifespan state copied into every request scope."""
        return self.context.state

    @property
    def scheme(self) -> str:
        return self.context.scheme

    def acceptableProtocols(self) -> list[bytes]:
        """What TLS ALPN offers when a TLS endpoint (``ssl:``) wraps this factory."""
        return [b"h2", b"http/1.1"] if self.config.h2_alpn else [b"http/1.1"]

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
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
            self._closed_all.release()

    async def drained(self) -> None:
        """On the app loop: return once no connection is open."""
        if self.connections:
            await self._closed_all.waiter()

    def whenDrained(self) -> Deferred[None]:
        """A Deferred that fires, on the reactor's thread, once no connection is open."""
        return self.app_loop.run(self.drained())

    def shutdown(self) -> None:
        """Ask every connection to close once its in-flight response is done."""
        for connection in list(self.connections):
            connection.shutdown()

    def abort(self) -> list[Any]:
        """Cut every connection still open and cancel its app calls; return their tasks."""
        tasks = []
        for connection in list(self.connections):
            tasks += connection.cancel_apps()
            connection.transport.abortConnection()
        return tasks
