"""A real browser: headless Chromium loads a page that opens a WebSocket, talks and closes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve
from hello_asgi.tls import development_certificate

from .support import browse, read_body


PAGE = b"""<!doctype html><title>ws</title><script>
const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws");
ws.onopen = () => ws.send("hello from the browser");
ws.onmessage = (event) => {
  ws.close(1000, "done");
  fetch("/report", {method: "POST", body: event.data});
};
ws.onerror = () => fetch("/report", {method: "POST", body: '{"error": true}'});
</script>"""


class BrowserApp:
    """Serves the page, echoes over the WebSocket what it learnt, and records the page's report."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.report: asyncio.Future[Any] = loop.create_future()
        self.disconnect: asyncio.Future[Any] = loop.create_future()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": json.dumps({
                "echo": message["text"], "http_version": scope["http_version"], "scheme": scope["scheme"]})})
            self.disconnect.set_result(await receive())
        elif scope["type"] == "http":
            body = await read_body(receive)
            if scope["path"] == "/report":
                self.report.set_result(json.loads(body))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/html; charset=utf-8")]})
            await send({"type": "http.response.body", "body": PAGE if scope["path"] == "/" else b""})


class ChromiumTests(unittest.TestCase):
    timeout = 120

    async def _browse(self, url: str) -> asyncio.subprocess.Process:
        return await browse(self, url, "--disable-quic", "--ignore-certificate-errors")

    async def _check(self, app: BrowserApp, url: str) -> dict[str, Any]:
        await self._browse(url)
        report = await asyncio.wait_for(app.report, 90)
        disconnect = await asyncio.wait_for(app.disconnect, 30)
        self.assertEqual(report["echo"], "hello from the browser")
        self.assertEqual((disconnect["code"], disconnect["reason"]), (1000, "done"))
        return report  # type: ignore[no-any-return]

    @asyncio_test
    async def test_chromium_over_ws(self) -> None:
        app = BrowserApp()
        server = await serve(self, app)
        report = await self._check(app, f"http://127.0.0.1:{server.port}/")
        self.assertEqual((report["scheme"], report["http_version"]), ("ws", "1.1"))

    @asyncio_test
    async def test_chromium_over_wss_with_a_self_signed_certificate(self) -> None:
        cert, key, _ = development_certificate(Path(self.mktemp()))
        app = BrowserApp()
        server = await serve(self, app, certfile=str(cert), keyfile=str(key))
        report = await self._check(app, f"https://localhost:{server.port}/")
        self.assertEqual(report["scheme"], "wss")
        # Chromium opens WebSockets over HTTP/2 (RFC 8441) when the server offers it by ALPN.
        self.assertEqual(report["http_version"], "2")
