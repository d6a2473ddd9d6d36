"""A ``twisted.application`` service: lifespan, listeners, and graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, maybeDeferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from .config import Config
from .factory import ASGIServerFactory
from .headers import DefaultHeaders
from .lifespan import Lifespan
from .loading import as_asgi3
from .metrics import REPORT_VARIABLE, ServerMetrics
from .process import ProcessSignals, exit_after_shutdown, is_worker, stop_and_exit, worker_ready
from .proxy_protocol import PROXYProtocolFactory
from .recycling import RequestBudget, replace_or_stop, share
from .transport import CLOSE_TIMEOUT, FastListeningReactor

if TYPE_CHECKING:  # the TLS stack (pyOpenSSL, cryptography) is loaded only for TLS listeners
    from aioquic.quic.configuration import QuicConfiguration

    from .quic import QuicEndpoint
    from .tls import ReloadableTLS

log = Logger(namespace="hello_asgi.service")


def server_endpoint(reactor: Any, description: str, close_timeout: float = CLOSE_TIMEOUT) -> IStreamServerEndpoint:
    """Parse a Twisted endpoint string, or ``fd:N[:domain=INET6]`` for a listening socket
    this process inherited as file descriptor N (from a supervisor, or any parent; systemd's
    have their own ``systemd:`` strings). TCP ones are served on asyncio's faster transports,
    whose connections close within ``close_timeout`` seconds whatever the peer does."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None:
        reactor = FastListeningReactor(reactor, loop, close_timeout)
    if description.startswith("fd:"):
        return _adopted_endpoint(reactor, description)
    return serverFromString(reactor, description)


def _adopted_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    number, *options = description[3:].split(":")
    settings = dict(option.partition("=")[::2] for option in options)
    family = getattr(socket, "AF_" + settings.pop("domain", "INET"), None)
    if not number.isdigit() or family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX) or settings:
        raise ValueError(f"expected fd:NUMBER[:domain=INET|INET6|UNIX], not {description!r}")
    return AdoptedStreamServerEndpoint(reactor, int(number), family)


def _quic_configuration(config: Config) -> QuicConfiguration:
    """aioquic's settings with the TLS listeners' certificate and key, which HTTP/3 needs
    (``Config.validate`` refuses ``--h3`` or a ``quic:`` listener without them)."""
    from .quic import server_configuration

    certfile, keyfile = config.certfile, config.keyfile
    assert certfile is not None and keyfile is not None, "HTTP/3 without --certfile and --keyfile"
    return server_configuration(config, certfile, keyfile, config.key_password)


def tcp_description(host: str, port: int, backlog: int) -> str:
    """The endpoint string for ``--host``/``--port``."""
    return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}:backlog={backlog}"


def listening_url(scheme: str, address: Any) -> str:
    """What a user can paste into a browser or curl: ``http://[::1]:8000``, or the socket's
    path for a UNIX listener (``curl --unix-socket``)."""
    if not hasattr(address, "port"):
        return f"{scheme}://localhost (UNIX socket {os.fsdecode(address.name)})"
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{scheme}://{host}:{address.port}"


def quic_address(description: str) -> tuple[str, int]:
    """``quic:PORT[:interface=HOST]``: an HTTP/3 listener of its own, on UDP."""
    kind, port, *options = description.split(":")
    settings = dict(option.partition("=")[::2] for option in options)
    host = settings.pop("interface", "0.0.0.0")
    if kind != "quic" or not port.isdigit() or settings:
        raise ValueError(f"expected quic:PORT[:interface=HOST], not {description!r}")
    return host, int(port)


def _with_server_wrappers(app: Any, config: Config, reactor: Any, owns_process: bool,
                          h3_ports: set[int] | None = None) -> Any:
    """The app, behind what the settings put in front of it: each wrapper costs a call per
    request, so there is none unless asked for. A wrapper calls an ASGI 3 app, so an ASGI 2
    or WSGI app is made one first (the factory would see only the wrapper)."""
    wrapped = (h3_ports is not None and config.alt_svc) or config.default_headers \
        or (owns_process and config.max_requests)
    if wrapped:
        app = as_asgi3(app, config.interface, wsgi_threads=config.wsgi_threads)
    if h3_ports is not None and config.alt_svc:
        from .alt_svc import AltSvc

        app = AltSvc(app, config.alt_svc_max_age, h3_ports)
    if config.default_headers:
        app = DefaultHeaders(app, config.default_headers)
    if owns_process and config.max_requests:
        app = RequestBudget(app, share(config.max_requests, config.max_requests_jitter), replace_or_stop(reactor))
    return app


class ASGIService(Service):
    """Serves ``app`` on ``config.listen``: lifespan startup, then listening; the reverse on stop.

    ``whenListening()`` gives a Deferred of the listening ports, so callers (tests, ``.tac``
    files) can wait for the server to be ready; ``stopService()`` returns a Deferred that
    fires once in-flight requests have finished (or ``graceful_timeout`` cut them off) and
    lifespan shutdown has run.
    """

    def __init__(self, app: Any, config: Config | None = None, *, reactor: Any = None,
                 owns_process: bool = False) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.config = config = config or Config()
        self._reactor = reactor
        self.quic: list[QuicEndpoint] = []  # the HTTP/3 endpoints, on UDP
        self._h3_ports: set[int] = set()  # the ports they serve, which Alt-Svc names
        wants_h3 = config.h3 or any(description.startswith("quic:") for description in config.listen)
        self.factory = ASGIServerFactory(
            _with_server_wrappers(app, config, reactor, owns_process, self._h3_ports if wants_h3 else None),
            config, reactor=reactor)
        context = self.factory.context
        self._lifespan = Lifespan(context.app, config.lifespan, context.asgi_version, context.state)
        self._owns_process = owns_process
        self.metrics: ServerMetrics | None = None
        reporting = owns_process and is_worker() and REPORT_VARIABLE in os.environ
        if config.metrics_listen is not None or reporting:
            self.metrics = ServerMetrics(self.factory, reactor, config.metrics_listen, reporting)
        self._listener_factory: Any = self.factory if self.metrics is None else self.metrics.listener_factory
        self.tls: ReloadableTLS | None = None
        if config.certfile is not None and config.keyfile is not None:
            from .tls import BoundedTLSFactory, ReloadableTLS

            self.tls = ReloadableTLS(config)
            self._listener_factory = BoundedTLSFactory(self.tls, self._listener_factory, config.close_timeout)
        if config.proxy_protocol:  # its header comes first, before any TLS
            self._listener_factory = PROXYProtocolFactory(self._listener_factory, reactor,
                                                          config.request_head_timeout)
        self.ports: list[IListeningPort] = []
        self._listening: Deferred[list[IListeningPort]] | None = None
        self._waiting: list[Deferred[list[IListeningPort]]] = []

    def startService(self) -> None:
        super().startService()
        if self._owns_process:
            if is_worker():  # SIGHUP is its supervisor's to act on; a Ctrl-C reaches it twice
                ProcessSignals(self._reactor, lambda: None, repeat_level=LogLevel.debug).install()
            else:
                ProcessSignals(self._reactor, self._hangup).install()
        self._listening = ensureDeferred(self._start())
        self._listening.addCallbacks(self._started, self._failed)

    async def _start(self) -> list[IListeningPort]:
        if self.factory.app_loop.threaded:
            log.info("{reactor} is not the asyncio reactor: apps run on an asyncio loop in a companion thread",
                     reactor=type(self._reactor).__name__)
        await self.factory.app_loop.run(self._lifespan.startup())
        descriptions = self.config.listen or [tcp_description("127.0.0.1", 8000, self.config.backlog)]
        for description in descriptions:
            if description.startswith("quic:"):
                await self._listen_quic(*quic_address(description))
                continue
            endpoint = server_endpoint(self._reactor, description, self.config.close_timeout)
            if isinstance(endpoint, SSL4ServerEndpoint):  # an ssl: string: Twisted made its TLS context,
                # whose ALPN would fail a client that offers none of ours rather than serve it HTTP/1.1
                from .tls import choose_alpn

                choose_alpn(endpoint._sslContextFactory.getContext(), self.factory.acceptableProtocols())
            port = await endpoint.listen(self._listener_factory)
            self.ports.append(port)
            tls = self.config.certfile is not None or description.split(":", 1)[0] in ("ssl", "tls")
            log.info("Serving {url} ({description})", url=listening_url("https" if tls else self.factory.scheme,
                                                                        port.getHost()), description=description)
            address = port.getHost()
            if self.config.h3 and self.config.certfile is not None and isinstance(address, (IPv4Address, IPv6Address)):
                await self._listen_quic(address.host, address.port)
        if self.metrics is not None:
            await self.metrics.start()
        return self.ports

    async def _listen_quic(self, host: str, port: int) -> None:
        """An HTTP/3 endpoint on UDP ``host``:``port``, with the TLS listeners' certificate;
        a worker's shares the port with its siblings' (SO_REUSEPORT)."""
        from .quic import QuicEndpoint, udp_socket

        config = self.config
        configuration = _quic_configuration(config)

        async def listen() -> QuicEndpoint:  # on the app loop, where the connections live
            return QuicEndpoint(self.factory.context, udp_socket(host, port, reuse_port=is_worker()), configuration,
                                retry=config.h3_retry, early_data=config.h3_early_data)

        endpoint = await self.factory.app_loop.run(listen())
        self.quic.append(endpoint)
        self._h3_ports.add(endpoint.address.port)
        log.info("Serving HTTP/3 on {url} (UDP)", url=listening_url("https", endpoint.address))

    def _started(self, ports: list[IListeningPort]) -> None:
        if self._owns_process:
            # Everything alive now (modules, the app, the server) lives as long as the
            # process: out of the collector's sight, a full collection no longer walks it,
            # which took HTTP/1.1's p99 latency from 8-15 ms back to 5 ms under load.
            # Startup's own garbage is collected first, not frozen with the rest.
            gc.collect()
            gc.freeze()
            worker_ready()  # a worker of --workers or --reload: its supervisor waits for this
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(ports)

    def _failed(self, failure: Failure) -> None:
        log.critical("hello-asgi could not start: {error}", error=failure.getErrorMessage())
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.errback(failure)
        if self._owns_process:
            self._reactor.callLater(0, stop_and_exit, self._reactor, 1)

    def _hangup(self) -> None:
        """SIGHUP never ends the process: TLS files are read again, as nginx and HAProxy do."""
        if self.tls is None:
            log.info("Received SIGHUP: nothing to reload (no TLS; --workers restarts workers on SIGHUP)")
        else:
            self.reloadTLS()

    def reloadTLS(self) -> None:
        """Read the certificate and key files again for new connections (SIGHUP under ``twist``)."""
        if self.tls is None:
            return
        from .tls import TLSConfigError

        try:
            self.tls.reload()
            if self.quic:
                configuration = _quic_configuration(self.config)
                for endpoint in self.quic:
                    self.factory.app_loop.to_loop(endpoint.reload, configuration)
        except (TLSConfigError, OSError, ValueError) as error:
            log.error("TLS not reloaded, the old certificate stays in use: {error}", error=error)
        else:
            log.info("TLS certificate reloaded from {path}", path=self.config.certfile)

    def whenListening(self) -> Deferred[list[IListeningPort]]:
        """A Deferred that fires with the listening ports once the server is ready."""
        waiter: Deferred[list[IListeningPort]] = Deferred()
        if self._listening is not None and self._listening.called:
            if self.ports or self.running:
                waiter.callback(self.ports)
            return waiter
        self._waiting.append(waiter)
        return waiter

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        ports, self.ports = self.ports, []
        await DeferredList([maybeDeferred(port.stopListening) for port in ports])  # a Deferred or None
        app_loop = self.factory.app_loop
        await app_loop.run(self._drain())
        try:
            await app_loop.run(self._lifespan.shutdown())
        except Exception as error:
            log.error("{error}", error=error)
        if self.metrics is not None:
            await self.metrics.stop()
        access_log = self.factory.context.access_log
        if access_log is not None:  # the lines of the last requests, written now
            access_log.close()
        if self._owns_process:  # run by twist: this process is ours to end
            exit_after_shutdown(self._reactor, 0)  # last of the "after" triggers: added during shutdown

    async def _drain(self) -> None:
        """On the app loop: let connections finish within ``graceful_timeout``, then cut them."""
        factory = self.factory
        quic, self.quic = self.quic, []
        count = len(factory.connections) + sum(len(endpoint.connections) for endpoint in quic)
        if not count:
            for endpoint in quic:
                endpoint.stop()
            return
        log.info("Waiting up to {timeout} s for {count} connection(s) to finish",
                 timeout=self.config.graceful_timeout, count=count)
        factory.shutdown()
        for endpoint in quic:
            endpoint.shutdown()  # HTTP/3 GOAWAY
        try:
            await asyncio.wait_for(asyncio.gather(factory.drained(), *(endpoint.drained() for endpoint in quic)),
                                   self.config.graceful_timeout)
        except asyncio.TimeoutError:
            log.warn("Graceful timeout: cutting {count} connection(s)", count=len(factory.connections))
            cancelled = factory.abort()
            for endpoint in quic:
                cancelled += endpoint.abort()
            if cancelled:
                await asyncio.gather(*cancelled, return_exceptions=True)
        finally:
            for endpoint in quic:
                endpoint.stop()  # CONNECTION_CLOSE to every connection still open
