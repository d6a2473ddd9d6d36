"""Chaos (issue 7): apps that never answer, or stop half way, and the server goes on."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve
from hello_asgi.tls import development_certificate

from .support import H2Client, exchange, hello_app, parse_responses


class Stuck:
    """An app that does not finish while its client waits: before its response, or
    (``midway``) after its first chunk."""

    def __init__(self) -> None:
        self.cancelled = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/fine":
            await hello_app(scope, receive, send)
            return
        try:
            if scope["path"] == "/midway":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"half", "more_body": True})
            while (await receive())["type"] != "http.disconnect":  # until the client leaves
                pass
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class RequestTimeoutTests(unittest.TestCase):
    @asyncio_test
    async def test_an_app_that_never_answers_gets_a_504_and_is_cancelled(self) -> None:
        app = Stuck()
        server = await serve(self, app, request_timeout=0.2)
        data = await exchange(server.port, b"GET /never HTTP/1.1\r\nhost: x\r\n\r\n")
        [(response, body)] = parse_responses(data)
        self.assertEqual((response.status_code, body), (504, b"Gateway Timeout"))
        self.assertEqual(app.cancelled, 1)
        fine = await exchange(server.port, b"GET /fine HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        self.assertEqual(parse_responses(fine)[0][1], b"hello /fine ")

    @asyncio_test
    async def test_a_response_stuck_half_way_is_cut_off(self) -> None:
        app = Stuck()
        server = await serve(self, app, request_timeout=0.2)
        data = await exchange(server.port, b"GET /midway HTTP/1.1\r\nhost: x\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        self.assertFalse(data.endswith(b"0\r\n\r\n"), "the cut response must not look complete")
        self.assertEqual(app.cancelled, 1)

    @asyncio_test
    async def test_over_http2_the_stream_gets_the_504(self) -> None:
        server = await serve(self, Stuck(), request_timeout=0.2)
        client = await H2Client.open(server.port)
        headers, body = await client.response(client.request("/never"))
        fine_headers, fine_body = await client.response(client.request("/fine"))
        client.close()
        self.assertEqual((headers[b":status"], body), (b"504", b"Gateway Timeout"))
        self.assertEqual(fine_body, b"hello /fine ")

    @asyncio_test
    async def test_no_limit_by_default(self) -> None:
        app = Stuck()
        server = await serve(self, app)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /never HTTP/1.1\r\nhost: x\r\n\r\n")
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)  # still waiting for the app
        writer.close()


class Recorder:
    """Records every message the app receives, and what ``send`` did, per path."""

    def __init__(self) -> None:
        self.received: dict[str, list[str]] = {}
        self.send_error: dict[str, str] = {}
        self.done: dict[str, asyncio.Future[None]] = {}

    def finished(self, path: str) -> asyncio.Future[None]:
        return self.done.setdefault(path, asyncio.get_running_loop().create_future())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        path = scope["path"]
        log = self.received.setdefault(path, [])
        try:
            if scope["type"] == "websocket":
                log.append((await receive())["type"])
                await asyncio.sleep(0.2)  # the client leaves before the app decides
                log.append((await receive())["type"])
            elif path == "/stream":
                await receive()
                await send({"type": "http.response.start", "status": 200, "headers": []})
                while True:  # until send() says the client is gone
                    await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            elif path == "/fine":
                await hello_app(scope, receive, send)
            else:
                while True:
                    message = await receive()
                    log.append(message["type"] + (" more" if message.get("more_body") else ""))
                    if message["type"] == "http.disconnect":
                        break
        except OSError as error:
            self.send_error[path] = type(error).__name__
        finally:
            self.finished(path).set_result(None)


async def fine(port: int) -> bytes:
    data = await exchange(port, b"GET /fine HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    return parse_responses(data)[0][1]


class ClientDisconnectTests(unittest.TestCase):
    """The client leaves at each stage; the app hears of it the ASGI way, nothing is logged
    as an error (trial would fail the test), and the next client is served."""

    async def leave(self, port: int, data: bytes, read: int = 0) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await writer.drain()
        if read:
            await reader.readexactly(read)
        writer.transport.abort()  # type: ignore[attr-defined]

    @asyncio_test
    async def test_mid_head(self) -> None:
        app = Recorder()
        server = await serve(self, app)
        await self.leave(server.port, b"GET /head HTTP/1.1\r\nHost: x\r\nX-Half")
        self.assertEqual(await fine(server.port), b"hello /fine ")
        self.assertNotIn("/head", app.received)  # an unfinished head never reaches the app

    @asyncio_test
    async def test_mid_body(self) -> None:
        app = Recorder()
        server = await serve(self, app)
        await self.leave(server.port, b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        await app.finished("/body")
        self.assertEqual(app.received["/body"], ["http.request more", "http.disconnect"])
        self.assertEqual(await fine(server.port), b"hello /fine ")

    @asyncio_test
    async def test_mid_response(self) -> None:
        app = Recorder()
        server = await serve(self, app)
        await self.leave(server.port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", read=1000)
        await app.finished("/stream")
        self.assertEqual(app.send_error["/stream"], "ClientDisconnected")  # an OSError, as the spec asks
        self.assertEqual(await fine(server.port), b"hello /fine ")

    @asyncio_test
    async def test_mid_websocket_handshake(self) -> None:
        # Reading is paused until the app accepts, so a client that leaves meanwhile is
        # noticed at the handshake timeout at the latest: a short one keeps this test short.
        app = Recorder()
        server = await serve(self, app, ws_handshake_timeout=0.5)
        await self.leave(server.port, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await app.finished("/ws")
        self.assertEqual(app.received["/ws"], ["websocket.connect", "websocket.disconnect"])
        self.assertEqual(await fine(server.port), b"hello /fine ")

    @asyncio_test
    async def test_mid_tls_handshake(self) -> None:
        cert, key, _ = development_certificate(Path(self.mktemp()))
        server = await serve(self, Recorder(), certfile=str(cert), keyfile=str(key))
        # the first bytes of a ClientHello (a TLS record header and the start of the handshake)
        await self.leave(server.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20)
        context = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context,
                                                       server_hostname="localhost")
        writer.write(b"GET /fine HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        self.assertEqual(parse_responses(await asyncio.wait_for(reader.read(), 10))[0][1], b"hello /fine ")
        writer.close()


class ClientGoawayTests(unittest.TestCase):
    @asyncio_test
    async def test_a_request_and_a_goaway_together_end_quietly(self) -> None:
        """Found by the soak run: h2 allows nothing to be sent after a client's GOAWAY, so an
        app answering a request that came with it raised inside the server, logged as the
        app's fault. Sent in one write, the app runs before the connection is gone."""
        server = await serve(self, hello_app)
        client = await H2Client.open(server.port)
        client.conn.send_headers(1, [(b":method", b"GET"), (b":path", b"/x"), (b":scheme", b"http"),
                                     (b":authority", b"x")], end_stream=True)
        client.conn.close_connection()
        client.flush()
        await client.writer.drain()
        self.assertEqual(await fine(server.port), b"hello /fine ")  # nothing logged; the server goes on
        client.close()


class SlowTests(unittest.TestCase):
    """An app that answers slowly to clients that read slowly: every byte arrives in order,
    the app's ``send()`` waits for its reader, nothing is logged as an error (trial would
    fail the test), and a client that reads promptly is served meanwhile."""

    CHUNK, CHUNKS = 65536, 64  # 4 MiB a response: more than the socket buffers hold

    def setUp(self) -> None:
        self.sent: dict[int, int] = {}

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/fine":
            await hello_app(scope, receive, send)
            return
        reader = int(scope["path"].strip("/"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(self.CHUNKS):
            await asyncio.sleep(0)  # slow: a chunk per turn of the loop at most
            await send({"type": "http.response.body", "body": self.chunk(index), "more_body": True})
            self.sent[reader] = index + 1
        await send({"type": "http.response.body", "body": b""})

    def chunk(self, index: int) -> bytes:
        return bytes([index % 251]) * self.CHUNK

    def whole(self) -> bytes:
        return b"".join(self.chunk(index) for index in range(self.CHUNKS))

    @asyncio_test
    async def test_http1_slow_readers(self) -> None:
        server = await serve(self, self.app)
        readers = []
        for number in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % number)
            readers.append((reader, writer))
        self.assertEqual(await fine(server.port), b"hello /fine ")  # served while four are stuck
        self.assertEqual(len(self.sent), 4)
        self.assertTrue(all(sent < self.CHUNKS for sent in self.sent.values()), self.sent)
        for reader, writer in readers:
            data = b""
            while not data.endswith(b"\r\n0\r\n\r\n"):
                data += await asyncio.wait_for(reader.read(4096), 10)  # a slow reader: a little at a time
            writer.close()
            [(response, body)] = parse_responses(data)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(body, self.whole())

    @asyncio_test
    async def test_http2_slow_readers(self) -> None:
        server = await serve(self, self.app)
        client = await H2Client.open(server.port, auto_ack=False)  # the window stays shut: no reading
        streams = [client.request(f"/{number}") for number in range(4)]
        while sum(len(client.bodies.get(stream, b"")) for stream in streams) < 65535:
            await client.pump()  # the connection's first window, shared by the four
        self.assertEqual(await fine(server.port), b"hello /fine ")  # another connection is served
        self.assertTrue(all(sent < self.CHUNKS for sent in self.sent.values()), self.sent)
        client.auto_ack = True  # now read, giving credit back as the data comes
        for stream in streams:
            client.conn.acknowledge_received_data(len(client.bodies.get(stream, b"")), stream)
        client.flush()
        for stream in streams:
            headers, body = await client.response(stream)
            self.assertEqual((headers[b":status"], body), (b"200", self.whole()))
        client.close()
