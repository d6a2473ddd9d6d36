"""A real browser over HTTP/3: headless Chromium, made to use QUIC for the test origin, loads
a page and reports the protocol it arrived over."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve
from hello_asgi.tls import development_certificate

from .support import browse, read_body


PAGE = b"""<!doctype html><title>h3</title><script>
const entry = performance.getEntriesByType("navigation")[0];
fetch("/report", {method: "POST", body: JSON.stringify({protocol: entry.nextHopProtocol})});
</script>"""


def spki_hash(cert: Path) -> str:
    """What --ignore-certificate-errors-spki-list takes: base64 of the SHA-256 of the key."""
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


class ReportingApp:
    """Serves the page and keeps the page's report, with the HTTP version each request came over."""

    def __init__(self) -> None:
        self.report: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.versions: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.versions.append(scope["http_version"])
        body = await read_body(receive)
        if scope["path"] == "/report" and not self.report.done():
            self.report.set_result({**json.loads(body), "http_version": scope["http_version"]})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html; charset=utf-8")]})
        await send({"type": "http.response.body", "body": PAGE if scope["path"] == "/" else b""})


class ChromiumHTTP3Tests(unittest.TestCase):
    timeout = 120

    @asyncio_test
    async def test_chromium_loads_the_page_over_h3(self) -> None:
        cert, key, _ = development_certificate(Path(self.mktemp()))
        app = ReportingApp()
        server = await serve(self, app, h3=True, certfile=str(cert), keyfile=str(key))
        port = server.service.quic[0].address.port
        await browse(self, f"https://localhost:{port}/", "--enable-quic", f"--origin-to-force-quic-on=localhost:{port}",
                     # The server listens on 127.0.0.1; Chromium tries QUIC to localhost on ::1 alone.
                     "--host-resolver-rules=MAP localhost 127.0.0.1",
                     f"--ignore-certificate-errors-spki-list={spki_hash(cert)}")
        report = await asyncio.wait_for(app.report, 90)
        self.assertEqual(report["protocol"], "h3")
        self.assertEqual(report["http_version"], "3")
        self.assertEqual(app.versions[0], "3")  # the page itself, not only the report
