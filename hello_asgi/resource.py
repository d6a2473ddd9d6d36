"""An ASGI app in an existing twisted.web site: the ASGI counterpart of ``WSGIResource``.

    root.putChild(b"api", ASGIResource(app))

twisted.web parses the request; ``HTTPStream`` (the same ASGI mapping the server's own
HTTP/1.1 and HTTP/2 use) runs the app; ``_WebResponse`` writes what the app sends through
twisted.web's ``Request``. A WebSocket upgrade under the mount point takes the connection
over from twisted.web and is served by the server's own WebSocket code.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from .config import Config
from .bridge import app_loop
from .context import ServerContext
from .lifespan import Lifespan
from .flow import Drain
from .stream import ConnectionScope, Headers, HTTPStream, RequestHead
from .threaded import ReactorSide, WriteGate
from .websocket import HTTP11Handshake, WebSocketConnection, handshake_problem

log = Logger(namespace="hello_asgi.resource")

BODY_CHUNK = 64 * 1024  # how much of a spooled request body one http.request message carries


class ASGIResource(Resource):
    """Serves ``app`` for every path under where it is mounted, with ``root_path`` set to that place.

    Request bodies: twisted.web reads a body whole before it renders (spooling a large one
    to a temporary file); the app gets it in ``BODY_CHUNK`` messages as it calls ``receive()``.
    Responses stream, with backpressure: ``send()`` waits while the client reads slowly.
    twisted.web writes its own ``Server`` and ``Date`` headers and its own access log.
    An app that needs lifespan events gets them from ``lifespan_service()``.
    """

    isLeaf = True

    def __init__(self, app: Any, config: Config | None = None, *, reactor: Any = None,
                 state: dict[str, Any] | None = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        config = config or Config()
        config.validate()
        self.context = ServerContext(app, config, app_loop(reactor), state=state)

    def render(self, request: Request) -> Any:
        context = self.context
        mount = b"/" + b"/".join(request.prepath) if request.prepath else b""
        path = request.path[len(mount):]
        head = RequestHead(
            method=request.method,
            target=request.uri,
            raw_path=path,
            query_string=request.uri.partition(b"?")[2],
            headers=[(name.lower(), value) for name, values in request.requestHeaders.getAllRawHeaders()
                     for value in values],
        )
        connection = context.scope_between(request.getClientAddress(), request.getHost(),
                                           "https" if request.isSecure() else "http", mount.decode("utf-8", "replace"))
        if self._wants_websocket(request):
            return self._take_over(request, head, connection)
        http_version = request.clientproto.decode("latin-1").partition("/")[2]
        scope = connection.http(request.method.decode("latin-1"), http_version, head.raw_path,
                                head.query_string, head.headers, {})
        response = _WebResponse(request, context)
        stream = HTTPStream(scope, response, body_complete=False)
        context.app_loop.to_loop(response.start, stream)
        return NOT_DONE_YET

    def lifespan_service(self) -> Service:
        """A service to add to the application beside the site: it runs lifespan startup
        when the application starts and lifespan shutdown when it stops."""
        return _LifespanService(self.context)

    def _wants_websocket(self, request: Request) -> bool:
        upgrade = b",".join(request.requestHeaders.getRawHeaders(b"upgrade", []))
        return (self.context.config.websocket and request.clientproto == b"HTTP/1.1"
                and b"websocket" in (token.strip().lower() for token in upgrade.split(b",")))

    def _take_over(self, request: Request, head: RequestHead, connection: ConnectionScope) -> Any:
        """Answer a bad handshake here; take a good one's connection from twisted.web."""
        problem = handshake_problem(head, http2=False)
        if problem is not None:
            status, reason, headers = problem
            request.setResponseCode(status)
            for name, value in [(b"content-type", b"text/plain; charset=utf-8"), *headers]:
                request.setHeader(name, value)
            return reason.encode() + b"\n"
        context = self.context
        channel = request.channel
        channel.setTimeout(None)  # the channel's idle timer would cut the WebSocket
        transport: Any = channel.transport
        transport.unregisterProducer()  # the channel, registered as the transport's producer
        channel.transport = None
        protocol: Any = WebSocketConnection(context, head, "1.1", HTTP11Handshake(head, context), connection)
        if context.app_loop.threaded:
            protocol = ReactorSide(protocol, context.app_loop)
        if isinstance(transport, ProtocolWrapper):  # TLS: the wrapper passes bytes up to it
            transport.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        transport.resumeProducing()  # twisted.web paused reading while it rendered
        return NOT_DONE_YET


class _LifespanService(Service):
    """The app's lifespan, tied to a ``twisted.application`` service's start and stop."""

    def __init__(self, context: ServerContext) -> None:
        self._app_loop = context.app_loop
        self._lifespan = Lifespan(context.app, context.config.lifespan, context.asgi_version, context.state)
        self._started: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._started = self._app_loop.run(self._lifespan.startup())
        self._started.addErrback(lambda failure: log.failure("Lifespan startup failed", failure))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        started, self._started = self._started, None
        assert started is not None
        return started.addCallback(lambda _: self._app_loop.run(self._lifespan.shutdown()))


@implementer(IPushProducer)
class _WebResponse:
    """``HTTPStream``'s ``ResponseWriter`` over a twisted.web ``Request``.

    The stream and the app run on the app loop's thread; everything that touches the
    request crosses to the reactor's (with the asyncio reactor, both are the same thread).
    """

    def __init__(self, request: Request, context: ServerContext) -> None:
        self._request = request
        self._context = context
        self._app_loop = context.app_loop
        assert request.content is not None  # twisted.web made it while reading the request
        self._body = request.content
        self._gone = False  # reactor side: the connection was lost before the response ended
        self._gate = WriteGate(lambda: None, self._resumed)  # loop side: send() waits while it is paused
        self._drain = Drain(self._app_loop.loop)

    def start(self, stream: HTTPStream) -> None:
        """On the loop: watch the request, hand the app its first body chunk, start the app."""
        self._stream = stream
        self._app_loop.to_reactor(self._watch)
        self._body.seek(0)
        self.body_consumed(stream)
        stream.task = self._context.start(stream)

    def _watch(self) -> None:
        request = self._request
        request.defaultContentType = None  # the app says what its body is
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _: Any) -> None:
        self._gone = True
        self._app_loop.to_loop(self._disconnect)

    def _disconnect(self) -> None:
        self._stream.disconnect()
        self._drain.release()

    # IPushProducer, on the reactor's thread: the client reads slowly, or again.

    def pauseProducing(self) -> None:
        self._app_loop.to_loop(self._gate.reactor_paused, True)

    def resumeProducing(self) -> None:
        self._app_loop.to_loop(self._gate.reactor_paused, False)

    def _resumed(self) -> None:
        self._drain.release()

    def stopProducing(self) -> None:
        pass  # connectionLost follows, and notifyFinish tells the stream

    # ResponseWriter, on the loop's thread.

    def write_response(self, stream: HTTPStream, status: int, headers: Headers, body: bytes, end: bool) -> None:
        self._gate.sent(len(body))
        self._app_loop.to_reactor(self._respond, status, headers, body, end)

    def _respond(self, status: int, headers: Headers, body: bytes, end: bool) -> None:
        if self._gone:
            self._app_loop.to_loop(self._gate.landed, len(body))
            return
        request = self._request
        request.setResponseCode(status)
        for name, value in headers:
            if name.lower() in (b"server", b"date"):
                request.responseHeaders.setRawHeaders(name, [value])  # the app's, not twisted.web's
            else:
                request.responseHeaders.addRawHeader(name, value)
        self._write(body, end)

    def write_body(self, stream: HTTPStream, body: bytes, end: bool) -> None:
        self._gate.sent(len(body))
        self._app_loop.to_reactor(self._write, body, end)

    def _write(self, body: bytes, end: bool) -> None:
        if not self._gone:
            if body:
                self._request.write(body)
            if end:
                self._end()
        self._app_loop.to_loop(self._gate.landed, len(body))

    def _end(self) -> None:
        if not self._gone:
            self._request.unregisterProducer()
            self._request.finish()

    def write_trailers(self, stream: HTTPStream, headers: Headers) -> None:
        self._app_loop.to_reactor(self._end)  # twisted.web cannot send trailers; they are not advertised

    def write_informational(self, stream: HTTPStream, status: int, headers: Headers) -> None:
        """twisted.web answers ``Expect: 100-continue`` itself; early hints are not advertised."""

    def push(self, stream: HTTPStream, path: str, headers: Headers) -> None:
        """Not advertised: twisted.web has no server push."""

    def body_consumed(self, stream: HTTPStream) -> None:
        """Give the app the next chunk of the spooled body, or the end of it."""
        chunk = self._body.read(BODY_CHUNK)
        if chunk:
            stream.feed_body(chunk)
        else:
            stream.end_body()

    def drained(self, stream: HTTPStream) -> asyncio.Future[None] | None:
        return self._drain.waiter() if self._gate.paused else None

    def send_file(self, stream: HTTPStream, file: Any, count: int) -> None:
        """None: twisted.web's ``Request`` has no sendfile, so the stream reads the file."""
        return None

    def abort(self, stream: HTTPStream) -> None:
        self._app_loop.to_reactor(self._abort)

    def _abort(self) -> None:
        if not self._gone:
            self._gone = True
            request = self._request
            request.unregisterProducer()
            connection: Any = request.transport or request.channel  # HTTP/2: the stream, reset
            connection.abortConnection()

    def finished(self, stream: HTTPStream) -> None:
        """The app returned; the response was ended (or cut off) on the way here."""
