"""TLS against clients the server was not written for: ALPN offers it does not share."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from twisted.trial import unittest

from hello_asgi import ASGIService, Config
from hello_asgi.testing import TestServer, asyncio_test, serve
from hello_asgi.tls import development_certificate

from .support import TIMEOUT, hello_app, parse_responses


class ALPNWithoutOverlapTests(unittest.TestCase):
    """RFC 7301 section 3.2 lets a server go on without ALPN when it shares no protocol
    with the client; hello-asgi then speaks HTTP/1.1, which every HTTP client speaks."""

    def setUp(self) -> None:
        self.cert, self.key, _ = development_certificate(Path(self.mktemp()))

    async def _get_offering(self, alpn: list[str], listener: str = "") -> tuple[str | None, bytes]:
        """GET / over TLS from a client that offers ``alpn``: the protocol chosen, the answer.
        With ``listener``, the server listens on that Twisted ``ssl:`` endpoint string instead."""
        if listener:
            service = ASGIService(hello_app, Config(listen=[listener]))
            service.startService()
            self.addCleanup(service.stopService)
            server = await TestServer(service)
        else:
            server = await serve(self, hello_app, certfile=str(self.cert), keyfile=str(self.key))
        context = ssl.create_default_context(cafile=str(self.cert))
        context.set_alpn_protocols(alpn)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", server.port, ssl=context, server_hostname="localhost"), TIMEOUT)
        chosen = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        writer.write(b"GET /old HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        return chosen, data

    @asyncio_test
    async def test_a_client_offering_only_http_1_0_is_served_http_1_1(self) -> None:
        chosen, data = await self._get_offering(["http/1.0"])
        self.assertIsNone(chosen)  # no protocol agreed, and no handshake failure either
        [(response, body)] = parse_responses(data)
        self.assertEqual((response.status_code, response.http_version), (200, b"1.1"))
        self.assertEqual(body, b"hello /old ")

    @asyncio_test
    async def test_a_client_offering_unknown_protocols_is_served_http_1_1(self) -> None:
        chosen, data = await self._get_offering(["spdy/3", "imap"])
        self.assertIsNone(chosen)
        self.assertEqual(parse_responses(data)[0][0].status_code, 200)

    @asyncio_test
    async def test_a_shared_protocol_is_still_chosen(self) -> None:
        chosen, data = await self._get_offering(["http/1.0", "http/1.1"])
        self.assertEqual(chosen, "http/1.1")
        self.assertEqual(parse_responses(data)[0][0].status_code, 200)

    @asyncio_test
    async def test_an_ssl_endpoint_string_serves_http_1_0_clients_too(self) -> None:
        """Twisted makes the TLS context of an ``ssl:`` listener, with its own ALPN choice."""
        listener = f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"
        chosen, data = await self._get_offering(["http/1.0"], listener)
        self.assertIsNone(chosen)
        self.assertEqual(parse_responses(data)[0][0].status_code, 200)
        chosen, _ = await self._get_offering(["h2", "http/1.1"], listener)
        self.assertEqual(chosen, "h2")
