"""HTTP/3's settings: Alt-Svc, the start-up checks, the idle timeout, Retry and 0-RTT."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import httpx
from aioquic.asyncio.client import connect
from aioquic.tls import SessionTicket
from twisted.trial import unittest

from hello_asgi.config import Config
from hello_asgi.demo import asgi as demo_app
from hello_asgi.testing import asyncio_test, serve

from .support import hello_app
from .test_cli import TWIST
from .test_http3 import TIMEOUT, H3Client, client_configuration, h3_client, h3_port, serve_h3, tls_files


async def own_alt_svc(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"alt-svc", b"clear")]})
    await send({"type": "http.response.body", "body": b"mine"})


class AltSvcTests(unittest.TestCase):
    async def _get(self, port: int, http2: bool) -> httpx.Response:
        async with httpx.AsyncClient(verify=False, http2=http2) as client:
            return await client.get(f"https://127.0.0.1:{port}/")

    @asyncio_test
    async def test_http11_and_http2_over_tls_name_http3(self) -> None:
        server = await serve_h3(self, demo_app)
        for http2 in (False, True):
            response = await self._get(server.port, http2)
            self.assertEqual(response.http_version, "HTTP/2" if http2 else "HTTP/1.1")
            self.assertEqual(response.headers["alt-svc"], f'h3=":{h3_port(server)}"; ma=86400')
        async with h3_client(h3_port(server)) as client:
            over_h3 = await client.get("/")
        self.assertIsNone(over_h3.header(b"alt-svc"))  # HTTP/3 responses need none

    @asyncio_test
    async def test_no_alt_svc_and_the_apps_own(self) -> None:
        server = await serve_h3(self, demo_app, alt_svc=False, alt_svc_max_age=60)
        self.assertNotIn("alt-svc", (await self._get(server.port, False)).headers)
        server = await serve_h3(self, own_alt_svc)
        self.assertEqual((await self._get(server.port, False)).headers.get_list("alt-svc"), ["clear"])

    @asyncio_test
    async def test_no_alt_svc_without_http3(self) -> None:
        server = await serve(self, demo_app, **tls_files(self))
        self.assertNotIn("alt-svc", (await self._get(server.port, False)).headers)


class StartupChecksTests(unittest.TestCase):
    def test_http3_needs_tls(self) -> None:
        with self.assertRaisesRegex(ValueError, "HTTP/3 needs TLS"):
            Config(h3=True).validate()
        with self.assertRaisesRegex(ValueError, "HTTP/3 needs TLS"):
            Config(listen=["quic:8443"]).validate()
        with self.assertRaisesRegex(ValueError, "h3_max_datagram_size"):
            Config(h3=True, certfile="c", keyfile="k", h3_max_datagram_size=1000).validate()

    def test_the_command_says_so_in_one_line(self) -> None:
        done = subprocess.run([*TWIST, "hello-asgi", "--app", "hello_asgi.demo:asgi", "--h3"], capture_output=True,
                              text=True, timeout=60)
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stderr.strip().splitlines()[-1],
                         "hello-asgi: HTTP/3 needs TLS: give --cert and --key, or --tls")
        done = subprocess.run([*TWIST, "hello-asgi", "--app", "hello_asgi.demo:asgi", "--tls",
                               "--listen", "quic:x"], capture_output=True, text=True, timeout=60)
        self.assertIn("expected quic:PORT[:interface=HOST]", done.stderr)


class QuicOptionsTests(unittest.TestCase):
    timeout = 60

    @asyncio_test
    async def test_an_idle_connection_is_dropped_at_the_idle_timeout(self) -> None:
        server = await serve_h3(self, hello_app, h3_idle_timeout=1.0)
        endpoint = server.service.quic[0]
        async with h3_client(h3_port(server), idle_timeout=60.0) as client:
            await client.get("/")
            self.assertEqual(len(endpoint.connections), 1)
            await asyncio.wait_for(endpoint.drained(), TIMEOUT)
            self.assertEqual(len(endpoint.connections), 0)

    @asyncio_test
    async def test_retry_validates_the_address_first(self) -> None:
        server = await serve_h3(self, hello_app, h3_retry=True)
        async with h3_client(h3_port(server)) as client:
            response = await client.get("/retried")
            self.assertIsNotNone(client._quic._retry_source_connection_id)  # the client followed a Retry
        self.assertEqual(bytes(response.body), b"hello /retried ")
        server = await serve_h3(self, hello_app)
        async with h3_client(h3_port(server)) as client:
            await client.get("/")
            self.assertIsNone(client._quic._retry_source_connection_id)  # none by default

    async def _tickets(self, port: int) -> list[SessionTicket]:
        tickets: list[SessionTicket] = []
        async with connect("127.0.0.1", port, configuration=client_configuration(), create_protocol=H3Client,
                           session_ticket_handler=tickets.append) as client:
            await client.get("/")  # type: ignore[attr-defined]
            await client.ping()
        return tickets

    @asyncio_test
    async def test_no_session_tickets_and_so_no_0rtt_by_default(self) -> None:
        server = await serve_h3(self, hello_app)
        self.assertEqual(await self._tickets(h3_port(server)), [])

    @asyncio_test
    async def test_0rtt_when_asked_for(self) -> None:
        server = await serve_h3(self, hello_app, h3_early_data=True)
        tickets = await self._tickets(h3_port(server))
        self.assertTrue(tickets)
        configuration = client_configuration(session_ticket=tickets[-1])
        async with connect("127.0.0.1", h3_port(server), configuration=configuration, create_protocol=H3Client,
                           wait_connected=False) as client:
            stream_id = client.start("GET", "/early")  # type: ignore[attr-defined]  # before the handshake ends
            response = await client.response(stream_id)  # type: ignore[attr-defined]
            self.assertTrue(client._quic.tls.early_data_accepted)
        self.assertEqual(bytes(response.body), b"hello /early ")
