"""HTTP/3 over QUIC, black-box: aioquic's own HTTP/3 client against a real server on UDP."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset
from twisted.trial import unittest

from hello_asgi.demo import asgi as demo_app
from hello_asgi.testing import TestServer, asyncio_test, serve
from hello_asgi.tls import development_certificate

from .support import read_body

TIMEOUT = 30


@dataclass
class Response:
    """What came back on one request stream."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    informational: list[int] = field(default_factory=list)
    reset: int | None = None  # the error code of a RESET_STREAM
    closed: int | None = None  # the error code of a CONNECTION_CLOSE that came first
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    data_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)


class H3Client(QuicConnectionProtocol):
    """aioquic's QUIC connection with its HTTP/3 layer: requests in, responses gathered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.responses: dict[int, Response] = {}
        self.terminated: asyncio.Future[ConnectionTerminated] = self._loop.create_future()
        self.goaway: list[bytes] = []
        self.read_paused = False  # True: DATA is not acknowledged (the client "never opens its window")

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            if not self.terminated.done():
                self.terminated.set_result(event)
            for response in self.responses.values():
                response.closed = event.error_code
                if not response.done.done():
                    response.done.set_result(None)
            return
        if isinstance(event, StreamReset) and event.stream_id in self.responses:
            response = self.responses[event.stream_id]
            response.reset = event.error_code
            if not response.done.done():
                response.done.set_result(None)
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: Any) -> None:
        response = self.responses.get(getattr(event, "stream_id", -1))
        if response is None:
            return
        if isinstance(event, HeadersReceived):
            status = dict(event.headers).get(b":status")
            if status is not None and int(status) < 200:
                response.informational.append(int(status))
            elif not response.headers:
                response.headers = event.headers
            else:
                response.trailers = event.headers
        elif isinstance(event, DataReceived):
            response.body += event.data
            response.data_event.set()
        if getattr(event, "stream_ended", False) and not response.done.done():
            response.done.set_result(None)

    def start(self, method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None,
              end: bool = True, authority: bytes = b"localhost") -> int:
        stream_id = self._quic.get_next_available_stream_id()
        self.responses[stream_id] = Response()
        self.h3.send_headers(stream_id, [(b":method", method.encode()), (b":scheme", b"https"),
                                         (b":authority", authority), (b":path", path.encode()),
                                         *(headers or [])], end_stream=end)
        self.transmit()
        return stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.h3.send_data(stream_id, data, end)
        self.transmit()

    def reset(self, stream_id: int, code: int = 0x10C) -> None:
        self._quic.reset_stream(stream_id, code)
        self.transmit()

    async def response(self, stream_id: int) -> Response:
        response = self.responses[stream_id]
        await asyncio.wait_for(asyncio.shield(response.done), TIMEOUT)
        return response

    async def get(self, path: str = "/", headers: list[tuple[bytes, bytes]] | None = None,
                  method: str = "GET") -> Response:
        return await self.response(self.start(method, path, headers))


def client_configuration(**settings: Any) -> QuicConfiguration:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                                      server_name="localhost", **settings)
    return configuration


@asynccontextmanager
async def h3_client(port: int, **settings: Any) -> AsyncIterator[H3Client]:
    async with connect("127.0.0.1", port, configuration=client_configuration(**settings),
                       create_protocol=H3Client) as client:
        yield client  # type: ignore[misc]


def tls_files(test: unittest.TestCase) -> dict[str, str]:
    cert, key, _ = development_certificate(Path(test.mktemp()))
    return {"certfile": str(cert), "keyfile": str(key)}


async def serve_h3(test: unittest.TestCase, app: Any, **settings: Any) -> TestServer:
    """``app`` over TLS with HTTP/3 beside it, on the same port number (UDP)."""
    server = await serve(test, app, h3=True, **tls_files(test), **settings)
    assert server.service.quic, "no HTTP/3 endpoint started"
    return server


def h3_port(server: TestServer) -> int:
    return server.service.quic[0].address.port


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the request as JSON: its scope's facts and its body's length and chunks."""
    if scope["type"] != "http":
        return
    chunks = 0
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        chunks += 1
        if not message.get("more_body"):
            break
    facts = {"http_version": scope["http_version"], "method": scope["method"], "path": scope["path"],
             "query_string": scope["query_string"].decode(), "scheme": scope["scheme"],
             "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]],
             "tls": scope["extensions"].get("tls"), "size": size, "chunks": chunks,
             "server": scope["server"], "client": scope["client"]}
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(facts).encode()})


class HTTP3Tests(unittest.TestCase):
    timeout = 60

    @asyncio_test
    async def test_the_demo_app_answers_http_version_3(self) -> None:
        server = await serve_h3(self, demo_app)
        async with h3_client(h3_port(server)) as client:
            response = await client.get("/hello?x=1")
        self.assertEqual(response.status, 200)
        scope = json.loads(response.body)
        self.assertEqual(scope["http_version"], "3")
        self.assertEqual(scope["scheme"], "https")
        self.assertEqual(scope["path"], "/hello")
        self.assertEqual(scope["query_string"], "x=1")
        self.assertEqual(response.header(b"server"), b"hello-asgi")
        self.assertIsNotNone(response.header(b"date"))

    @asyncio_test
    async def test_authority_becomes_host_and_the_tls_extension_is_there(self) -> None:
        server = await serve_h3(self, echo_app)
        async with h3_client(h3_port(server)) as client:
            response = await client.get("/", headers=[(b"cookie", b"a=1"), (b"cookie", b"b=2"),
                                                      (b"x-thing", b"yes")])
        facts = json.loads(response.body)
        headers = [tuple(pair) for pair in facts["headers"]]
        self.assertEqual(headers[0], ("host", "localhost"))
        self.assertIn(("cookie", "a=1; b=2"), headers)
        self.assertIn(("x-thing", "yes"), headers)
        self.assertEqual(facts["tls"]["tls_version"], 0x0304)
        self.assertIn("BEGIN CERTIFICATE", facts["tls"]["server_cert"])
        self.assertIsInstance(facts["tls"]["cipher_suite"], int)
        self.assertEqual(facts["client"][0], "127.0.0.1")
        self.assertEqual(facts["server"][1], h3_port(server))

    @asyncio_test
    async def test_post_with_a_streamed_body(self) -> None:
        server = await serve_h3(self, echo_app)
        async with h3_client(h3_port(server)) as client:
            stream_id = client.start("POST", "/upload", end=False)
            for _ in range(10):
                client.send(stream_id, b"x" * 10_000)
                await asyncio.sleep(0)  # let the pieces go as pieces
            client.send(stream_id, b"", end=True)
            response = await client.response(stream_id)
        facts = json.loads(response.body)
        self.assertEqual((facts["method"], facts["size"]), ("POST", 100_000))

    @asyncio_test
    async def test_a_request_body_is_held_to_one_window_while_the_app_does_not_read(self) -> None:
        """The client may send one stream window of body beyond what the app took; the
        rest waits in the client until the app reads."""
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        go: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def slow_reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            started.set_result(None)
            await go
            body = await read_body(receive)
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"%d" % len(body)})

        server = await serve_h3(self, slow_reader, h3_stream_window=65536)
        async with h3_client(h3_port(server)) as client:
            stream_id = client.start("POST", "/", end=False)
            client.send(stream_id, b"y" * 1_000_000, end=True)
            await started
            connection = next(iter(server.service.quic[0].connections))
            for _ in range(20):  # round trips enough for the client to send all the window lets it
                await client.ping()
            held = connection._streams[stream_id].buffered
            self.assertLessEqual(held, 65536)
            self.assertGreater(held, 0)
            go.set_result(None)
            response = await client.response(stream_id)
        self.assertEqual(bytes(response.body), b"1000000")

    @asyncio_test
    async def test_a_50_mb_download_with_flow_control(self) -> None:
        """send() waits while the client has not taken the response: what the server holds
        for the stream stays near SEND_HIGH however fast the app writes."""
        from hello_asgi.http3 import SEND_HIGH

        size, chunk = 50 * 1024 * 1024, 256 * 1024
        peak = [0]

        async def download(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % size)]})
            block = bytes(range(256)) * (chunk // 256)
            connection = next(iter(server.service.quic[0].connections))
            quic_stream = connection.quic._streams[0]
            for _ in range(size // chunk - 1):
                await send({"type": "http.response.body", "body": block, "more_body": True})
                peak[0] = max(peak[0], len(quic_stream.sender._buffer))
            await send({"type": "http.response.body", "body": block})

        server = await serve_h3(self, download)
        async with h3_client(h3_port(server)) as client:
            response = await client.get("/big")
        self.assertEqual(len(response.body), size)
        self.assertEqual(response.body[:512], bytes(range(256)) * 2)
        self.assertLessEqual(peak[0], SEND_HIGH + chunk + 64 * 1024)

    @asyncio_test
    async def test_many_concurrent_streams(self) -> None:
        server = await serve_h3(self, echo_app, h3_max_concurrent_streams=50)
        async with h3_client(h3_port(server)) as client:
            ids = [client.start("GET", f"/{n}") for n in range(300)]
            responses = await asyncio.gather(*(client.response(stream_id) for stream_id in ids))
        self.assertEqual([json.loads(r.body)["path"] for r in responses], [f"/{n}" for n in range(300)])

    @asyncio_test
    async def test_a_stream_reset_by_the_client_is_a_disconnect_for_the_app(self) -> None:
        heard: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        reading: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def waits(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/after":
                await send({"type": "http.response.start", "status": 204})
                await send({"type": "http.response.body"})
                return
            first = await receive()
            reading.set_result(None)
            assert first["more_body"]
            heard.set_result(await receive())

        server = await serve_h3(self, waits)
        async with h3_client(h3_port(server)) as client:
            stream_id = client.start("POST", "/", end=False)
            client.send(stream_id, b"part")
            await reading
            client.reset(stream_id)
            message = await asyncio.wait_for(heard, TIMEOUT)
            self.assertEqual(message["type"], "http.disconnect")
            after = await client.get("/after")  # the connection goes on
            self.assertEqual(after.status, 204)

    @asyncio_test
    async def test_an_app_error_is_a_500_or_a_reset_stream(self) -> None:
        async def fails(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/late":
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise RuntimeError("the app broke")

        server = await serve_h3(self, fails)
        self.flushLoggedErrors(RuntimeError)
        async with h3_client(h3_port(server)) as client:
            early = await client.get("/early")
            late = await client.get("/late")
        self.assertEqual((early.status, bytes(early.body)), (500, b"Internal Server Error"))
        self.assertEqual(late.reset, 0x102)  # H3_INTERNAL_ERROR: not a clean end
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    @asyncio_test
    async def test_trailers_and_early_hints(self) -> None:
        async def with_trailers(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            assert "http.response.trailers" in scope["extensions"]
            await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload"]})
            await send({"type": "http.response.start", "status": 200, "trailers": True})
            await send({"type": "http.response.body", "body": b"body"})
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})

        server = await serve_h3(self, with_trailers)
        async with h3_client(h3_port(server)) as client:
            response = await client.get("/", headers=[(b"te", b"trailers")])
        self.assertEqual(response.informational, [103])
        self.assertEqual(bytes(response.body), b"body")
        self.assertEqual(response.trailers, [(b"x-checksum", b"abc")])

    @asyncio_test
    async def test_graceful_shutdown_mid_request(self) -> None:
        """GOAWAY; the request in flight finishes; the connection closes; the service stops."""
        inside: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        release: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            inside.set_result(None)
            await release
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"finished"})

        server = await serve(self, slow, h3=True, graceful_timeout=20, **tls_files(self))
        async with h3_client(h3_port(server)) as client:
            stream_id = client.start("GET", "/")
            await inside
            stopped = asyncio.ensure_future(server.service.stopService().asFuture(asyncio.get_running_loop()))
            for _ in range(3):
                await client.ping()  # the GOAWAY has arrived by now
            self.assertFalse(stopped.done())
            late = client.start("GET", "/late")
            release.set_result(None)
            response = await client.response(stream_id)
            refused = await client.response(late)
            await asyncio.wait_for(client.terminated, TIMEOUT)
        await asyncio.wait_for(stopped, TIMEOUT)
        self.assertEqual(bytes(response.body), b"finished")
        self.assertEqual(refused.reset, 0x10B)  # H3_REQUEST_REJECTED: the client may retry elsewhere
        self.assertEqual(client.terminated.result().error_code, 0x100)  # H3_NO_ERROR


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client's WebSocket frame (RFC 6455 section 5.2): final, masked, short payloads only."""
    key = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """The server's (unmasked, short) frames in ``data``: (opcode, payload)."""
    frames = []
    while len(data) >= 2:
        length = data[1] & 0x7F
        assert length < 126
        frames.append((data[0] & 0x0F, data[2:2 + length]))
        data = data[2 + length:]
    return frames


class WebSocketOverHTTP3Tests(unittest.TestCase):
    timeout = 60

    async def _open(self, client: H3Client, path: str = "/ws") -> int:
        stream_id = client.start("CONNECT", path, headers=[(b":protocol", b"websocket"),
                                                           (b"sec-websocket-version", b"13")], end=False)
        response = client.responses[stream_id]
        while not response.headers and not response.done.done():
            await asyncio.wait_for(client.ping(), TIMEOUT)
        return stream_id

    @asyncio_test
    async def test_a_websocket_over_an_extended_connect_stream(self) -> None:
        """RFC 9220: the same WebSocket code as over HTTP/2, on an HTTP/3 request stream."""
        closed: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "websocket":
                return
            await receive()
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send",
                        "text": f"{message['text']} over {scope['http_version']} {scope['scheme']}"})
            closed.set_result(await receive())

        server = await serve_h3(self, echo)
        async with h3_client(h3_port(server)) as client:
            self.assertEqual(client.h3.received_settings.get(0x8), 1)  # SETTINGS_ENABLE_CONNECT_PROTOCOL
            stream_id = await self._open(client)
            response = client.responses[stream_id]
            self.assertEqual(response.status, 200)
            client.send(stream_id, _masked_frame(0x1, b"hello"))
            while not response.body:
                response.data_event.clear()
                await asyncio.wait_for(response.data_event.wait(), TIMEOUT)
            self.assertEqual(_frames(bytes(response.body)), [(0x1, b"hello over 3 wss")])
            client.send(stream_id, _masked_frame(0x8, b"\x03\xe8bye"))
            disconnect = await asyncio.wait_for(closed, TIMEOUT)
        self.assertEqual(disconnect["code"], 1000)

    @asyncio_test
    async def test_a_refused_handshake_says_why_as_over_http2(self) -> None:
        """A wrong WebSocket version gets 426 and the version this server speaks (RFC 6455
        section 4.4); a plain CONNECT 405: this server is no proxy."""
        server = await serve_h3(self, echo_app)
        async with h3_client(h3_port(server)) as client:
            wrong = client.start("CONNECT", "/ws", headers=[(b":protocol", b"websocket"),
                                                            (b"sec-websocket-version", b"8")], end=False)
            plain = client.start("CONNECT", "/ws", end=False)
            refused, proxy = await client.response(wrong), await client.response(plain)
        self.assertEqual((refused.status, dict(refused.headers).get(b"sec-websocket-version")), (426, b"13"))
        self.assertEqual(proxy.status, 405)

    @asyncio_test
    async def test_without_websockets_extended_connect_is_neither_offered_nor_served(self) -> None:
        server = await serve_h3(self, echo_app, websocket=False)
        async with h3_client(h3_port(server)) as client:
            self.assertNotIn(0x8, client.h3.received_settings)
            stream_id = await self._open(client)
            response = await client.response(stream_id)
        self.assertEqual(response.status, 501)
