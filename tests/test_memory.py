"""The protocols driven in memory (``tests/memory.py``): no sockets, time on a fake clock.

These run in milliseconds and sit beside the loopback tests, which stay the black-box
truth. They use only the public edge of the server (``buildProtocol``, ``makeConnection``,
``dataReceived``), and real client libraries where one exists (h2, websockets' sans-I/O
client, h11 to read HTTP/1.1 responses).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import Frame as H2Frame, GoAwayFrame
from twisted.trial import unittest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from hello_asgi.testing import asyncio_test
from hello_asgi.timeouts import RESOLUTION

from .memory import MemoryConnection, MemoryServer
from .support import parse_responses, read_body


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the method, path and body it read, or echoes WebSocket text."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": "echo: " + message["text"]})
        return
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    answer = f"{scope['method']} {scope['path']} HTTP/{scope['http_version']} ".encode() + body
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: memory\r\n" + extra + b"\r\n"


async def responses(connection: MemoryConnection, count: int) -> list[tuple[Any, bytes]]:
    """Read ``count`` whole HTTP/1.1 responses (each has a Content-Length) and parse them."""
    data = b""
    for _ in range(count):
        head = await connection.read(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        data += head + await connection.read_exactly(length)
    return parse_responses(data, [b"GET"] * count)


class HTTP11Tests(unittest.TestCase):
    @asyncio_test
    async def test_keep_alive(self) -> None:
        """Two requests, one after the other, on one connection that stays open."""
        server = MemoryServer(self, echo_app)
        connection = server.connect()
        for path in ("/first", "/second"):
            connection.send(get(path))
            [(response, body)] = await responses(connection, 1)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(body, f"GET {path} HTTP/1.1 ".encode())
            self.assertFalse(connection.closed)

    @asyncio_test
    async def test_post_body(self) -> None:
        server = MemoryServer(self, echo_app)
        connection = server.connect()
        connection.send(b"POST /in HTTP/1.1\r\nHost: memory\r\nContent-Length: 5\r\n\r\nhel")
        connection.send(b"lo")
        head = await connection.read(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertEqual(await connection.read(), b"POST /in HTTP/1.1 hello")

    @asyncio_test
    async def test_pipelining(self) -> None:
        """Three requests in one read: three responses, in request order."""
        server = MemoryServer(self, echo_app)
        connection = server.connect()
        connection.send(get("/1") + get("/2") + get("/3"))
        answered = await responses(connection, 3)
        self.assertEqual([body for _, body in answered], [b"GET /1 HTTP/1.1 ", b"GET /2 HTTP/1.1 ", b"GET /3 HTTP/1.1 "])

    @asyncio_test
    async def test_connection_close(self) -> None:
        server = MemoryServer(self, echo_app)
        connection = server.connect()
        connection.send(get("/", b"Connection: close\r\n"))
        data = await connection.until_closed()
        self.assertIn(b"connection: close\r\n", data.lower())
        self.assertTrue(data.endswith(b"GET / HTTP/1.1 "))


def closes_at(test: unittest.TestCase, server: MemoryServer, connection: MemoryConnection, seconds: float) -> None:
    """The connection is still open a tick before ``seconds`` of the fake clock, and closed a tick after."""
    server.advance(seconds - RESOLUTION)
    test.assertFalse(connection.closed)
    server.advance(2 * RESOLUTION)
    test.assertTrue(connection.closed)


class DeadlineTests(unittest.TestCase):
    """Deadlines fire when the fake clock passes them, and not a tick before."""

    @asyncio_test
    async def test_request_head_timeout(self) -> None:
        server = MemoryServer(self, echo_app, request_head_timeout=10.0)
        connection = server.connect()
        connection.send(b"GET / HTTP/1.1\r\nHost: mem")  # a head that never ends
        closes_at(self, server, connection, 10.0)
        self.assertEqual(connection.written(), b"")  # nothing to answer: the head never came

    @asyncio_test
    async def test_nothing_sent(self) -> None:
        """A connection that sends no byte at all has the request head's deadline too."""
        server = MemoryServer(self, echo_app, request_head_timeout=3.0)
        connection = server.connect()
        closes_at(self, server, connection, 3.0)

    @asyncio_test
    async def test_keep_alive_timeout(self) -> None:
        server = MemoryServer(self, echo_app, keep_alive_timeout=5.0, request_head_timeout=60.0)
        connection = server.connect()
        connection.send(get("/"))
        await responses(connection, 1)
        closes_at(self, server, connection, 5.0)

    @asyncio_test
    async def test_body_timeout(self) -> None:
        """A body that stops arriving is answered 408 once ``body_timeout`` passes."""
        server = MemoryServer(self, echo_app, body_timeout=7.0)
        connection = server.connect()
        connection.send(b"POST / HTTP/1.1\r\nHost: memory\r\nContent-Length: 10\r\n\r\nabc")
        server.advance(7.0 - RESOLUTION)
        self.assertFalse(connection.closed)
        server.advance(2 * RESOLUTION)
        data = await connection.read(b"\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)


def h2_client() -> h2.connection.H2Connection:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    return client


async def h2_exchange(connection: MemoryConnection, client: h2.connection.H2Connection,
                      stream_id: int) -> tuple[dict[bytes, bytes], bytes]:
    """Pass bytes both ways until ``stream_id`` ends; its response headers and body."""
    headers: dict[bytes, bytes] = {}
    body = b""
    while True:
        connection.send(client.data_to_send())
        for event in client.receive_data(await connection.read()):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                body += event.data
                client.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                return headers, body


class HTTP2Tests(unittest.TestCase):

    @asyncio_test
    async def test_prior_knowledge(self) -> None:
        """h2c with prior knowledge: two streams, one after the other, on one connection."""
        server = MemoryServer(self, echo_app)
        connection = server.connect()
        client = h2_client()
        for stream_id, path in ((1, b"/one"), (3, b"/two")):
            client.send_headers(stream_id, [(b":method", b"GET"), (b":path", path), (b":scheme", b"http"),
                                            (b":authority", b"memory")], end_stream=True)
            headers, body = await h2_exchange(connection, client, stream_id)
            self.assertEqual(headers[b":status"], b"200")
            self.assertEqual(body, b"GET " + path + b" HTTP/2 ")
        self.assertFalse(connection.closed)

    @asyncio_test
    async def test_idle_timeout(self) -> None:
        """An h2c connection with no stream open closes with GOAWAY after keep-alive."""
        server = MemoryServer(self, echo_app, keep_alive_timeout=4.0)
        connection = server.connect()
        client = h2_client()
        connection.send(client.data_to_send())
        client.receive_data(await connection.read())
        closes_at(self, server, connection, 4.0)
        events = client.receive_data(await connection.read())
        self.assertTrue(any(isinstance(event, h2.events.ConnectionTerminated) for event in events), events)

    @asyncio_test
    async def test_upgrade_from_http11(self) -> None:
        """``Upgrade: h2c``: 101, then the request's answer on stream 1, over HTTP/2."""
        server = MemoryServer(self, echo_app)
        connection = server.connect()
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        settings = client.initiate_upgrade_connection()
        assert settings is not None  # a client's upgrade has its HTTP2-Settings
        connection.send(get("/up", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                                   b"HTTP2-Settings: " + settings + b"\r\n"))
        head = await connection.read(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        headers, body = await h2_exchange(connection, client, 1)
        self.assertEqual(headers[b":status"], b"200")
        self.assertEqual(body, b"GET /up HTTP/2 ")


class WebSocketTests(unittest.TestCase):
    @asyncio_test
    async def test_upgrade_and_echo(self) -> None:
        """websockets' sans-I/O client: the handshake, a text message each way, a close."""
        server = MemoryServer(self, echo_app, ws_per_message_deflate=False)
        connection = server.connect()
        client = ClientProtocol(parse_uri("ws://memory/chat"))
        client.send_request(client.connect())
        connection.send(b"".join(client.data_to_send()))
        client.receive_data(await connection.read(b"\r\n\r\n"))
        [handshake] = client.events_received()
        assert isinstance(handshake, Response)
        self.assertEqual(handshake.status_code, 101)
        client.send_text(b"hello")
        connection.send(b"".join(client.data_to_send()))
        client.receive_data(await connection.read())
        [message] = client.events_received()
        assert isinstance(message, Frame)
        self.assertEqual((message.opcode, message.data), (Opcode.TEXT, b"echo: hello"))
        client.send_close(1000)
        connection.send(b"".join(client.data_to_send()))
        client.receive_data(await connection.until_closed())
        [closing] = client.events_received()
        assert isinstance(closing, Frame)
        self.assertEqual(closing.opcode, Opcode.CLOSE)


class CrossingTests(unittest.TestCase):
    """The protocols over ``threaded.LoopTransport``, the transport they get under a reactor
    that is not asyncio's (``crossing``: here the hops between threads are plain calls)."""

    @asyncio_test
    async def test_http2_reads_on_after_goaway(self) -> None:
        """Once a graceful shutdown sent GOAWAY, an HTTP/2 connection still reads its open
        streams' frames: it asks its transport whether it is closing, which LoopTransport
        must answer (it once had no ``disconnecting``, and the read raised)."""
        release = asyncio.Event()

        async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": b"done"})

        server = MemoryServer(self, slow)
        connection = server.connect(crossing=True)
        client = h2_client()
        client.send_headers(1, [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"),
                                (b":authority", b"memory")], end_stream=True)
        connection.send(client.data_to_send())
        client.receive_data(await connection.read())
        server.factory.shutdown()
        goaway = await connection.read()  # read apart: h2's client takes no frame after a GOAWAY
        self.assertEqual(H2Frame.parse_frame_header(memoryview(goaway[:9]))[0].type, GoAwayFrame.type)
        client.ping(b"12345678")
        connection.send(client.data_to_send())
        events = client.receive_data(await connection.read())
        self.assertTrue(any(isinstance(event, h2.events.PingAckReceived) for event in events), events)
        release.set()
        headers, body = await h2_exchange(connection, client, 1)
        self.assertEqual((headers[b":status"], body), (b"200", b"done"))
        await connection.until_closed()
