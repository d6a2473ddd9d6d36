"""What every connection of one server shares: the app, its loop, the settings, the clock.

The factory builds one ``ServerContext`` and hands it to each protocol it makes; the
protocols, the WebSocket handshake, ``ConnectionScope`` and twisted.web's ``ASGIResource``
depend on this, not on the factory, so no protocol module imports ``factory``. Everything
here is shared and read-mostly: per-connection state lives in the protocols.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, INegotiated, ITransport
from twisted.logger import ILogObserver

from .access_log import RequestLog, access_log
from .bridge import AppLoop
from .config import Config
from .loading import as_asgi3, asgi_version
from .proxy import TrustedProxies
from .stream import ConnectionScope, HTTPStream
from .timeouts import Ticks
from .websocket_session import WebSocketSession

HTTP_TASK = "hello-asgi http"  # the names of the app's tasks (asyncio.Task.get_name)
WEBSOCKET_TASK = "hello-asgi websocket"

if TYPE_CHECKING:  # autobahn is loaded with the first WebSocket
    from autobahn.twisted.websocket import WebSocketServerFactory

# The addresses with a host and a port (TCP's, UDP's, a PROXY header's); any other is a
# UNIX socket's, or unnamed.
_IP_ADDRESS = (IPv4Address, IPv6Address)


class ServerContext:
    """One server's shared facts, as its connections see them.

    ``app`` is the app as ASGI 3 (``asgi_version`` says what it was written as);
    ``clock`` and ``ticks`` time the connections' deadlines on the thread the protocols
    run on; ``request_log`` is what a protocol calls once per finished exchange (the
    access log, or the metrics counter in front of it: ``metrics.meter`` puts it there).
    """

    def __init__(
        self,
        app: Any,
        config: Config,
        app_loop: AppLoop,
        *,
        state: dict[str, Any] | None = None,
        scheme: str = "http",
        access_observer: ILogObserver | None = None,
    ) -> None:
        self.config = config
        self.app = as_asgi3(app, config.interface, wsgi_threads=config.wsgi_threads)
        self.asgi_version = asgi_version(self.app)
        self.app_loop = app_loop
        self.loop = app_loop.loop
        self.clock = app_loop.clock
        self.ticks = Ticks(self.clock)  # the connections' deadlines share its timers
        self.state: dict[str, Any] = {} if state is None else state
        self.scheme = scheme
        self.trusted_proxies = TrustedProxies(config.forwarded_allow_ips) if config.proxy_headers else None
        self.access_log = access_log(config.access_log, config.access_log_format, self.loop.call_soon,
                                     access_observer)
        self.request_log: RequestLog | None = self.access_log

    def start(self, exchange: HTTPStream | WebSocketSession) -> asyncio.Task[None]:
        """Run the app for one request or WebSocket as a task on the app loop: where every
        protocol starts its app calls, so what each call needs is added here once.

        The task is named by its kind: on Python 3.11 an unnamed task formats a
        ``Task-N`` name as it is made (1.2k instructions of the 131k a request took). With
        no task factory set it is made as ``loop.create_task`` would make it, less that
        call's Python frame (1.2k more); a factory (3.12's eager one, an app's) is used."""
        loop = self.loop
        if type(exchange) is HTTPStream:  # (the hot path: checked first, by type alone)
            run = exchange.run(self.app, self.config.request_timeout)
            if loop.get_task_factory() is None:
                return asyncio.Task(run, loop=loop, name=HTTP_TASK)
            return loop.create_task(run, name=HTTP_TASK)
        return loop.create_task(exchange.run(self.app), name=WEBSOCKET_TASK)

    def scope_of(self, transport: ITransport) -> ConnectionScope:
        """What a connection's requests share, read off its transport once, at the edge:
        the two addresses (a PROXY header's, where one came), and TLS's details."""
        if INegotiated.providedBy(transport):
            from .tls import tls_extension  # loaded only once TLS is in use

            return self.scope_between(transport.getPeer(), transport.getHost(), "https",
                                      tls=tls_extension(transport))
        return self.scope_between(transport.getPeer(), transport.getHost(), self.scheme)

    def scope_between(self, peer: IAddress, host: IAddress, scheme: str, mount: str = "",
                      tls: dict[str, Any] | None = None) -> ConnectionScope:
        """From a connection's two addresses; ``mount`` is where a resource sits in a site."""
        client = (peer.host, peer.port) if isinstance(peer, _IP_ADDRESS) else None
        proxies = self.trusted_proxies
        return ConnectionScope(
            scheme=scheme,
            client=client,
            server=_server(host.host, host.port) if isinstance(host, _IP_ADDRESS) else (_socket_path(host), None),
            root_path=self.config.root_path + mount,
            state=self.state,
            asgi_version=self.asgi_version,
            proxy=proxies if proxies is not None and proxies.trusts(client[0] if client else None) else None,
            tls=tls,
        )

    @functools.cached_property
    def websocket_options(self) -> WebSocketServerFactory:
        """autobahn's options for this server's WebSockets, made with the first one."""
        from .websocket import autobahn_options

        return autobahn_options(self.config, self.clock)


@functools.lru_cache(maxsize=64)
def _server(host: str, port: int) -> tuple[str, int]:
    """The scope's ``server``: one tuple for every connection to the same listening address."""
    return host, port


def _socket_path(address: IAddress) -> str | None:
    """A UNIX socket's path as text (Twisted keeps it as bytes), for the scope's ``server``."""
    name = getattr(address, "name", None)
    return os.fsdecode(name) if name is not None else None
