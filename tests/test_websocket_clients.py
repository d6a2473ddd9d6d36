"""WebSockets with other real clients: autobahn's own client, and both clients over TLS (wss)."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial import unittest
from websockets.asyncio.client import connect

from hello_asgi.testing import asyncio_test, serve
from hello_asgi.tls import development_certificate

from .test_websocket import echo_app


class _Client(WebSocketClientProtocol):
    """Sends two messages (one of them compressed when offered), then closes."""

    def onOpen(self) -> None:
        self.received: list[Any] = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append(payload if isBinary else payload.decode())
        if len(self.received) == 1:
            self.sendMessage(("z" * 5000).encode(), isBinary=False)
            self.sendMessage(b"\x01\x02", isBinary=True)
        elif len(self.received) == 3:
            self.sendClose(1000, "done")

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:
        self.factory.done.callback((wasClean, code, getattr(self, "received", []), self))  # type: ignore[attr-defined]


def autobahn_client(port: int, tls_root: Path | None = None, deflate: bool = True) -> asyncio.Future[Any]:
    scheme = "wss" if tls_root else "ws"
    factory = WebSocketClientFactory(f"{scheme}://localhost:{port}/auto")
    factory.protocol = _Client
    if deflate:
        from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateResponse, \
            PerMessageDeflateResponseAccept

        factory.setProtocolOptions(
            perMessageCompressionOffers=[PerMessageDeflateOffer()],
            perMessageCompressionAccept=lambda response: PerMessageDeflateResponseAccept(response)
            if isinstance(response, PerMessageDeflateResponse) else None,
        )
    factory._batched_timer = SimpleNamespace(call_later=reactor.callLater)  # no timers left behind
    factory.done = Deferred()  # type: ignore[attr-defined]
    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if tls_root is not None:
        trust = Certificate.loadPEM(tls_root.read_bytes())
        endpoint = wrapClientTLS(optionsForClientTLS("localhost", trustRoot=trust), endpoint)
    endpoint.connect(factory)
    return factory.done.asFuture(asyncio.get_running_loop())  # type: ignore[attr-defined, no-any-return]


class AutobahnClientTests(unittest.TestCase):
    def setUp(self) -> None:
        self.cert, self.key, _ = development_certificate(Path(self.mktemp()))

    @asyncio_test
    async def test_autobahn_client_over_ws_with_compression(self) -> None:
        server = await serve(self, echo_app)
        clean, code, received, client = await autobahn_client(server.port)
        self.assertEqual((clean, code), (True, 1000))
        self.assertEqual(json.loads(received[0])["path"], "/auto")
        self.assertEqual(received[1:], ["z" * 5000, b"\x01\x02"])
        self.assertIsNotNone(client._perMessageCompress)

    @asyncio_test
    async def test_autobahn_client_over_wss(self) -> None:
        server = await serve(self, echo_app, certfile=str(self.cert), keyfile=str(self.key))
        clean, code, received, _ = await autobahn_client(server.port, tls_root=self.cert, deflate=False)
        self.assertEqual((clean, code), (True, 1000))
        self.assertEqual(json.loads(received[0])["scheme"], "wss")

    @asyncio_test
    async def test_websockets_client_over_wss(self) -> None:
        server = await serve(self, echo_app, certfile=str(self.cert), keyfile=str(self.key))
        context = ssl.create_default_context(cafile=str(self.cert))
        async with connect(f"wss://localhost:{server.port}/secure", ssl=context) as ws:
            scope = json.loads(await ws.recv())
            await ws.send("over TLS")
            self.assertEqual(await ws.recv(), "over TLS")
        self.assertEqual((scope["scheme"], scope["path"]), ("wss", "/secure"))
