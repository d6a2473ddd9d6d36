"""Hostile HTTP/2 peers, played by the h2 library: each gets GOAWAY with the right error code,
and the server goes on serving other connections."""

from __future__ import annotations

import asyncio
from typing import Any

from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, H2Client, hello_app


class HostilePeerTests(unittest.TestCase):
    async def _expect_goaway(self, client: H2Client, error_code: ErrorCodes) -> None:
        while not client.closed:
            try:
                await client.pump()
            except Exception:
                break  # h2 as a client refuses frames after GOAWAY: what came before is what counts
        self.assertIsNotNone(client.goaway, "no GOAWAY before the connection closed")
        self.assertEqual(client.goaway.error_code, error_code)

    async def _still_serving(self, port: int) -> None:
        other = await H2Client.open(port)
        _, body = await other.response(other.request("/still"))
        other.close()
        self.assertEqual(body, b"hello /still ")

    @asyncio_test
    async def test_rapid_reset_gets_enhance_your_calm(self) -> None:
        server = await serve(self, hello_app, h2_max_resets=50)
        client = await H2Client.open(server.port)
        for _ in range(60):
            stream_id = client.request("/reset-me", end=False)
            client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.flush()
        await self._expect_goaway(client, ErrorCodes.ENHANCE_YOUR_CALM)
        await self._still_serving(server.port)

    @asyncio_test
    async def test_resets_within_the_budget_are_fine(self) -> None:
        server = await serve(self, hello_app, h2_max_resets=50)
        client = await H2Client.open(server.port)
        for _ in range(40):
            client.conn.reset_stream(client.request("/reset-me", end=False), ErrorCodes.CANCEL)
        client.flush()
        _, body = await client.response(client.request("/after"))
        client.close()
        self.assertEqual(body, b"hello /after ")

    @asyncio_test
    async def test_ping_flood_gets_enhance_your_calm(self) -> None:
        server = await serve(self, hello_app)
        client = await H2Client.open(server.port)
        for n in range(150):
            client.conn.ping(b"%08d" % n)
        client.flush()
        await self._expect_goaway(client, ErrorCodes.ENHANCE_YOUR_CALM)
        await self._still_serving(server.port)

    @asyncio_test
    async def test_settings_flood_gets_enhance_your_calm(self) -> None:
        server = await serve(self, hello_app)
        client = await H2Client.open(server.port)
        for n in range(150):
            client.conn.update_settings({SettingCodes.HEADER_TABLE_SIZE: 4096 + n})
        client.flush()
        await self._expect_goaway(client, ErrorCodes.ENHANCE_YOUR_CALM)
        await self._still_serving(server.port)

    @asyncio_test
    async def test_streams_beyond_the_limit_are_refused(self) -> None:
        server = await serve(self, hello_app, h2_max_concurrent_streams=10)
        client = await H2Client.open(server.port)
        while client.conn.remote_settings.max_concurrent_streams != 10:
            await client.pump()  # the server's SETTINGS arrive
        client.conn.remote_settings.update({SettingCodes.MAX_CONCURRENT_STREAMS: 1000})  # ignore them
        client.conn.remote_settings.acknowledge()
        for _ in range(11):
            client.request("/held", end=False)
        client.flush()
        await self._expect_goaway(client, ErrorCodes.PROTOCOL_ERROR)
        await self._still_serving(server.port)

    @asyncio_test
    async def test_stream_error_bait_closes_the_connection(self) -> None:
        """MadeYouReset (CVE-2025-8671) baits servers into resetting streams that keep their
        work running; h2 treats these frames as connection errors, so nothing is left behind."""
        server = await serve(self, hello_app)
        client = await H2Client.open(server.port)
        stream_id = client.request("/bait", end=False)
        # WINDOW_UPDATE with a zero increment on an open stream.
        client.writer.write(b"\x00\x00\x04\x08\x00" + stream_id.to_bytes(4, "big") + b"\x00\x00\x00\x00")
        await self._expect_goaway(client, ErrorCodes.PROTOCOL_ERROR)
        await self._still_serving(server.port)
        self.assertEqual(
            [c for c in server.service.factory.connections if c.inner is not None and c.inner._streams], []
        )

    @asyncio_test
    async def test_continuation_flood_is_cut_off(self) -> None:
        """HEADERS without END_HEADERS, then CONTINUATION frames without end: h2 keeps at most
        64 fragments, then the connection ends, so the flood cannot fill memory."""
        server = await serve(self, hello_app)
        client = await H2Client.open(server.port)
        headers = client.conn.encoder.encode([(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"),
                                              (b":authority", b"x")])
        client.writer.write(len(headers).to_bytes(3, "big") + b"\x01\x00\x00\x00\x00\x01" + headers)  # HEADERS
        fragment = b"\x40\x01a\x01b" * 100  # literal headers, never ended
        for _ in range(100):
            client.writer.write(len(fragment).to_bytes(3, "big") + b"\x09\x00\x00\x00\x00\x01" + fragment)
        await self._expect_goaway(client, ErrorCodes.PROTOCOL_ERROR)
        await self._still_serving(server.port)

    @asyncio_test
    async def test_oversized_header_list_is_refused(self) -> None:
        """An HPACK bomb: one header, indexed once, repeated until the list is megabytes."""
        server = await serve(self, hello_app, max_head_size=16384)
        client = await H2Client.open(server.port)
        while not client.conn.remote_settings.max_header_list_size:
            await client.pump()  # the server's limit arrives, and the client's ACK goes back
        big = (b"x-bomb", b"b" * 4000)
        stream_id = client.request("/bomb", headers=[big] * 300, end=True)
        while not client.closed and stream_id not in client.resets and client.goaway is None:
            await client.pump()
        self.assertTrue(client.goaway is not None or stream_id in client.resets,
                        "a 1.2 MB header list was accepted")
        await self._still_serving(server.port)

    @asyncio_test
    async def test_zero_window_client_is_closed_after_the_stall_timeout(self) -> None:
        sent: list[Exception] = []
        done = asyncio.get_running_loop().create_future()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] != "/dribble":
                return await hello_app(scope, receive, send)
            await send({"type": "http.response.start", "status": 200})
            try:
                for _ in range(100):
                    await send({"type": "http.response.body", "body": b"z" * 65536, "more_body": True})
            except OSError as error:
                sent.append(error)
            done.set_result(None)

        server = await serve(self, app, h2_stall_timeout=0.3)
        client = await H2Client.open(server.port, auto_ack=False)
        client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
        client.flush()
        client.request("/dribble")
        await asyncio.wait_for(done, TIMEOUT)  # the app is released, not pinned forever
        self.assertEqual(len(sent), 1)
        await self._expect_goaway(client, ErrorCodes.FLOW_CONTROL_ERROR)
        await self._still_serving(server.port)
