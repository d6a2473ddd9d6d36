"""WebSockets over HTTP/2 (RFC 8441), driven by an h2-library client."""

from __future__ import annotations

import json
import struct
from typing import Any

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from .support import H2Client
from .test_websocket import echo_app

CONNECT = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
           (b":path", b"/chat?x=1"), (b":authority", b"example.test"), (b"sec-websocket-version", b"13"),
           (b"sec-websocket-protocol", b"chat")]


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2)."""
    mask = b"\x0f\x1e\x2d\x3c"
    if len(payload) < 126:
        head = bytes([0x80 | opcode, 0x80 | len(payload)])
    else:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", len(payload))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split unmasked server frames into (opcode, payload)."""
    frames = []
    while data:
        length = data[1] & 0x7F
        start = 2
        if length == 126:
            length, start = struct.unpack(">H", data[2:4])[0], 4
        frames.append((data[0] & 0x0F, data[start:start + length]))
        data = data[start + length:]
    return frames


async def open_websocket(port: int) -> tuple[H2Client, int]:
    """An h2 client that waited for the server's SETTINGS, and the stream of its extended CONNECT."""
    client = await H2Client.open(port)
    await pump_until(client, lambda: client.conn.remote_settings.enable_connect_protocol)
    stream_id = client.conn.get_next_available_stream_id()
    client.conn.send_headers(stream_id, CONNECT)
    client.flush()
    return client, stream_id


async def pump_until(client: H2Client, done: Any) -> None:
    for _ in range(50):
        if done():
            return
        await client.pump()
    raise AssertionError(f"the server never answered: {client.headers} {client.bodies} {client.ended} {client.resets}")


class ExtendedConnectTests(unittest.TestCase):
    @asyncio_test
    async def test_websocket_on_a_stream(self) -> None:
        server = await serve(self, echo_app)
        client, stream_id = await open_websocket(server.port)
        await pump_until(client, lambda: stream_id in client.bodies)
        self.assertIn((b":status", b"200"), client.headers[stream_id])
        self.assertIn((b"sec-websocket-protocol", b"chat"), client.headers[stream_id])
        opcode, payload = server_frames(client.bodies.pop(stream_id))[0]
        scope = json.loads(payload)
        self.assertEqual((opcode, scope["http_version"], scope["scheme"], scope["path"], scope["query_string"]),
                         (1, "2", "ws", "/chat", "x=1"))
        self.assertEqual(scope["headers"][0], ["host", "example.test"])
        self.assertFalse(any(name.startswith(":") for name, _ in scope["headers"]))

        client.conn.send_data(stream_id, client_frame(1, "hé".encode()))
        client.flush()
        await pump_until(client, lambda: stream_id in client.bodies)
        self.assertEqual(server_frames(client.bodies.pop(stream_id)), [(1, "hé".encode())])

        client.conn.send_data(stream_id, client_frame(8, struct.pack(">H", 1000)))
        client.flush()
        await pump_until(client, lambda: stream_id in client.ended)
        self.assertEqual(server_frames(client.bodies[stream_id]), [(8, struct.pack(">H", 1000))])

        other = client.request("/")  # the connection still serves requests
        await pump_until(client, lambda: other in client.ended)
        self.assertIn((b":status", b"200"), client.headers[other])

    @asyncio_test
    async def test_other_connects_are_refused(self) -> None:
        server = await serve(self, echo_app)
        client = await H2Client.open(server.port)
        await pump_until(client, lambda: client.conn.remote_settings.enable_connect_protocol)
        plain = client.conn.get_next_available_stream_id()
        client.conn.send_headers(plain, [(b":method", b"CONNECT"), (b":authority", b"elsewhere:443")])
        unknown = client.conn.get_next_available_stream_id()
        client.conn.send_headers(unknown, [(b":method", b"CONNECT"), (b":protocol", b"carrier-pigeon"),
                                           (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"x")])
        client.flush()
        await pump_until(client, lambda: plain in client.ended and unknown in client.ended)
        self.assertIn((b":status", b"405"), client.headers[plain])
        self.assertIn((b":status", b"501"), client.headers[unknown])

    @asyncio_test
    async def test_not_advertised_when_websockets_are_off(self) -> None:
        server = await serve(self, echo_app, websocket=False)
        client = await H2Client.open(server.port)
        await pump_until(client, lambda: client.conn.remote_settings.max_concurrent_streams == 100)
        self.assertEqual(client.conn.remote_settings.enable_connect_protocol, 0)

    @asyncio_test
    async def test_denial_is_an_http2_response(self) -> None:
        async def deny(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "websocket.http.response.start", "status": 403, "headers": [(b"X-Why", b"no")]})
            await send({"type": "websocket.http.response.body", "body": b"go away"})

        server = await serve(self, deny)
        client, stream_id = await open_websocket(server.port)
        await pump_until(client, lambda: stream_id in client.ended)
        self.assertIn((b":status", b"403"), client.headers[stream_id])
        self.assertIn((b"x-why", b"no"), client.headers[stream_id])
        self.assertEqual(client.bodies[stream_id], b"go away")
