"""The server factory: one per listener set, it builds a protocol for each connection."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import ILogObserver, Logger

from .bridge import asyncio_loop
from .config import Config
from .http1 import HTTP11Connection, error_response
from .loading import as_asgi3, asgi_version

log = Logger(namespace="hello_asgi.factory")


class _Overloaded(Protocol):
    """Answers 503 and closes: the connection limit is reached."""

    def __init__(self, server_header: bytes | None) -> None:
        self._server_header = server_header

    def connectionMade(self) -> None:
        self.transport.write(error_response(503, "too many connections", self._server_header))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class ASGIServerFactory(ServerFactory):
    """Serves an ASGI app on any ``IStreamServerEndpoint``: ``endpoint.listen(factory)``.

    ``state`` is the lifespan state copied into every request scope; ``scheme`` is
    ``https`` for factories that TLS endpoints wrap; ``access_observer`` receives the access
    log events (the global log by default).
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
        self.reactor = reactor
        self.loop = asyncio_loop(reactor)
        self.state: dict[str, Any] = {} if state is None else state
        self.scheme = scheme
        self.access_logger = (
            Logger(namespace="hello_asgi.access", observer=access_observer)
            if config.access_log is not None
            else None
        )
        self.connections: set[HTTP11Connection] = set()
        self._drain_waiters: list[Deferred[None]] = []
        self._date_second = 0
        self._date_line = b""

    def buildProtocol(self, addr: IAddress) -> Protocol:
        if len(self.connections) >= self.config.max_connections:
            log.warn("Connection limit of {limit} reached; answering 503", limit=self.config.max_connections)
            return _Overloaded(self.config.server_header)
        return HTTP11Connection(self)

    def connection_opened(self, connection: HTTP11Connection) -> None:
        self.connections.add(connection)

    def connection_closed(self, connection: HTTP11Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def whenDrained(self) -> Deferred[None]:
        """A Deferred that fires once no connection is open."""
        if not self.connections:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._drain_waiters.append(waiter)
        return waiter

    def date_header(self) -> bytes:
        """The ``Date`` header line, formatted once a second rather than once a response."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date_line = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
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
