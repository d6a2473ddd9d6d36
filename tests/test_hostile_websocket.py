"""WebSockets against clients that misbehave on purpose, over raw loopback sockets: a
ping flood from a client that never reads, registered close codes, and valid messages
followed by a broken frame in the same read."""

from __future__ import annotations

import asyncio
import struct

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from .fuzz import websocket_echo
from .support import TIMEOUT
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
