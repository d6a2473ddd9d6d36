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
                if not response.done.done():
                    response.done.set_exception(ConnectionError(event.reason_phrase or str(event.error_code)))
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
