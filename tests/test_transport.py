"""``SocketTransport``: the Twisted transport of every TCP connection on the asyncio reactor.

The rest of the suite runs HTTP and WebSockets over it; these tests hold it to the parts of
Twisted's transport contract that a plain protocol sees: every byte written arrives, in
order, before the close; producers are paused and resumed; errors end one connection only.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPullProducer, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from hello_asgi.testing import asyncio_test
from hello_asgi.transport import (
    AsyncioPort,
    FastListeningReactor,
    SocketTransport,
    _after,
)

from .support import TIMEOUT, connect, until_closed

CHUNK = b"0123456789abcdef" * 4096  # 64 KiB


@implementer(IPushProducer)
class Recorder(Protocol):
    """A protocol that says through Deferreds what happened to it, and pauses nothing."""

    def __init__(self) -> None:
        self.made: Deferred[None] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()  # with the reason
        self.paused: Deferred[None] = Deferred()
        self.resumed: Deferred[None] = Deferred()
        self.received = b""
        self._awaited: tuple[int, Deferred[None]] | None = None

    def arrived(self, size: int) -> Deferred[None]:
        """Fires once ``size`` bytes in all have been received."""
        self._awaited = size, Deferred()
        self.dataReceived(b"")
        return self._awaited[1]

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self._awaited is not None and len(self.received) >= self._awaited[0]:
            self._awaited[1].callback(None)
            self._awaited = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(reason.value)

    def pauseProducing(self) -> None:
        if not self.paused.called:
            self.paused.callback(None)

    def resumeProducing(self) -> None:
        if not self.resumed.called:
            self.resumed.callback(None)

    def stopProducing(self) -> None:
        pass


@implementer(IPullProducer)
class Pulled:
    """A pull producer: each time it is asked, ``per_ask`` writes of ``piece``; after ``asks``
    times, it unregisters and closes the connection."""

    def __init__(self, transport: SocketTransport, piece: bytes, per_ask: int, asks: int,
                 asked: Callable[[], None]) -> None:
        self.transport = transport
        self.piece = piece
        self.per_ask = per_ask
        self.left = asks
        self.asked = asked

    def resumeProducing(self) -> None:
        self.asked()
        for _ in range(self.per_ask):
            self.transport.write(self.piece)
        self.left -= 1
        if not self.left:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def stopProducing(self) -> None:
        pass


class CountingSocket:
    """A socket whose ``send`` and ``sendmsg`` calls are listed; the rest is the socket's."""

    def __init__(self, sock: socket.socket, calls: list[str]) -> None:
        self._sock, self._calls = sock, calls

    def send(self, data: bytes) -> int:
        self._calls.append("send")
        return self._sock.send(data)

    def sendmsg(self, pieces: list[bytes]) -> int:
        self._calls.append("sendmsg")
        return self._sock.sendmsg(pieces)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def fill(transport: SocketTransport) -> None:
    """Write 4 MiB: far more than the kernel takes while the client reads nothing."""
    for _ in range(64):
        transport.write(CHUNK)


class TransportTests(unittest.TestCase):
    def listen(self, protocol: type[Protocol] = Recorder, interface: str = "127.0.0.1",
               ) -> tuple[AsyncioPort, list[Protocol]]:
        """A port whose connections get ``protocol``; the list fills as they are accepted."""
        built: list[Protocol] = []

        def build() -> Protocol:
            built.append(protocol())
            return built[-1]

        port = FastListeningReactor(reactor, reactor._asyncioEventloop).listenTCP(  # type: ignore[attr-defined]
            0, Factory.forProtocol(build), interface=interface)
        self.addCleanup(port.stopListening)
        return port, built

    async def wait(self, deferred: Deferred) -> object:  # type: ignore[type-arg]
        return await asyncio.wait_for(deferred.asFuture(asyncio.get_running_loop()), TIMEOUT)

    async def accepted(self, port: AsyncioPort, built: list[Protocol]) -> tuple[Recorder, asyncio.StreamReader,
                                                                                 asyncio.StreamWriter]:
        reader, writer = await connect(port.getHost().port)
        self.addCleanup(writer.close)
        while not built:
            await asyncio.sleep(0)  # accepted on the loop's next turn
        protocol = built[-1]
        assert isinstance(protocol, Recorder)
        await self.wait(protocol.made)
        return protocol, reader, writer

    async def connection(self) -> tuple[Recorder, SocketTransport, asyncio.StreamReader, asyncio.StreamWriter]:
        """One connection to a fresh port: its protocol, its transport and the client's ends.
        Both kernel buffers are made small, so that ``fill`` is more than they hold on any
        machine (with Linux's autotuning a client that reads nothing took all 4 MiB)."""
        port, built = self.listen()
        protocol, reader, writer = await self.accepted(port, built)
        transport = protocol.transport
        assert isinstance(transport, SocketTransport)
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        return protocol, transport, reader, writer

    @asyncio_test
    async def test_everything_written_arrives_before_the_close_while_the_producer_is_paused(self) -> None:
        protocol, transport, reader, _ = await self.connection()
        transport.registerProducer(protocol, True)
        fill(transport)
        transport.loseConnection()
        await self.wait(protocol.paused)
        self.assertFalse(protocol.lost.called)  # the unsent bytes hold the connection open
        received = await asyncio.wait_for(reader.read(), TIMEOUT)
        self.assertEqual(received, CHUNK * 64)
        await self.wait(protocol.resumed)
        self.assertIsInstance(await self.wait(protocol.lost), ConnectionDone)

    @asyncio_test
    async def test_a_protocol_that_raises_loses_its_connection_and_no_other(self) -> None:
        class Failing(Recorder):
            def dataReceived(self, data: bytes) -> None:
                if data == b"raise":
                    raise ZeroDivisionError("the protocol's own fault")
                self.transport.write(data)  # type: ignore[union-attr]

        port, built = self.listen(Failing)
        failing, failing_reader, failing_writer = await self.accepted(port, built)
        fine, fine_reader, fine_writer = await self.accepted(port, built)
        failing_writer.write(b"raise")
        self.assertEqual(await until_closed(failing_reader), (b"", True))  # aborted: reset
        await self.wait(failing.lost)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        fine_writer.write(b"echo")
        self.assertEqual(await asyncio.wait_for(fine_reader.readexactly(4), TIMEOUT), b"echo")
        self.assertFalse(fine.lost.called)

    @asyncio_test
    async def test_a_reset_is_a_lost_connection_and_a_close_is_a_done_one(self) -> None:
        port, built = self.listen()
        reset, _, reset_writer = await self.accepted(port, built)
        closed, _, closed_writer = await self.accepted(port, built)
        sock = reset_writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset_writer.close()
        closed_writer.write(b"last words")
        closed_writer.close()
        self.assertIsInstance(await self.wait(reset.lost), ConnectionLost)
        self.assertIsInstance(await self.wait(closed.lost), ConnectionDone)
        self.assertEqual(closed.received, b"last words")

    @asyncio_test
    async def test_half_close_sends_fin_and_reads_on(self) -> None:
        port, built = self.listen()
        protocol, reader, writer = await self.accepted(port, built)
        protocol.transport.write(b"bye")  # type: ignore[union-attr]
        protocol.transport.loseWriteConnection()  # type: ignore[union-attr]
        self.assertEqual(await asyncio.wait_for(reader.read(), TIMEOUT), b"bye")
        writer.write(b"still heard")
        await self.wait(protocol.arrived(11))
        self.assertEqual(protocol.received, b"still heard")
        self.assertFalse(protocol.lost.called)

    @asyncio_test
    async def test_reading_stops_while_paused(self) -> None:
        protocol, transport, _, writer = await self.connection()
        transport.pauseProducing()
        writer.write(b"held")
        await writer.drain()
        # The bytes are in the server's socket: a read now would find them at once.
        server_side = transport.getHandle()
        self.assertEqual(server_side.recv(4, socket.MSG_PEEK), b"held")
        for _ in range(10):
            await asyncio.sleep(0)  # turns of the loop in which a reader would have run
        self.assertEqual(protocol.received, b"")
        transport.resumeProducing()
        await self.wait(protocol.arrived(4))
        self.assertEqual(protocol.received, b"held")

    @asyncio_test
    async def test_addresses_outlive_the_connection(self) -> None:
        port, built = self.listen(interface="0.0.0.0")  # so the host is not the port's address
        protocol, _, writer = await self.accepted(port, built)
        peer = writer.get_extra_info("sockname")
        host = writer.get_extra_info("peername")
        transport = protocol.transport
        assert isinstance(transport, SocketTransport)
        for _ in range(2):  # connected, then closed
            self.assertEqual((transport.getPeer().host, transport.getPeer().port), peer)
            self.assertEqual((transport.getHost().host, transport.getHost().port), host)
            transport.loseConnection()
            await self.wait(protocol.lost)

    @asyncio_test
    async def test_a_connection_the_factory_refuses_is_closed(self) -> None:
        class Refusing(Factory):
            def buildProtocol(self, addr: object) -> None:
                return None

        refusing = FastListeningReactor(reactor, reactor._asyncioEventloop).listenTCP(  # type: ignore[attr-defined]
            0, Refusing(), interface="127.0.0.1")
        self.addCleanup(refusing.stopListening)
        reader, writer = await connect(refusing.getHost().port)
        self.addCleanup(writer.close)
        self.assertEqual(await asyncio.wait_for(reader.read(), TIMEOUT), b"")

    @asyncio_test
    async def test_abort_drops_what_is_unsent_and_resets(self) -> None:
        protocol, transport, reader, _ = await self.connection()
        fill(transport)
        transport.abortConnection()
        self.assertIsInstance(await self.wait(protocol.lost), ConnectionAborted)
        received, reset = await until_closed(reader)
        self.assertTrue(reset)
        self.assertLess(len(received), len(CHUNK) * 64)

    @asyncio_test
    async def test_a_write_just_after_lose_connection_is_sent(self) -> None:
        port, built = self.listen()
        protocol, reader, _ = await self.accepted(port, built)
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        protocol.transport.write(b"last")  # type: ignore[union-attr]
        self.assertEqual(await until_closed(reader), (b"last", False))

    @asyncio_test
    async def test_a_producer_registered_once_lost_is_stopped(self) -> None:
        port, built = self.listen()
        protocol, _, writer = await self.accepted(port, built)
        writer.close()
        await self.wait(protocol.lost)
        stopped: list[bool] = []

        @implementer(IPushProducer)
        class Late:
            def stopProducing(self) -> None:
                stopped.append(True)

        protocol.transport.registerProducer(Late(), True)  # type: ignore[union-attr]
        self.assertEqual(stopped, [True])

    @asyncio_test
    async def test_a_producer_that_raises_on_stop_does_not_keep_connection_lost_from_the_protocol(self) -> None:
        port, built = self.listen()
        protocol, _, writer = await self.accepted(port, built)

        @implementer(IPushProducer)
        class Failing:
            def stopProducing(self) -> None:
                raise ZeroDivisionError("the producer's own fault")

        protocol.transport.registerProducer(Failing(), True)  # type: ignore[union-attr]
        writer.close()
        self.assertIsInstance(await self.wait(protocol.lost), ConnectionDone)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def pulled(self, piece: bytes, per_ask: int, asks: int, asked: Callable[[], None]) -> bytes:
        """What the client reads from a ``Pulled`` producer with these settings."""
        protocol, transport, reader, _ = await self.connection()
        transport.registerProducer(Pulled(transport, piece, per_ask, asks, asked), False)
        received, reset = await until_closed(reader)
        self.assertFalse(reset)
        return received

    @asyncio_test
    async def test_a_pull_producer_is_asked_again_until_it_is_done(self) -> None:
        received = await self.pulled(CHUNK, 1, 100, lambda: None)  # 6.4 MiB: the kernel makes it wait
        self.assertEqual(received, CHUNK * 100)

    @asyncio_test
    async def test_a_pull_producer_is_asked_once_a_turn_however_often_it_writes(self) -> None:
        turns = 0
        asks_at: list[int] = []  # the loop turn of each resumeProducing

        async def count_turns() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        counting = asyncio.ensure_future(count_turns())
        try:
            received = await self.pulled(b"x", 3, 50, lambda: asks_at.append(turns))
        finally:
            counting.cancel()
        self.assertEqual(received, b"x" * 150)
        self.assertEqual(len(asks_at), 50)
        self.assertEqual(len(asks_at), len(set(asks_at)))  # never twice in one turn

    @asyncio_test
    async def test_half_close_waits_for_the_unsent_bytes(self) -> None:
        protocol, transport, reader, writer = await self.connection()
        fill(transport)
        transport.loseWriteConnection()
        self.assertEqual(await asyncio.wait_for(reader.read(), TIMEOUT), CHUNK * 64)
        writer.write(b"still heard")
        await self.wait(protocol.arrived(11))
        self.assertFalse(protocol.lost.called)


    @asyncio_test
    async def test_gathered_pieces_arrive_in_order_when_the_kernel_takes_only_part_of_them(self) -> None:
        # Pieces as HTTP/2 writes them (frame headers, views of app payloads, h2's bytes):
        # the first gathered send fills the kernel's buffers, so what is left of the pieces
        # is kept from the middle of one, and later writes and gathers queue after it.
        _, transport, reader, _ = await self.connection()
        numbered = bytes(range(256)) * 1024
        pieces = [b"head", memoryview(numbered)[3:], bytearray(b"mid"), *[CHUNK] * 40]
        transport.writeSequence(pieces)
        self.assertIsNotNone(transport._unsent)  # the kernel took only a part
        transport.write(b"after")
        transport.writeSequence([b"gathered ", memoryview(b"last")])
        transport.loseConnection()
        received = await asyncio.wait_for(reader.read(), TIMEOUT)
        self.assertEqual(received, b"".join(pieces) + b"after" + b"gathered last")

    async def counted(self) -> tuple[SocketTransport, asyncio.StreamReader, list[str]]:
        """A connection (the client's buffer left large) whose socket's sends are counted."""
        port, built = self.listen()
        protocol, reader, _ = await self.accepted(port, built)
        transport = protocol.transport
        assert isinstance(transport, SocketTransport)
        calls: list[str] = []
        transport._socket = CountingSocket(transport._socket, calls)  # type: ignore[assignment]
        return transport, reader, calls

    @asyncio_test
    async def test_writes_after_a_large_one_leave_together_at_the_turns_end(self) -> None:
        transport, reader, calls = await self.counted()
        transport.write(CHUNK)  # large: it goes now, and holds what follows in this turn
        for number in range(3):
            transport.write(b"%d" % number)
        transport.writeSequence([b"gathered ", memoryview(b"too")])
        self.assertEqual(calls, ["send"])
        await asyncio.sleep(0)  # the turn ends (the release was queued before this)
        self.assertEqual(calls, ["send", "sendmsg"])
        transport.write(b"then straight out")  # small, and the window is closed
        self.assertEqual(calls, ["send", "sendmsg", "send"])
        transport.loseConnection()
        received = await asyncio.wait_for(reader.read(), TIMEOUT)
        self.assertEqual(received, CHUNK + b"012gathered toothen straight out")

    @asyncio_test
    async def test_a_streamed_body_leaves_by_one_send_per_held_max(self) -> None:
        transport, reader, calls = await self.counted()
        for _ in range(20):  # 1.25 MiB of 64 KiB chunks, in one turn
            transport.write(CHUNK)
        self.assertLessEqual(len(calls), 1 + 19 * len(CHUNK) // SocketTransport.HELD_MAX)  # 5, not 20
        self.assertLess(transport._held_size, SocketTransport.HELD_MAX)  # held stays bounded
        transport.loseConnection()  # what is held goes first
        received = await asyncio.wait_for(reader.read(), TIMEOUT)
        self.assertEqual(received, CHUNK * 20)

    @asyncio_test
    async def test_abort_drops_what_is_held(self) -> None:
        transport, reader, calls = await self.counted()
        transport.write(CHUNK)
        transport.write(b"held")
        transport.abortConnection()
        received, reset = await until_closed(reader)
        self.assertTrue(reset)
        self.assertNotIn(b"held", received)
        self.assertEqual(calls, ["send"])

    def test_what_is_left_of_pieces_after_a_partial_send(self) -> None:
        pieces = [b"abc", memoryview(b"defg"), bytearray(b"hi")]
        self.assertEqual([_after(pieces, sent) for sent in (0, 2, 3, 5, 7, 8)],
                         [b"abcdefghi", b"cdefghi", b"defghi", b"fghi", b"hi", b"i"])


class SendFileTests(unittest.TestCase):
    """``SocketTransport.send_file``: ``os.sendfile`` in the transport's order of bytes, with
    its producer and its close."""

    async def connection(self) -> tuple[Recorder, SocketTransport, asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection whose buffers are small both ends, so a client that does not read
        soon leaves the server's writes waiting."""
        built: list[Recorder] = []

        def build() -> Recorder:
            built.append(Recorder())
            return built[-1]

        port = FastListeningReactor(reactor, reactor._asyncioEventloop).listenTCP(  # type: ignore[attr-defined]
            0, Factory.forProtocol(build), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port.getHost().port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=65536)
        self.addCleanup(writer.close)
        while not built:
            await asyncio.sleep(0)  # accepted on the loop's next turn
        protocol = built[-1]
        await asyncio.wait_for(protocol.made.asFuture(asyncio.get_running_loop()), TIMEOUT)
        transport = protocol.transport
        assert isinstance(transport, SocketTransport)
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        return protocol, transport, reader, writer

    def file(self, size: int) -> tuple[object, bytes]:
        content = bytes(range(256)) * (size // 256)
        path = self.mktemp()
        with open(path, "wb") as out:
            out.write(content)
        file = open(path, "rb", buffering=0)
        self.addCleanup(file.close)
        return file, content

    @asyncio_test
    async def test_the_file_goes_after_what_was_written_before_it_and_before_what_is_written_during_it(self) -> None:
        from hello_asgi.transport import SendfileCounter

        protocol, transport, reader, _ = await self.connection()
        file, content = self.file(8 * 1024 * 1024)
        before = SendfileCounter.sent
        for _ in range(16):
            transport.write(CHUNK)  # 1 MiB: more than the kernel takes while the client waits
        self.assertIsNotNone(transport._unsent)
        sending = asyncio.ensure_future(transport.send_file(file, 256, len(content) - 512))
        transport.write(b"after")
        transport.loseConnection()  # waits for the file, and for what was written after it
        received = await asyncio.wait_for(reader.read(), TIMEOUT)
        self.assertEqual(received, CHUNK * 16 + content[256:-256] + b"after")
        self.assertEqual(await sending, len(content) - 512)
        self.assertEqual(SendfileCounter.sent - before, len(content) - 512)
        self.assertIsInstance(await protocol.lost.asFuture(asyncio.get_running_loop()), ConnectionDone)

    @asyncio_test
    async def test_the_producer_is_paused_while_the_file_goes_and_a_short_file_says_so(self) -> None:
        protocol, transport, reader, _ = await self.connection()
        transport.registerProducer(protocol, True)
        file, content = self.file(4 * 1024 * 1024)
        sending = asyncio.ensure_future(transport.send_file(file, 0, len(content) + 1000))
        await asyncio.wait_for(protocol.paused.asFuture(asyncio.get_running_loop()), TIMEOUT)
        self.assertFalse(protocol.resumed.called)
        received = await asyncio.wait_for(reader.readexactly(len(content)), TIMEOUT)
        self.assertEqual(await asyncio.wait_for(sending, TIMEOUT), len(content))  # it ended early
        self.assertEqual(received, content)
        self.assertTrue(protocol.resumed.called)
        self.assertFalse(transport.lost)

    @asyncio_test
    async def test_an_abort_ends_the_file_with_what_was_sent(self) -> None:
        protocol, transport, reader, _ = await self.connection()
        file, content = self.file(16 * 1024 * 1024)
        sending = asyncio.ensure_future(transport.send_file(file, 0, len(content)))
        await reader.readexactly(65536)
        transport.abortConnection()
        sent = await asyncio.wait_for(sending, TIMEOUT)
        self.assertLess(sent, len(content))
        self.assertTrue(transport.lost)
        self.assertIsInstance(await protocol.lost.asFuture(asyncio.get_running_loop()), ConnectionAborted)
