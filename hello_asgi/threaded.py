"""Connections of a reactor that is not asyncio's, carried over to the ``AppLoop`` thread.

The socket stays with the reactor, on its thread; the protocol above it (HTTP/1.1, HTTP/2
or WebSocket, and so the app) runs on the app loop's thread, unchanged. ``ReactorSide`` is
the protocol the reactor's transport sees: it passes what happens to the connection across.
``LoopTransport`` is the transport the protocol sees: it passes writes and flow control back,
and what one turn of the loop asks for crosses in one hop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVarTuple, cast

from twisted.internet.interfaces import IAddress, INegotiated, IProducer, IPushProducer, ISystemHandle
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from .bridge import AppLoop
from .transport import IConnectionTransport


Ts = TypeVarTuple("Ts")

class WriteGate:
    """Flow control for bytes written on the loop's thread and written out on the reactor's.

    The reactor's transport says "pause" a hop late, after the bytes arrived; by then the
    loop could have queued any amount more. So the loop counts the bytes still crossing
    too, and holds its producer while more than ``HIGH_WATER`` are on the way or while the
    reactor's transport is paused. Every method runs on the loop's thread.
    """

    HIGH_WATER = 64 * 1024  # as Twisted's transports: pause above one write buffer's worth

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause = pause
        self._resume = resume
        self._crossing = 0
        self._reactor_paused = False
        self.paused = False

    def sent(self, size: int) -> None:
        self._crossing += size
        self._update()

    def landed(self, size: int) -> None:
        self._crossing -= size
        self._update()

    def reactor_paused(self, paused: bool) -> None:
        self._reactor_paused = paused
        self._update()

    def _update(self) -> None:
        paused = self._reactor_paused or self._crossing > self.HIGH_WATER
        if paused != self.paused:
            self.paused = paused
            (self._pause if paused else self._resume)()


class ReactorSide(Protocol):
    """On the reactor's thread: hands each event of the connection to ``protocol`` on the loop's."""

    transport: IConnectionTransport  # set by makeConnection, before any other call

    def __init__(self, protocol: Protocol, app_loop: AppLoop) -> None:
        self._protocol = protocol
        self._app_loop = app_loop

    def connectionMade(self) -> None:
        self._app_loop.to_loop(self._protocol.makeConnection, LoopTransport(self.transport, self._app_loop))

    def dataReceived(self, data: bytes) -> None:
        self._app_loop.to_loop(self._protocol.dataReceived, data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._app_loop.to_loop(self._protocol.connectionLost, reason)


@implementer(IPushProducer)
class _ProducerOnLoop:
    """Registered with the reactor's transport for a producer that lives on the loop's thread."""

    def __init__(self, producer: IPushProducer, gate: WriteGate, app_loop: AppLoop) -> None:
        self._producer = producer
        self._gate = gate
        self._app_loop = app_loop

    def pauseProducing(self) -> None:
        self._app_loop.to_loop(self._gate.reactor_paused, True)

    def resumeProducing(self) -> None:
        self._app_loop.to_loop(self._gate.reactor_paused, False)

    def stopProducing(self) -> None:
        self._app_loop.to_loop(self._producer.stopProducing)


class Crossing:
    """Calls made on one thread, run on another in bursts: the first call of a burst asks
    ``schedule`` for one hop to the other thread, and the calls made before that hop runs
    go with it (one wake-up of the other thread for many calls, where each call's own hop
    would cost one). Used by ``LoopTransport`` towards the reactor, and by WSGI's worker
    threads towards the loop (``wsgi_pool.Waker``)."""

    def __init__(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        self._schedule = schedule
        self._lock = threading.Lock()
        self._due: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def call(self, f: Callable[[*Ts], object], *args: *Ts) -> None:
        with self._lock:
            self._due.append((f, args))
            if len(self._due) > 1:
                return  # a hop is on its way and will take this too
        self._schedule(self._run)

    def _run(self) -> None:
        with self._lock:
            due, self._due = self._due, []
        for f, args in due:
            f(*args)


@implementer(IConnectionTransport)
class LoopTransport:
    """On the loop's thread: the reactor's transport, as far as the protocols use one."""

    def __init__(self, transport: IConnectionTransport, app_loop: AppLoop) -> None:
        self._transport = transport
        self._app_loop = app_loop
        self._host = transport.getHost()
        self._peer = transport.getPeer()
        self._to_reactor = Crossing(app_loop.to_reactor)
        self._producer: IPushProducer | None = None
        self._gate = WriteGate(self._pause_producer, self._resume_producer)
        self.disconnecting = False  # set here at once: the reactor's transport learns a hop later
        if INegotiated.providedBy(transport):
            alsoProvides(self, INegotiated)

    @property
    def negotiatedProtocol(self) -> bytes | None:
        """Read across threads: TLS sets it once, before the first bytes cross."""
        return getattr(self._transport, "negotiatedProtocol", None)

    def _cross(self, method: Callable[[*Ts], object], *args: *Ts) -> None:
        self._to_reactor.call(method, *args)

    def _write(self, data: bytes) -> None:
        """On the reactor's thread."""
        self._transport.write(data)
        self._app_loop.to_loop(self._gate.landed, len(data))

    def write(self, data: bytes) -> None:
        if data:
            self._gate.sent(len(data))
            self._cross(self._write, data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._cross(self._transport.loseConnection)

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._cross(self._transport.abortConnection)

    def getHost(self) -> IAddress:
        return self._host

    def getHandle(self) -> Any:
        """Read once the handshake is done (the ``tls`` scope extension): nothing writes it then."""
        return ISystemHandle(self._transport).getHandle()  # TLS's and TCP's transports have one

    def getPeer(self) -> IAddress:
        return self._peer

    def setTcpNoDelay(self, enabled: bool) -> None:
        if hasattr(self._transport, "setTcpNoDelay"):
            self._cross(self._transport.setTcpNoDelay, enabled)

    def pauseProducing(self) -> None:
        self._cross(self._transport.pauseProducing)

    def resumeProducing(self) -> None:
        self._cross(self._transport.resumeProducing)

    def stopProducing(self) -> None:
        self._cross(self._transport.stopProducing)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if not streaming:
            raise ValueError("only a push producer (streaming=True) can be paused across the threads")
        # IConsumer's contract: with streaming=True, ``producer`` is an IPushProducer.
        self._producer = push = cast(IPushProducer, producer)
        self._cross(self._transport.registerProducer, _ProducerOnLoop(push, self._gate, self._app_loop), streaming)

    def unregisterProducer(self) -> None:
        self._producer = None
        self._cross(self._transport.unregisterProducer)

    def _pause_producer(self) -> None:
        if self._producer is not None:
            self._producer.pauseProducing()

    def _resume_producer(self) -> None:
        if self._producer is not None:
            self._producer.resumeProducing()
