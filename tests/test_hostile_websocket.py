"""WebSockets against clients that misbehave on purpose, over raw loopback sockets: a
ping flood from a client that never reads, registered close codes, and valid messages
followed by a broken frame in the same read."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import time
import tracemalloc
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest
from websockets.asyncio.client import connect

from hello_asgi.testing import asyncio_test, serve

from .fuzz import websocket_echo
from .support import TIMEOUT
from .test_cli import TWIST, _Server, free_port
from .test_websocket import HANDSHAKE, RecordingApp
from .test_websocket_frames import client_frame

CLOSE, PING, PONG = 0x8, 0x9, 0xA


def close_frame(code: int) -> bytes:
    return client_frame(struct.pack("!H", code), 0x88)


def server_frame(data: bytes) -> tuple[int, bytes, int] | None:
    """The first whole frame in ``data`` from the server: opcode, payload, bytes it took."""
    if len(data) < 2:
        return None
    assert not data[1] & 0x80, "a server frame is never masked"
    size, start = data[1] & 0x7F, 2
    if size == 126:
        size, start = int.from_bytes(data[2:4], "big"), 4
    elif size == 127:
        size, start = int.from_bytes(data[2:10], "big"), 10
    if len(data) < start + size:
        return None
    return data[0] & 0x0F, data[start : start + size], start + size


class RawWebSocket:
    """A client on a raw socket, so that it can send what no library would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._unread = b""

    @classmethod
    async def open(cls, port: int) -> RawWebSocket:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        writer.write(HANDSHAKE + b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        """The server's next frame: its opcode and payload."""
        while (parsed := server_frame(self._unread)) is None:
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
            except ConnectionResetError:  # after a close frame, the server may reset
                chunk = b""
            if not chunk:
                raise AssertionError(f"the connection ended inside a frame: {self._unread!r}")
            self._unread += chunk
        opcode, payload, taken = parsed
        self._unread = self._unread[taken:]
        return opcode, payload

    async def frames_until_close(self) -> tuple[list[tuple[int, bytes]], int | None]:
        """The frames before the server's close frame, and that frame's code (``None`` for none)."""
        frames = []
        while (frame := await self.frame())[0] != CLOSE:
            frames.append(frame)
        payload = frame[1]
        return frames, struct.unpack("!H", payload[:2])[0] if payload else None

    def close(self) -> None:
        self.writer.close()


class CloseCodeTests(unittest.TestCase):
    """RFC 6455 section 7.4 and the IANA registry: which codes a peer may close with."""

    async def _close_with(self, code: int) -> tuple[int | None, dict[str, object]]:
        """The server's answer to a close frame with ``code``, and the disconnect the app saw."""
        app = RecordingApp()
        server = await serve(self, app)
        client = await RawWebSocket.open(server.port)
        client.writer.write(close_frame(code))
        frames, answer = await client.frames_until_close()
        client.close()
        self.assertEqual(frames, [])
        await asyncio.wait_for(asyncio.shield(app.done), TIMEOUT)  # type: ignore[arg-type]
        return answer, app.received[-1]

    @asyncio_test
    async def test_registered_codes_close_normally(self) -> None:
        for code in (1000, 1001, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999):
            answer, disconnect = await self._close_with(code)
            self.assertEqual(answer, 1000, f"close code {code}")
            self.assertEqual(disconnect, {"type": "websocket.disconnect", "code": code, "reason": ""})

    @asyncio_test
    async def test_codes_never_sent_on_the_wire_are_a_protocol_error(self) -> None:
        for code in (999, 1004, 1005, 1006, 1015, 1016, 2999, 5000):
            answer, _ = await self._close_with(code)
            self.assertEqual(answer, 1002, f"close code {code}")


class ValidThenBrokenTests(unittest.TestCase):
    """A valid message, then a broken frame in the same read: the app gets the message and
    answers it, and only then does the connection fail (Autobahn|Testsuite 3.2-3.4,
    4.1.3-4.1.5, 4.2.3-4.2.5 and 5.15, which an app answering at once passes strictly)."""

    async def _answers(self, data: bytes) -> tuple[list[tuple[int, bytes]], int | None]:
        """What an echo app's server sends back for ``data``, written at once, up to its close."""
        server = await serve(self, websocket_echo, ws_per_message_deflate=False)
        client = await RawWebSocket.open(server.port)
        client.writer.write(data)
        try:
            return await client.frames_until_close()
        finally:
            client.close()

    @asyncio_test
    async def test_the_message_before_a_bad_frame_is_echoed_then_1002(self) -> None:
        hello = client_frame(b"hello")
        bad_frames = {
            "RSV 2": client_frame(b"x", 0x81 | 0x20),
            "RSV 7 on a ping": client_frame(b"x", 0x89 | 0x70),
            "reserved data opcode 5": client_frame(b"x", 0x85),
            "reserved control opcode 11": client_frame(b"x", 0x8B),
            "continuation outside a message": client_frame(b"x", 0x80),
            "unmasked": b"\x81\x01x",
        }
        for name, bad in bad_frames.items():
            frames, code = await self._answers(hello + bad + client_frame(b"ping!", 0x89))
            self.assertEqual((frames, code), ([(0x1, b"hello")], 1002), name)

    @asyncio_test
    async def test_fragments_then_a_stray_continuation(self) -> None:
        # 5.15: a message in two fragments, a continuation with nothing to continue, a message
        data = (client_frame(b"frag1", 0x01) + client_frame(b"frag2", 0x80)
                + client_frame(b"frag3", 0x00) + client_frame(b"frag4", 0x80))
        self.assertEqual(await self._answers(data), ([(0x1, b"frag1frag2")], 1002))

    @asyncio_test
    async def test_messages_before_invalid_utf_8_are_echoed_then_1007(self) -> None:
        data = client_frame(b"one") + client_frame(b"\xff\xfe", 0x82) + client_frame(b"bad \xc3\x28")
        self.assertEqual(await self._answers(data), ([(0x1, b"one"), (0x2, b"\xff\xfe")], 1007))

    @asyncio_test
    async def test_a_bad_frame_alone_still_fails_at_once(self) -> None:
        self.assertEqual(await self._answers(client_frame(b"x", 0x85)), ([], 1002))


class CompanionThreadTests(unittest.TestCase):
    """Under a reactor that is not asyncio's, the protocols run on the companion loop and
    their timers are ``bridge.LoopClock``'s: the wait for an app's answers before a failure
    asks its timer whether it is still active, which a loop timer must answer too."""

    @asyncio_test
    async def test_the_message_before_a_bad_frame_is_echoed_then_1002_on_epoll(self) -> None:
        port = free_port()
        server = _Server()
        # (trial runs in _trial_temp: the app is found from the checkout, as a non-editable install needs)
        args = [*TWIST, "--log-format=text", "--reactor=epoll", "hello-asgi", "--app", "tests.fuzz:websocket_echo",
                "--app-dir", str(Path(__file__).resolve().parent.parent),
                "--no-ws-per-message-deflate", "--timeout-graceful-shutdown", "2", "--port", str(port)]
        process = reactor.spawnProcess(server, TWIST[0], args, env=os.environ)
        loop = asyncio.get_running_loop()
        try:
            for _ in range(400):
                self.assertFalse(server.ended.called, server.output)  # it did not start
                try:
                    client = await RawWebSocket.open(port)
                    break
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)  # the process is still starting
            client.writer.write(client_frame(b"hello") + client_frame(b"x", 0x85) + client_frame(b"ping!", 0x89))
            try:
                self.assertEqual(await client.frames_until_close(), ([(0x1, b"hello")], 1002))
            finally:
                client.close()
        finally:
            if not server.ended.called:  # (an early end is reported below, with its output)
                process.signalProcess(signal.SIGTERM)
            code, killed_by = await asyncio.wait_for(server.ended.asFuture(loop), 30)
        self.assertEqual((code, killed_by), (0, None), server.output)
        self.assertNotIn(b"Traceback", server.output)


class AnswerThenFailTests(unittest.TestCase):
    """Where the app does not wait for its next message after the valid one, the failure
    still comes: when the app closes, or after a bound."""

    async def _after_one_message(self, then: Any) -> tuple[list[tuple[int, bytes]], int | None, float]:
        """An app that takes one message and does ``then(send)``; a client that sends a valid
        message and a broken frame at once: the frames it gets, the close code, the time."""

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await receive()
            await then(send)

        server = await serve(self, app)
        client = await RawWebSocket.open(server.port)
        started = time.monotonic()
        client.writer.write(client_frame(b"hello") + client_frame(b"x", 0x85))
        try:
            frames, code = await client.frames_until_close()
        finally:
            client.close()
        return frames, code, time.monotonic() - started

    @asyncio_test
    async def test_an_app_that_never_asks_again_sees_the_failure_after_the_bound(self) -> None:
        busy = asyncio.Event()
        self.addCleanup(busy.set)  # the app ends with the test
        frames, code, took = await self._after_one_message(lambda send: busy.wait())
        self.assertEqual((frames, code), ([], 1002))
        self.assertGreater(took, 4.5)  # closeHandshakeTimeout, 5 s

    @asyncio_test
    async def test_with_nothing_to_answer_a_busy_app_does_not_delay_the_failure(self) -> None:
        busy = asyncio.Event()
        self.addCleanup(busy.set)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await busy.wait()  # and never asks for a message

        server = await serve(self, app)
        client = await RawWebSocket.open(server.port)
        started = time.monotonic()
        client.writer.write(client_frame(b"x", 0x85))
        try:
            self.assertEqual(await client.frames_until_close(), ([], 1002))
        finally:
            client.close()
        self.assertLess(time.monotonic() - started, 4)

    @asyncio_test
    async def test_an_app_that_closes_closes_with_its_own_code(self) -> None:
        async def close(send: Any) -> None:
            await send({"type": "websocket.close", "code": 4001})

        frames, code, took = await self._after_one_message(close)
        self.assertEqual((frames, code), ([], 4001))
        self.assertLess(took, 4)


def numbered_ping(number: int) -> bytes:
    """A 106-byte ping whose payload starts with ``number`` (masked with a zero key: quick)."""
    return b"\x89\xe4\x00\x00\x00\x00" + number.to_bytes(8, "big") + b"p" * 92


class PingFloodTests(unittest.TestCase):
    """RFC 6455 section 5.5.3 lets an endpoint answer only the latest of many pings: a client
    that pings without reading the pongs costs the server a bounded buffer, not a pong each."""

    PINGS = 100_000
    BATCH = 1000

    async def _flood(self, client: RawWebSocket) -> int:
        """Ping as fast as the server reads, reading nothing; the pings written before the
        server stopped reading (all of them, if it never did)."""
        for sent in range(0, self.PINGS, self.BATCH):
            client.writer.write(b"".join(numbered_ping(sent + i) for i in range(self.BATCH)))
            try:
                await asyncio.wait_for(client.writer.drain(), 1)
            except asyncio.TimeoutError:
                return sent + self.BATCH  # the server stopped reading: this batch waits in the client
        return self.PINGS

    @asyncio_test
    async def test_a_ping_flood_that_never_reads_costs_a_bounded_buffer(self) -> None:
        server = await serve(self, websocket_echo, ws_per_message_deflate=False)
        flooder = await RawWebSocket.open(server.port)
        self.addCleanup(flooder.close)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        started = time.monotonic()
        sent = await self._flood(flooder)
        grown = tracemalloc.get_traced_memory()[1] - before  # the peak, during the flood
        tracemalloc.stop()
        print(f"\n{sent} pings written in {time.monotonic() - started:.1f} s, {sent * 102} bytes of pongs owed; "
              f"memory grew by {grown} bytes at its peak")
        self.assertLess(grown, 2 * 1024 * 1024)  # 6.4 MB before, with pongs owed for 10 MB

        other = await RawWebSocket.open(server.port)  # another client is served meanwhile
        other.writer.write(client_frame(b"still there?"))
        self.assertEqual(await other.frame(), (0x1, b"still there?"))
        other.close()

        # Reading at last, the flooder gets pongs in order, the last ping's among them.
        answered = [-1]
        while answered[-1] != sent - 1:
            opcode, payload = await flooder.frame()
            self.assertEqual(opcode, PONG)
            answered.append(int.from_bytes(payload[:8], "big"))
            self.assertGreater(answered[-1], answered[-2])
        print(f"{len(answered) - 1} pongs for {sent} pings")
        self.assertLess(len(answered) - 1, sent)

    @asyncio_test
    async def test_a_client_that_sends_while_it_does_not_read_is_still_read(self) -> None:
        """Only pings stop the reading while the client does not read: a client busy sending
        data is read on (within ``ws_max_queue``), or a client that reads only once it has
        sent would wait for the server as the server waits for it."""
        received = 0

        async def both_ways(scope: Any, receive: Any, send: Any) -> None:
            nonlocal received
            await receive()
            await send({"type": "websocket.accept"})

            async def push() -> None:
                for _ in range(32):
                    await send({"type": "websocket.send", "bytes": b"s" * 1048576})

            pushing = asyncio.ensure_future(push())
            while (await receive())["type"] == "websocket.receive":
                received += 1
            pushing.cancel()

        server = await serve(self, both_ways, ws_per_message_deflate=False)
        async with connect(f"ws://127.0.0.1:{server.port}/", compression=None, max_size=None, max_queue=1) as ws:
            async def upload() -> None:
                for _ in range(32):
                    await ws.send(b"c" * 1048576)

            await asyncio.wait_for(upload(), TIMEOUT)  # 32 MiB, more than socket buffers hold
            for _ in range(32):
                self.assertEqual(len(await asyncio.wait_for(ws.recv(), TIMEOUT)), 1048576)
        self.assertEqual(received, 32)
