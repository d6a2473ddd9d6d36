"""An in-memory server for protocol tests: no sockets, and time that moves when told.

A test drives what ``ASGIServerFactory.buildProtocol`` gives (the per-connection switcher,
and whichever protocol it picks) through its public edge only: ``makeConnection`` with a
``StringTransport``, ``dataReceived`` for the client's bytes, ``connectionLost`` for its
close. The protocol classes behind it can be restructured without touching these tests.

Timeouts run on a ``twisted.internet.task.Clock``: the factory is given a reactor whose
time is that clock and whose asyncio loop is the running one, so apps run as tasks on
the loop the trial asyncio reactor runs, as they do in a real server, while every
deadline, tick and autobahn timer waits for ``clock.advance``. A test waits for bytes
on a future the transport resolves when it is written to, never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from hello_asgi.config import Config
from hello_asgi.factory import ASGIServerFactory
from hello_asgi.threaded import LoopTransport
from hello_asgi.transport import IConnectionTransport

TIMEOUT = 5.0  # seconds a wait for the server may take before the test fails


class MemoryReactor(Clock):
    """The reactor a memory server's factory is given: ``Clock``'s time, and ``loop``.

    ``_asyncioEventloop`` is the attribute by which Twisted's asyncio reactor names its
    loop; ``bridge.AppLoop`` reads it to run apps on that loop rather than on a thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._asyncioEventloop = loop


@implementer(IConnectionTransport)
class MemoryTransport(StringTransport):
    """A ``StringTransport`` that tells waiters when the server writes or closes, and
    delivers ``connectionLost`` a loop turn after the server closes, as a socket does."""

    def __init__(self, loop: asyncio.AbstractEventLoop, peer: IPv4Address, host: IPv4Address) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self._loop = loop
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self.protocol: IProtocol | None = None
        self.write_closed = False  # the server half-closed (lingering before its close)
        self.lost = False  # connectionLost was delivered

    def write(self, data: bytes) -> None:
        super().write(data)
        self._wake()

    def writeSequence(self, seq: Any) -> None:
        super().write(b"".join(seq))
        self._wake()

    def loseWriteConnection(self) -> None:
        self.write_closed = True
        self._wake()

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self._loop.call_soon(self.connection_lost, Failure(ConnectionDone()))
        super().loseConnection()
        self._wake()

    def abortConnection(self) -> None:
        if not self.disconnecting:
            self._loop.call_soon(self.connection_lost, Failure(ConnectionAborted()))
        super().abortConnection()  # sets ``disconnected``: the connection was cut
        self._wake()

    def connection_lost(self, reason: Failure) -> None:
        """Tell the protocol the connection is gone (once, whichever side closed)."""
        if self.lost or self.protocol is None:
            return
        self.lost = True
        self.disconnecting = True
        self.protocol.connectionLost(reason)
        self._wake()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checked after each write and close."""
        if condition():
            return
        waiter = self._loop.create_future()
        self._waiters.append((condition, waiter))
        await asyncio.wait_for(waiter, TIMEOUT)

    def _wake(self) -> None:
        waiting = []
        for condition, waiter in self._waiters:
            if waiter.done():
                continue
            if condition():
                waiter.set_result(None)
            else:
                waiting.append((condition, waiter))
        self._waiters = waiting


class MemoryConnection:
    """One client connection: bytes in with ``send``, the server's bytes out with ``read``."""

    def __init__(self, protocol: IProtocol, transport: MemoryTransport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._read = 0  # how much of the transport's bytes ``read`` has handed out

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def written(self) -> bytes:
        """Every byte the server has written so far."""
        return self.transport.value()

    async def read(self, until: bytes | None = None) -> bytes:
        """The bytes written since the last ``read``: once there are some, or once
        ``until`` is among them (everything to its end), or once the server closed."""

        def ready() -> bool:
            new = self.transport.value()[self._read:]
            if self.closed:
                return True
            return bool(new) if until is None else until in new

        await self.transport.until(ready)
        new = self.transport.value()[self._read:]
        end = len(new) if until is None or until not in new else new.index(until) + len(until)
        self._read += end
        return new[:end]

    async def read_exactly(self, size: int) -> bytes:
        """The next ``size`` bytes, once the server has written them."""
        await self.transport.until(lambda: len(self.transport.value()) - self._read >= size or self.closed)
        data = self.transport.value()[self._read:self._read + size]
        self._read += len(data)
        return data

    @property
    def closed(self) -> bool:
        """The server closed (or cut) the connection."""
        return bool(self.transport.disconnecting)

    async def until_closed(self) -> bytes:
        """Wait for the server to close; the bytes not read yet."""
        await self.transport.until(lambda: self.closed)
        return await self.read()

    def close(self) -> None:
        """The client closes: the server's protocol learns at once."""
        self.transport.connection_lost(Failure(ConnectionDone()))


class MemoryServer:
    """A factory serving ``app``, its connections in memory, its time on ``clock``.

    Made inside a test's coroutine (``asyncio_test``), whose loop the apps run on.
    ``settings`` are ``Config`` fields; the access log is off unless asked for. Every
    connection still open is cut, its app cancelled, and the server drained, in ``test``'s
    cleanup.
    """

    def __init__(self, test: TestCase, app: Any, **settings: Any) -> None:
        settings.setdefault("access_log", None)
        self.loop = asyncio.get_running_loop()
        self.clock = MemoryReactor(self.loop)
        self.factory = ASGIServerFactory(app, Config(**settings), reactor=self.clock)
        test.addCleanup(self._stop)

    def connect(self, port: int = 50000, crossing: bool = False) -> MemoryConnection:
        """A new connection from ``127.0.0.1:port``, made as a listener makes one.

        ``crossing``: the protocol is given the transport through ``threaded.LoopTransport``,
        as under a reactor that is not asyncio's (here the crossings are plain calls).
        """
        peer = IPv4Address("TCP", "127.0.0.1", port)
        transport = MemoryTransport(self.loop, peer, IPv4Address("TCP", "127.0.0.1", 8000))
        protocol = self.factory.buildProtocol(peer)
        assert protocol is not None
        transport.protocol = protocol
        protocol.makeConnection(LoopTransport(transport, self.factory.app_loop) if crossing else transport)
        return MemoryConnection(protocol, transport)

    def advance(self, seconds: float) -> None:
        """Move the server's time on: every deadline due by then fires."""
        self.clock.advance(seconds)

    async def _drain(self) -> None:
        tasks = self.factory.abort()  # cut what is still open, cancel the apps it runs
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait_for(self.factory.drained(), TIMEOUT)

    def _stop(self) -> Deferred[None]:
        return Deferred.fromFuture(asyncio.ensure_future(self._drain()))
