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
        await still_serving(self, port)

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
    async def test_streams_beyond_the_limit_are_refused_and_the_others_served(self) -> None:
        """Before: the stream past the limit got GOAWAY PROTOCOL_ERROR for the whole
        connection, and none of the others was served; 130 streams sent before the
        server's SETTINGS arrived (when RFC 9113 section 6.5.2 sets no limit) did the same."""
        for limit, opened in ((10, 11), (100, 130)):  # the second: the default, before SETTINGS
            server = await serve(self, hello_app, h2_max_concurrent_streams=limit)
            client = await H2Client.open(server.port)
            client.conn.remote_settings.update({SettingCodes.MAX_CONCURRENT_STREAMS: 1000})  # ignore the limit
            client.conn.remote_settings.acknowledge()
            ids = [client.request("/held", end=False) for _ in range(opened)]
            client.flush()
            while not all(stream_id in client.resets for stream_id in ids[limit:]):
                await client.pump()
            self.assertEqual({client.resets[stream_id] for stream_id in ids[limit:]}, {ErrorCodes.REFUSED_STREAM})
            for stream_id in ids[:limit]:
                client.conn.end_stream(stream_id)
            client.flush()
            for stream_id in ids[:limit]:
                _, body = await client.response(stream_id)
                self.assertEqual(body, b"hello /held ")
            self.assertIsNone(client.goaway)
            client.close()

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
    async def test_malformed_header_blocks_get_protocol_error(self) -> None:
        """Each RFC 9113 section 8.2 and 8.3 rule the server's own one-pass check keeps, sent
        by a client whose h2 checks nothing: GOAWAY PROTOCOL_ERROR, before any app runs."""
        calls: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            calls.append(scope["path"])
            await hello_app(scope, receive, send)

        server = await serve(self, app)
        bad = [[(b"X-Upper", b"1")], [(b"connection", b"close")], [(b"te", b"gzip")], [(b"x-ws", b" lead")],
               [(b"x-nul", b"a\x00b")], [(b"host", b"other.test")], [(b":path", b"/again")]]
        for extra in bad:
            client = await H2Client.open(server.port)
            client.conn.config.validate_outbound_headers = False
            client.conn.config.normalize_outbound_headers = False
            client.request("/bad", headers=extra)
            await self._expect_goaway(client, ErrorCodes.PROTOCOL_ERROR)
        client = await H2Client.open(server.port)
        client.conn.config.validate_outbound_headers = False
        stream_id = client.request("/trailers", method="POST", end=False)
        client.conn.send_headers(stream_id, [(b":path", b"/")], end_stream=True)  # a pseudo-header in trailers
        client.flush()
        await self._expect_goaway(client, ErrorCodes.PROTOCOL_ERROR)
        self.assertNotIn("/bad", calls)
        await self._still_serving(server.port)

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


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One raw HTTP/2 frame: what a hostile client writes without a library's checks."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


async def frames_until_close(reader: asyncio.StreamReader) -> list[tuple[int, int, int, bytes]]:
    """Every frame the server sent until it closed: (type, flags, stream id, payload)."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), TIMEOUT):
            data += chunk
    except ConnectionResetError:
        pass
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9:9 + length]))
        data = data[9 + length:]
    return frames


def goaway_code(frames: list[tuple[int, int, int, bytes]]) -> int | None:
    codes = [int.from_bytes(payload[4:8], "big") for kind, _, _, payload in frames if kind == 0x7]
    return codes[-1] if codes else None


class FrameFloodTests(unittest.TestCase):
    """Frames that cost the client nothing: a budget each, counted before h2 parses them."""

    async def flood(self, port: int, frames: bytes) -> list[tuple[int, int, int, bytes]]:
        reader, writer = await connect_raw(port)
        headers = b"\x82\x84\x86\x41\x0bexample.com"  # GET / http, :authority (HPACK, no huffman)
        writer.write(PREFACE + frame(0x4, 0, 0) + frame(0x1, 0x4, 1, headers) + frames)  # stream 1 stays open
        try:
            return await frames_until_close(reader)
        finally:
            writer.close()

    @asyncio_test
    async def test_a_ping_flood_gets_no_more_answers_than_the_limit(self) -> None:
        """Before: the GOAWAY came only after about 5,300 PING acknowledgements, though the
        limit said 100 per 10 s (h2 had answered every PING of a read already)."""
        server = await serve(self, hello_app, h2_max_control_frames=100)
        frames = await self.flood(server.port, frame(0x6, 0, 0, b"12345678") * 5000)
        acknowledgements = [f for f in frames if f[0] == 0x6 and f[1] & 0x1]
        self.assertLessEqual(len(acknowledgements), 100)
        self.assertGreater(len(acknowledgements), 90)  # within the budget they are answered
        self.assertEqual(goaway_code(frames), ErrorCodes.ENHANCE_YOUR_CALM)

    @asyncio_test
    async def test_floods_of_frames_that_carry_nothing_get_enhance_your_calm(self) -> None:
        """Before: 100k empty DATA frames cost 1.1-1.9 s of server CPU; 40k PRIORITY,
        WINDOW_UPDATE(+1) or unknown-type frames 0.3-0.4 s, and no GOAWAY."""
        server = await serve(self, hello_app, h2_max_empty_frames=1000)
        floods = {
            "empty DATA": frame(0x0, 0, 1),
            "PRIORITY": frame(0x2, 0, 3, b"\x00\x00\x00\x01\x0f"),
            "WINDOW_UPDATE +1": frame(0x8, 0, 0, b"\x00\x00\x00\x01"),
            "unknown type": frame(0x20, 0, 0, b"x"),
        }
        for name, one in floods.items():
            frames = await self.flood(server.port, one * 5000)
            self.assertEqual(goaway_code(frames), ErrorCodes.ENHANCE_YOUR_CALM, name)
        await still_serving(self, server.port)

    @asyncio_test
    async def test_frames_within_the_budget_are_served(self) -> None:
        server = await serve(self, hello_app, h2_max_empty_frames=1000)
        client = await H2Client.open(server.port)
        stream_id = client.request("/within", end=False)
        for _ in range(300):
            client.conn.increment_flow_control_window(1)
            client.conn.prioritize(stream_id, weight=16)
        client.conn.end_stream(stream_id)
        client.flush()
        _, body = await client.response(stream_id)
        self.assertEqual(body, b"hello /within ")
        self.assertIsNone(client.goaway)
        client.close()

    @asyncio_test
    async def test_a_header_block_hpack_cannot_decode_is_a_compression_error(self) -> None:
        """Before: PROTOCOL_ERROR, where RFC 9113 section 4.3 says COMPRESSION_ERROR."""
        server = await serve(self, hello_app)
        reader, writer = await connect_raw(server.port)
        writer.write(PREFACE + frame(0x4, 0, 0) + frame(0x1, 0x5, 1, b"\xff\xff\xff\xff\x0f"))  # index overflow
        frames = await frames_until_close(reader)
        writer.close()
        self.assertEqual(goaway_code(frames), ErrorCodes.COMPRESSION_ERROR)
        await still_serving(self, server.port)

    @asyncio_test
    async def test_paths_http11_refuses_are_refused_over_http2_too(self) -> None:
        """Before: ``/echo x``, ``echo`` and ``*`` (for GET) were served."""
        server = await serve(self, hello_app)
        client = await H2Client.open(server.port)
        for path in ("/echo x", "echo", "*", "/a#b"):
            headers, _ = await client.response(client.request(path))
            self.assertEqual(headers[b":status"], b"400", path)
        headers, body = await client.response(client.request("/fine?q=1"))
        self.assertEqual((headers[b":status"], body), (b"200", b"hello /fine "))
        client.close()


async def connect_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def still_serving(test: unittest.TestCase, port: int) -> None:
    other = await H2Client.open(port)
    _, body = await other.response(other.request("/still"))
    other.close()
    test.assertEqual(body, b"hello /still ")
