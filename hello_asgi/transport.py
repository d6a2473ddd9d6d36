"""Twisted protocols on asyncio's own sockets: the fast path for TCP listeners.

On the asyncio reactor, Twisted's TCP transports cost a selector registration per write;
asyncio's transports write straight to the socket and are several times cheaper. A thin
``ITransport`` adapter lets any Twisted protocol (ours, or TLS wrapped around ours) run on
them unchanged. ``FastListeningReactor`` hands that path to Twisted's endpoint parser, so
``tcp:``/``tcp6:`` endpoint strings keep their meaning and every other endpoint still
works through Twisted itself.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Iterable
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.internet.interfaces import (
    IConsumer,
    IListeningPort,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ITCPTransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

Address = IPv4Address | IPv6Address | UNIXAddress

log = Logger(namespace="hello_asgi.transport")


def twisted_address(sockaddr: Any, family: int) -> Address:
    """An asyncio ``peername``/``sockname`` as the Twisted address object protocols expect."""
    if family == socket.AF_INET6:
        host, port, flowinfo, scope_id = sockaddr
        return IPv6Address("TCP", host, port, flowinfo, scope_id)
    if family == socket.AF_INET:
        return IPv4Address("TCP", *sockaddr)
    return UNIXAddress(sockaddr or None)


@implementer(ITCPTransport, IConsumer, IPushProducer)
class AsyncioTransport(asyncio.Protocol):
    """An asyncio protocol that hosts one Twisted protocol and serves as its transport."""

    __slots__ = ("_factory", "_family", "_loop", "_producer", "_streaming_producer", "_transport",
                 "_writing_paused", "disconnecting", "protocol")  # one per connection: no dict

    def __init__(self, factory: IProtocolFactory, loop: asyncio.AbstractEventLoop) -> None:
        self._factory = factory
        self._loop = loop
        self.protocol: IProtocol | None = None
        self._producer: IProducer | None = None
        self._streaming_producer = True
        self._writing_paused = False
        self.disconnecting = False

    # asyncio.Protocol: events from the socket

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        sock = transport.get_extra_info("socket")
        self._family = sock.family if sock is not None else socket.AF_INET
        protocol = self._factory.buildProtocol(self.getPeer())
        if protocol is None:
            transport.abort()
            return
        self.protocol = protocol
        protocol.makeConnection(self)

    def data_received(self, data: bytes) -> None:
        self.protocol.dataReceived(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        return False  # half-closed peers are closed, as Twisted does without IHalfCloseableProtocol

    def connection_lost(self, exc: Exception | None) -> None:
        if self.protocol is None:
            return
        reason = Failure(ConnectionDone()) if exc is None else Failure(ConnectionLost(str(exc)))
        if self._producer is not None:
            self._producer.stopProducing()
            self._producer = None
        self.protocol.connectionLost(reason)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._producer is not None and self._streaming_producer:
            self._producer.pauseProducing()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._producer is not None:
            self._producer.resumeProducing()

    # ITransport

    def write(self, data: bytes) -> None:
        self._transport.write(data)
        if self._producer is not None and not self._streaming_producer:
            self._loop.call_soon(self._pull)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self._transport.writelines(data)

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._transport.close()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._transport.abort()

    # Made on each call, as Twisted's own TCP transport does: an idle connection then holds
    # only asyncio's address tuples, not two address objects as well.

    def getPeer(self) -> Address:
        return twisted_address(self._transport.get_extra_info("peername"), self._family)

    def getHost(self) -> Address:
        return twisted_address(self._transport.get_extra_info("sockname"), self._family)

    # ITCPTransport

    def loseWriteConnection(self) -> None:
        self._transport.write_eof()

    def getTcpNoDelay(self) -> bool:
        return bool(self._socket_option(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def setTcpNoDelay(self, enabled: bool) -> None:
        self._socket_option(socket.IPPROTO_TCP, socket.TCP_NODELAY, enabled)

    def getTcpKeepAlive(self) -> bool:
        return bool(self._socket_option(socket.SOL_SOCKET, socket.SO_KEEPALIVE))

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self._socket_option(socket.SOL_SOCKET, socket.SO_KEEPALIVE, enabled)

    def _socket_option(self, level: int, option: int, value: bool | None = None) -> int:
        sock = self._transport.get_extra_info("socket")
        if value is None:
            return sock.getsockopt(level, option)  # type: ignore[no-any-return]
        sock.setsockopt(level, option, int(value))
        return int(value)

    # IConsumer: the protocol's producer is paused while asyncio's write buffer is full

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError(f"cannot register {producer!r}: {self._producer!r} is registered")
        self._producer = producer
        self._streaming_producer = streaming
        if streaming and self._writing_paused:
            producer.pauseProducing()  # type: ignore[attr-defined]
        elif not streaming:
            self._loop.call_soon(self._pull)

    def unregisterProducer(self) -> None:
        self._producer = None

    def _pull(self) -> None:
        if self._producer is not None and not self._streaming_producer and not self._writing_paused:
            self._producer.resumeProducing()

    # IPushProducer: the protocol pauses reading from the socket

    def pauseProducing(self) -> None:
        self._transport.pause_reading()

    def resumeProducing(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def stopProducing(self) -> None:
        self.loseConnection()


@implementer(IListeningPort)
class AsyncioPort:
    """A listening socket whose connections get asyncio transports, as Twisted's ``IListeningPort``.

    It accepts by itself rather than through ``asyncio.Server``: out of file descriptors
    (EMFILE), Python 3.11's server schedules a retry for every failed accept in a batch,
    and the retries multiply until the loop spins. This one stops accepting once, for a
    second, and says so in the log once.
    """

    ACCEPTS_PER_TURN = 64  # then let the loop serve the connections it has
    RETRY_AFTER = 1.0  # seconds without accepting, once the process is out of descriptors

    def __init__(self, sock: socket.socket, factory: IProtocolFactory, loop: asyncio.AbstractEventLoop):
        self._socket = sock
        self._factory = factory
        self._loop = loop
        self._listening = False
        self._retry: asyncio.TimerHandle | None = None

    def startListening(self) -> None:
        self._factory.doStart()
        self._listening = True
        self._loop.add_reader(self._socket.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(self.ACCEPTS_PER_TURN):
            try:
                connection, _ = self._socket.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                log.warn("Cannot accept connections ({error}); trying again in {delay} s",
                         error=os.strerror(error.errno), delay=self.RETRY_AFTER)
                self._loop.remove_reader(self._socket.fileno())
                self._retry = self._loop.call_later(self.RETRY_AFTER, self._resume)
                return
            connection.setblocking(False)
            self._loop.create_task(self._loop.connect_accepted_socket(self._protocol, connection))

    def _protocol(self) -> AsyncioTransport:
        return AsyncioTransport(self._factory, self._loop)

    def _resume(self) -> None:
        self._retry = None
        if self._listening:
            self._loop.add_reader(self._socket.fileno(), self._accept)

    def stopListening(self) -> Deferred[None]:
        if not self._listening:
            return succeed(None)
        self._listening = False
        if self._retry is not None:
            self._retry.cancel()
        self._loop.remove_reader(self._socket.fileno())
        self._socket.close()
        self._factory.doStop()
        return succeed(None)

    loseConnection = stopListening

    def getHost(self) -> Address:
        return twisted_address(self._socket.getsockname(), self._socket.family)


class FastListeningReactor:
    """The reactor, but ``listenTCP`` serves connections on asyncio transports.

    Give it to ``serverFromString`` in place of the reactor: Twisted parses the endpoint
    string as usual, and TCP listeners come out fast.
    """

    def __init__(self, reactor: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._reactor = reactor
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> AsyncioPort:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((interface or "0.0.0.0", port))
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            raise CannotListenError(interface, port, error) from error
        listening = AsyncioPort(sock, factory, self._loop)
        listening.startListening()
        return listening

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: IProtocolFactory) -> Any:
        """An inherited listening socket (systemd's, a supervisor's): TCP ones served the fast
        way too. As Twisted's does, it works on a duplicate and leaves ``fileDescriptor`` open."""
        if addressFamily not in (socket.AF_INET, socket.AF_INET6):
            return self._reactor.adoptStreamPort(fileDescriptor, addressFamily, factory)
        sock = socket.socket(addressFamily, socket.SOCK_STREAM, fileno=os.dup(fileDescriptor))
        sock.setblocking(False)
        listening = AsyncioPort(sock, factory, self._loop)
        listening.startListening()
        return listening
