"""Twisted protocols on sockets read and written from asyncio's selector: the fast path for
TCP and UNIX-socket listeners.

On the asyncio reactor, Twisted's own transports cost a selector registration per write.
``SocketTransport`` writes straight to the socket, as asyncio's transports do, and is small
enough that ten thousand idle connections cost little. Any Twisted protocol (ours, or TLS
wrapped around ours) runs on it unchanged. ``FastListeningReactor`` hands that path to
Twisted's endpoint parser, so ``tcp:``/``tcp6:``/``unix:`` endpoint strings keep their meaning and
every other endpoint still works through Twisted itself.

``IConnectionTransport`` is the type of what every protocol here is given as its transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
import struct
from collections.abc import Coroutine, Iterable
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IListeningPort,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ISystemHandle,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.lockfile import FilesystemLock
from zope.interface import implementer

from .config import Config

Address = IPv4Address | IPv6Address | UNIXAddress

log = Logger(namespace="hello_asgi.transport")
# A transport's protocol before ``connect`` and after ``connectionLost``: it hears nothing, so
# ``protocol`` is always one, and the transport drops its real protocol (no cycle left).
_NOBODY: IProtocol = TwistedProtocol()
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16  # pieces one sendmsg takes


def _after(pieces: list[bytes], sent: int) -> bytearray:
    """What is left of ``pieces`` once their first ``sent`` bytes are gone, as one buffer."""
    rest = bytearray()
    for piece in pieces:
        if sent >= len(piece):
            sent -= len(piece)
            continue
        rest += memoryview(piece)[sent:]
        sent = 0
    return rest



class IConnectionTransport(ITransport, IConsumer, IPushProducer):
    """What the server's protocols use of their transport, whichever carries them:
    ``SocketTransport``, Twisted's TCP and TLS transports, ``threaded.LoopTransport``, an
    HTTP/2 stream's WebSocket transport. ITransport's writes, closes and addresses,
    IConsumer's producer, IPushProducer's pausing of reads, ``abortConnection`` and
    ``disconnecting``, which all of them have.

    Twisted declares these apart, and ``Protocol.transport`` as an Optional ``ITransport``
    (None until ``makeConnection``). A protocol class declares ``transport:
    IConnectionTransport``: ``makeConnection`` sets it before any other call, so its
    methods use it as it is, with neither a check nor an ignore.
    """

    disconnecting: bool  # loseConnection or abortConnection was called

    def abortConnection() -> None:
        """Close now, dropping what was not sent yet."""


_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, for 0 s: close() sends RST
CLOSE_TIMEOUT = Config.close_timeout  # seconds, for ports made without a Config


def _pushing(producer: IProducer) -> IPushProducer:
    """A producer registered with ``streaming=True``: IConsumer's contract makes it a push one."""
    return cast(IPushProducer, producer)


def twisted_address(sockaddr: Any, family: int) -> Address:
    """A socket address (as ``accept()`` or ``getsockname()`` gives it) as the Twisted address
    object protocols expect."""
    if family == socket.AF_INET6:
        host, port, flowinfo, scope_id = sockaddr
        return IPv6Address("TCP", host, port, flowinfo, scope_id)
    if family == socket.AF_INET:
        return IPv4Address("TCP", *sockaddr)
    return UNIXAddress(sockaddr or None)


class _FileSend:
    """A file on its way out by ``os.sendfile``: what waits for the socket, and what was
    written meanwhile (sent after the file, so nothing lands in its middle)."""

    __slots__ = ("after", "waiter")

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None  # resolved when the socket may take more
        self.after: bytearray | None = None


class SendfileCounter:
    """Bytes every ``SocketTransport`` of this process sent with ``os.sendfile``: how tests
    and benchmarks see that the zero-copy path was taken."""

    sent = 0


@implementer(IConnectionTransport, ITCPTransport, ISystemHandle)
class SocketTransport:
    """One accepted TCP socket, read and written from asyncio's selector, as a Twisted transport.

    It does what asyncio's socket transport does (a write goes straight to the socket; what
    the kernel will not take yet waits, and a streaming producer is paused above
    ``HIGH_WATER`` and resumed at ``LOW_WATER``) in a dozen slots. asyncio's transport, with
    the adapter Twisted protocols needed on top, held 1.2 KiB per idle connection: an
    extra-info dict, address tuples, a weak map entry and two objects with dicts.
    """

    READ_SIZE = 256 * 1024
    HIGH_WATER = 64 * 1024
    LOW_WATER = 16 * 1024
    LARGE = 16 * 1024  # a write from this size on holds the writes after it in its turn of the loop
    HELD_MAX = 256 * 1024  # held bytes sent without waiting for the turn's end

    __slots__ = ("_close_timer", "_file", "_held", "_held_size", "_host", "_lost", "_peer", "_port", "_producer",
                 "_pull_due", "_reading", "_socket", "_streaming_producer", "_unsent", "_write_closed",
                 "_writing_paused", "disconnecting", "protocol")

    def __init__(self, sock: socket.socket, peer: Any, host: Any, port: AsyncioPort) -> None:
        self._socket = sock
        self._peer = peer  # the addresses, kept: a closed socket cannot say them
        self._host = host
        self._port = port
        self._unsent: bytearray | None = None  # what the kernel has not taken yet
        self._held: list[Any] | None = None  # writes held after a large one, until the turn's end
        self._held_size = 0
        self._producer: IProducer | None = None
        self._streaming_producer = True
        self._pull_due = False  # a pull producer's resumeProducing is scheduled
        self._writing_paused = False
        self._reading = False
        self._write_closed = False
        self._lost = False
        self._close_timer: asyncio.TimerHandle | None = None  # aborts a close the peer drags out
        self._file: _FileSend | None = None  # a file being sent (send_file)
        self.disconnecting = False
        self.protocol: IProtocol = _NOBODY

    def connect(self, protocol: IProtocol) -> None:
        """Start reading, and tell ``protocol`` it is connected."""
        self.protocol = protocol
        self.resumeProducing()
        try:
            protocol.makeConnection(self)
        except Exception:
            log.failure("Unhandled error in {protocol!r} when connected", protocol=protocol)
            self.abortConnection()

    # Events from the selector

    def _read(self) -> None:
        try:
            data = self._socket.recv(self.READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._lose(ConnectionLost(str(error)))
            return
        if not data:  # the peer closed: as asyncio does, close once what was written is sent
            self.loseConnection()
            return
        try:
            self.protocol.dataReceived(data)
        except Exception:
            log.failure("Unhandled error in {protocol!r}; connection aborted", protocol=self.protocol)
            self.abortConnection()

    def _flush(self) -> None:
        unsent = self._unsent
        assert unsent is not None
        try:
            sent = self._socket.send(unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._lose(ConnectionLost(str(error)))
            return
        del unsent[:sent]
        if len(unsent) <= self.LOW_WATER and self._writing_paused and self._file is None:
            self._writing_paused = False
            self._tell_producer("resumeProducing")  # it may write, or close: look again after
        if not unsent and not self._lost:
            self._unsent = None
            self._port.loop.remove_writer(self._socket.fileno())
            if self._file is not None:
                self._file_writable()  # the bytes before the file are out: on with the file
            self._close_if_sent()

    def _close_if_sent(self) -> None:
        if self._unsent is not None or self._lost or self._file is not None or self._held is not None:
            return  # _flush (or send_file, or _release) comes back once it is sent
        if self.disconnecting:
            self._lose(ConnectionDone())
        elif self._write_closed:
            self._shutdown_write()

    # ITransport

    def write(self, data: bytes) -> None:
        if self._lost or self._write_closed or not data:
            return
        if self._file is not None:  # after the file, not before it or in its middle
            if self._file.after is None:
                self._file.after = bytearray()
            self._file.after += data
            return
        if self._held is not None:
            self._hold(data)
            return
        unsent = self._unsent
        if unsent is None:
            if len(data) >= self.LARGE:  # the writes after it in this turn are held, then sent together
                self._held = []
                self._port.loop.call_soon(self._release)
            try:
                sent = self._socket.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                self._lose(ConnectionLost(str(error)))
                return
            if sent < len(data):
                self._keep(bytearray(memoryview(data)[sent:]))
        else:
            unsent += data
            self._check_unsent(unsent)
        if self._producer is not None and not self._streaming_producer:
            self._schedule_pull()

    def _hold(self, data: Any) -> None:
        """Hold a write made after a large one in the same turn: a streamed body's chunks then
        leave by one ``sendmsg`` a turn (or a ``HELD_MAX``), not one system call each."""
        held = self._held
        assert held is not None
        held.append(data)
        self._held_size += len(data)
        if self._held_size >= self.HELD_MAX:
            self._send_held()
            if not self._lost:
                self._held = []  # still this turn: hold on
        if self._producer is not None and not self._streaming_producer:
            self._schedule_pull()

    def _release(self) -> None:
        """The turn is over: what was held goes now; writes go straight out again."""
        if self._held is None:
            return
        self._send_held()
        self._held = None  # (a joined write in _send_held may have opened a window: the turn is over)
        if self._unsent is None:
            self._close_if_sent()  # a close asked for meanwhile waited for these bytes

    def _send_held(self) -> None:
        held, self._held, self._held_size = self._held, None, 0  # (None: the sending below writes through)
        if held and not self._lost:
            self.writeSequence(held)

    def _keep(self, unsent: bytearray) -> None:
        """Hold what the kernel did not take, and send it as the socket becomes writable."""
        self._unsent = unsent
        self._port.loop.add_writer(self._socket.fileno(), self._flush)
        self._check_unsent(unsent)

    def _check_unsent(self, unsent: bytearray) -> None:
        if len(unsent) > self.HIGH_WATER and not self._writing_paused:
            self._writing_paused = True
            if self._producer is not None and self._streaming_producer:
                _pushing(self._producer).pauseProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """``write`` of the pieces joined, but gathered by one ``sendmsg`` when the socket
        takes them now, not joined first: an HTTP/2 DATA frame's payload is not copied."""
        pieces = list(data)
        if self._held is not None:
            for piece in pieces:
                self._hold(piece)
            return
        if self._unsent is not None or self._file is not None or self._lost or self._write_closed \
                or len(pieces) > _IOV_MAX:
            self.write(b"".join(pieces))
            return
        try:
            sent = self._socket.sendmsg(pieces)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self._lose(ConnectionLost(str(error)))
            return
        if sent < sum(map(len, pieces)):
            self._keep(_after(pieces, sent))
        if self._producer is not None and not self._streaming_producer:
            self._schedule_pull()

    def send_file(self, file: Any, offset: int, count: int) -> Coroutine[Any, Any, int]:
        """Send ``count`` bytes of ``file`` from ``offset`` with ``os.sendfile``, after what
        was written before; the bytes sent (fewer: the file ended early, or the connection
        is gone: see ``lost``).

        The kernel copies from the page cache to the socket; nothing is held here. The
        socket is offered more only when it is writable, so a client that stops reading
        stops the file, and the loop serves other connections between calls. While the file
        goes, the producer is paused, as above ``HIGH_WATER``; a ``loseConnection`` waits for
        the file, as it does for written bytes. The file's place is taken at this call: what
        is written after it goes after the file. Await what it returns.
        """
        if self._file is not None:
            raise RuntimeError("a file is being sent on this connection already")
        self._release()  # what was written before the file goes before it
        if self._lost or self._write_closed:
            count = 0
        self._file = _FileSend()
        if not self._writing_paused and not self._lost:
            self._writing_paused = True
            if self._producer is not None and self._streaming_producer:
                self._tell_producer("pauseProducing")
        return self._sending_file(file, offset, count)

    async def _sending_file(self, file: Any, offset: int, count: int) -> int:
        sent = 0
        try:
            while sent < count and not self._lost:
                if self._unsent is not None:  # the bytes before the file go first
                    await self._file_wait(writer=False)
                    continue
                try:
                    size = os.sendfile(self._socket.fileno(), file.fileno(), offset + sent, min(count - sent, 1 << 30))
                except (BlockingIOError, InterruptedError):
                    await self._file_wait(writer=True)
                    continue
                except OSError as error:
                    self._lose(ConnectionLost(str(error)))
                    break
                if not size:
                    break  # the file is shorter than count
                sent += size
                SendfileCounter.sent += size
                if sent < count:
                    await self._file_wait(writer=True)  # let the loop serve others; back when writable
        finally:
            self._file_done()
        return sent

    @property
    def lost(self) -> bool:
        """Whether the connection is gone (what ``send_file`` sending less may mean)."""
        return self._lost

    async def _file_wait(self, writer: bool) -> None:
        file = self._file
        assert file is not None
        file.waiter = self._port.loop.create_future()
        if writer:
            self._port.loop.add_writer(self._socket.fileno(), self._file_writable)
        await file.waiter

    def _file_writable(self) -> None:
        file = self._file
        if file is None or file.waiter is None:
            return
        if self._unsent is None and not self._lost:
            self._port.loop.remove_writer(self._socket.fileno())
        waiter, file.waiter = file.waiter, None
        if not waiter.done():
            waiter.set_result(None)

    def _file_done(self) -> None:
        """The file is sent (or given up): what was written meanwhile goes, the producer may
        resume, and a close that waited may happen."""
        file, self._file = self._file, None
        if file is None:
            return
        if file.waiter is not None and not self._lost and self._unsent is None:
            self._port.loop.remove_writer(self._socket.fileno())
        if file.after:
            self.write(bytes(file.after))
        if self._unsent is None and self._writing_paused and not self._lost:
            self._writing_paused = False
            self._tell_producer("resumeProducing")
        if not self._lost:
            self._close_if_sent()

    def loseConnection(self) -> None:
        """Close once everything written has been sent, this turn's writes too (as Twisted does).

        Whatever the peer does, the connection is gone within ``close_timeout`` of this
        call: a peer that does not read the last bytes has its connection aborted then,
        rather than holding it (and its slot under the connection limit) for good.
        """
        if self.disconnecting or self._lost:
            return
        self._release()
        self.disconnecting = True
        self.pauseProducing()
        loop = self._port.loop
        self._close_timer = loop.call_later(self._port.close_timeout, self.abortConnection)
        if self._unsent is None:
            loop.call_soon(self._close_if_sent)

    def abortConnection(self) -> None:
        """Close now with a reset, dropping what has not been sent, as Twisted does."""
        self.disconnecting = True
        self._lose(ConnectionAborted())

    def _lose(self, reason: Exception) -> None:
        if self._lost:
            return
        self._lost = True
        self._held = None
        self.pauseProducing()
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._unsent is not None or (self._file is not None and self._file.waiter is not None):
            self._unsent = None
            self._port.loop.remove_writer(self._socket.fileno())
        if self._file is not None and self._file.waiter is not None:
            waiter, self._file.waiter = self._file.waiter, None
            if not waiter.done():
                waiter.set_result(None)  # send_file sees the connection lost
        # Later, as Twisted does: the protocol is not told it is gone in the middle of a call.
        self._port.loop.call_soon(self._connection_lost, reason)

    def _connection_lost(self, reason: Exception) -> None:
        if isinstance(reason, ConnectionAborted):  # a reset, so a cut response is not taken as whole
            with contextlib.suppress(OSError):  # the peer's reset may have come first
                self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self._socket.close()
        if self._producer is not None:
            self._tell_producer("stopProducing")
            self._producer = None
        protocol, self.protocol = self.protocol, _NOBODY  # no cycle left for the collector to find
        try:
            protocol.connectionLost(Failure(reason))
        except Exception:
            log.failure("Unhandled error in {protocol!r} when disconnected", protocol=protocol)

    # Made on each call, as Twisted's own TCP transport does: an idle connection then holds
    # only address tuples (its host's shared with every connection to that address).

    # ITCPTransport's addresses are IPv4 or IPv6 ones; this transport serves UNIX sockets too.

    def getPeer(self) -> Address:  # type: ignore[override]  # a UNIXAddress on a UNIX socket
        return twisted_address(self._peer, self._socket.family)

    def getHost(self) -> Address:  # type: ignore[override]  # a UNIXAddress on a UNIX socket
        return twisted_address(self._host, self._socket.family)

    def getHandle(self) -> socket.socket:
        return self._socket

    # ITCPTransport

    def loseWriteConnection(self) -> None:
        """Send FIN once everything written has been sent; read on."""
        if self._write_closed or self._lost:
            return
        self._release()
        self._write_closed = True
        if self._unsent is None and self._file is None:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_WR)
        except OSError as error:
            self._lose(ConnectionLost(str(error)))

    # On a UNIX socket there is no Nagle to turn off: as Twisted's UNIX transport does, say
    # so and ignore the call (twisted.web's HTTPChannel makes it on every connection).

    def getTcpNoDelay(self) -> bool:
        if self._socket.family == socket.AF_UNIX:
            return False
        return bool(self._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def setTcpNoDelay(self, enabled: bool) -> None:
        if self._socket.family != socket.AF_UNIX:
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))

    def getTcpKeepAlive(self) -> bool:
        return bool(self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(enabled))

    # IConsumer: the protocol's producer is paused while the unsent bytes are many

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError(f"cannot register {producer!r}: {self._producer!r} is registered")
        if self._lost:
            producer.stopProducing()  # as Twisted does: there is nothing left to produce for
            return
        self._producer = producer
        self._streaming_producer = streaming
        if streaming and self._writing_paused:
            _pushing(producer).pauseProducing()
        elif not streaming:
            self._schedule_pull()

    def unregisterProducer(self) -> None:
        self._producer = None

    def _schedule_pull(self) -> None:
        if not self._pull_due:
            self._pull_due = True
            self._port.loop.call_soon(self._pull)

    def _pull(self) -> None:
        """Ask a pull producer for more: once per turn at most, however many writes it made."""
        self._pull_due = False
        if not self._streaming_producer and not self._writing_paused:
            self._tell_producer("resumeProducing")

    def _tell_producer(self, call: str) -> None:
        """Call the producer from the loop; its error is logged and aborts the connection."""
        producer = self._producer
        if producer is None:
            return
        try:
            getattr(producer, call)()
        except Exception:
            log.failure("Unhandled error in {producer!r}.{call}(); connection aborted", producer=producer, call=call)
            self.abortConnection()

    # IPushProducer: the protocol pauses reading from the socket

    def pauseProducing(self) -> None:
        if self._reading:
            self._reading = False
            self._port.loop.remove_reader(self._socket.fileno())

    def resumeProducing(self) -> None:
        if not self._reading and not self.disconnecting and not self._lost:
            self._reading = True
            self._port.loop.add_reader(self._socket.fileno(), self._read)

    def stopProducing(self) -> None:
        self.loseConnection()


@implementer(IListeningPort)
class AsyncioPort:
    """A listening socket whose connections get a ``SocketTransport``, as Twisted's ``IListeningPort``.

    It accepts by itself rather than through ``asyncio.Server``: out of file descriptors
    (EMFILE), Python 3.11's server schedules a retry for every failed accept in a batch,
    and the retries multiply until the loop spins. This one stops accepting once, for a
    second, and says so in the log once.
    """

    ACCEPTS_PER_TURN = 64  # then let the loop serve the connections it has
    RETRY_AFTER = 1.0  # seconds without accepting, once the process is out of descriptors

    def __init__(self, sock: socket.socket, factory: IProtocolFactory, loop: asyncio.AbstractEventLoop,
                 path: str | None = None, lock: FilesystemLock | None = None,
                 close_timeout: float = CLOSE_TIMEOUT) -> None:
        sock.setblocking(False)
        self.close_timeout = close_timeout  # seconds a connection's close may take before it is aborted
        self._socket = sock
        self._factory = factory
        self.loop = loop
        self._tcp = sock.family != socket.AF_UNIX
        self._path = path  # the UNIX socket's file, removed once the port stops, as Twisted does
        self._lock = lock  # and its lock file, released then
        self._listening = False
        self._retry: asyncio.TimerHandle | None = None
        self._local_addresses: dict[Any, Any] = {}

    def startListening(self) -> None:
        self._factory.doStart()
        self._listening = True
        self.loop.add_reader(self._socket.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(self.ACCEPTS_PER_TURN):
            try:
                connection, address = self._socket.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                log.warn("Cannot accept connections ({error}); trying again in {delay} s",
                         error=os.strerror(error.errno), delay=self.RETRY_AFTER)
                self.loop.remove_reader(self._socket.fileno())
                self._retry = self.loop.call_later(self.RETRY_AFTER, self._resume)
                return
            connection.setblocking(False)
            if self._tcp:
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = SocketTransport(connection, address, self._local(connection), self)
            try:
                protocol = self._factory.buildProtocol(transport.getPeer())
            except Exception:
                log.failure("Unhandled error in {factory!r} building a protocol", factory=self._factory)
                protocol = None
            if protocol is None:
                connection.close()
            else:
                transport.connect(protocol)

    def _local(self, connection: socket.socket) -> Any:
        """The connection's local address, one tuple shared by all connections to it."""
        address = connection.getsockname()
        return self._local_addresses.setdefault(address, address)

    def _resume(self) -> None:
        self._retry = None
        if self._listening:
            self.loop.add_reader(self._socket.fileno(), self._accept)

    def stopListening(self) -> Deferred[None]:
        if not self._listening:
            return succeed(None)
        self._listening = False
        if self._retry is not None:
            self._retry.cancel()
        self.loop.remove_reader(self._socket.fileno())
        self._socket.close()
        try:  # a file or lock someone else removed or took must not stop the shutdown here
            if self._path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path)
            if self._lock is not None:
                self._lock.unlock()
        except (OSError, ValueError) as error:
            log.warn("Could not clean up after {path}: {error}", path=self._path, error=error)
        self._factory.doStop()
        return succeed(None)

    loseConnection = stopListening

    def getHost(self) -> Address:
        return twisted_address(self._socket.getsockname(), self._socket.family)


class FastListeningReactor:
    """The reactor, but ``listenTCP`` and ``listenUNIX`` serve connections on ``SocketTransport``.

    Give it to ``serverFromString`` in place of the reactor: Twisted parses the endpoint
    string as usual, and TCP and UNIX listeners come out fast.
    """

    def __init__(self, reactor: Any, loop: asyncio.AbstractEventLoop, close_timeout: float = CLOSE_TIMEOUT) -> None:
        self._reactor = reactor
        self._loop = loop
        self._close_timeout = close_timeout

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
        except OSError as error:
            sock.close()
            raise CannotListenError(interface, port, error) from error
        return self._serve(sock, factory)

    def listenUNIX(self, address: str | bytes, factory: IProtocolFactory, backlog: int = 50, mode: int = 0o666,
                   wantPID: int = 0) -> AsyncioPort:
        """A UNIX socket (behind nginx, say), served as TCP ones are.

        As Twisted's port does: the file gets ``mode`` and is removed when the port stops;
        with ``wantPID`` (the endpoint's ``lockfile=1``, its default) a lock file beside it
        says which process listens, and a socket file left by a dead one is removed first.
        """
        address = os.fsdecode(address)
        in_filesystem = address[:1] != "\0"  # not Linux's abstract namespace
        lock = None
        if wantPID and in_filesystem:
            lock = FilesystemLock(f"{address}.lock")
            if not lock.lock():
                raise CannotListenError(None, address, "another process listens (its lock file is held)")
            if not lock.clean:
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(os.stat(address).st_mode):  # never a file mistyped as the path
                        os.remove(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound = False
        try:
            sock.bind(address)
            bound = in_filesystem
            if in_filesystem:
                os.chmod(address, mode)
            sock.listen(backlog)
        except OSError as error:
            sock.close()
            if bound:  # not left to make the next start fail
                os.unlink(address)
            if lock is not None:
                lock.unlock()
            raise CannotListenError(None, address, error) from error
        return self._serve(sock, factory, path=address if in_filesystem else None, lock=lock)

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: IProtocolFactory) -> Any:
        """An inherited listening socket (systemd's, a supervisor's), served the fast way too.
        As Twisted's does, it works on a duplicate and leaves ``fileDescriptor`` open; unlike
        Twisted's, it leaves a UNIX socket's file alone when it stops, since whoever made the
        socket owns the file (a worker stopping must not take it from the supervisor)."""
        if addressFamily not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            return self._reactor.adoptStreamPort(fileDescriptor, addressFamily, factory)
        return self._serve(socket.socket(addressFamily, socket.SOCK_STREAM, fileno=os.dup(fileDescriptor)), factory)

    def _serve(self, sock: socket.socket, factory: IProtocolFactory, path: str | None = None,
               lock: FilesystemLock | None = None) -> AsyncioPort:
        listening = AsyncioPort(sock, factory, self._loop, path=path, lock=lock, close_timeout=self._close_timeout)
        listening.startListening()
        return listening

