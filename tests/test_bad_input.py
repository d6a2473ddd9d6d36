"""Malformed and hostile HTTP/1.1 input, over raw sockets: the right 4xx, a clean close,
and the server still serving everyone else."""

from __future__ import annotations

import asyncio

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, connect, exchange, hello_app, released

GOOD = b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

CASES: dict[str, tuple[bytes, int]] = {
    "malformed request line": (b"GET\r\nHost: x\r\n\r\n", 400),
    "space in target": (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "bad method token": (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "space before colon": (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    "header without colon": (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
    "NUL in header value": (b"GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n", 400),
    "bare LF line ends": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    "bare CR in header": (b"GET / HTTP/1.1\r\nHost: x\rX-Y: z\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n b\r\n\r\n", 400),
    "CL and TE": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "duplicate CL": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    "signed CL": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400),
    "negative CL": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    "bad chunk size": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n", 400),
    "chunk size with bare LF": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", 400),
    "TE not ending in chunked": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    "no Host header": (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    "two Host headers": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "HTTP/2.0 over HTTP/1 framing": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "HTTP/1.2": (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
    "HTTP/0.9": (b"GET /\r\n\r\n", 505),
    "target too long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "too many headers": (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n", 431),
    "head too large": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n", 431),
    "head too large, unfinished": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70000, 431),
}


def _make_test(request: bytes, status: int):  # type: ignore[no-untyped-def]
    @asyncio_test
    async def test(self: unittest.TestCase) -> None:
        server = await serve(self, hello_app)
        response = await exchange(server.port, request)  # returns only once the server closed
        self.assertTrue(response.startswith(b"HTTP/1.1 %d " % status), response[:200])
        self.assertIn(b"connection: close\r\n", response)
        self.assertEqual(response.count(b"HTTP/1.1 "), 1, "one request must get exactly one response")
        after = await exchange(server.port, GOOD)
        self.assertTrue(after.startswith(b"HTTP/1.1 200 OK"), "the server stopped serving others")

    return test


class BadRequestTests(unittest.TestCase):
    locals().update(
        {f"test_{name.replace(' ', '_').replace(',', '').replace('/', '_')}": _make_test(request, status)
         for name, (request, status) in CASES.items()}
    )

    @asyncio_test
    async def test_bad_request_after_good_pipelined_one_answers_both_in_order(self) -> None:
        server = await serve(self, hello_app)
        response = await exchange(server.port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET\r\n\r\n")
        first, _, second = response.partition(b"hello /ok ")
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK"))
        self.assertTrue(second.startswith(b"HTTP/1.1 400 "), second)

    @asyncio_test
    async def test_trailing_whitespace_in_header_values_is_stripped(self) -> None:
        seen = []

        async def app(scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] == "http":
                seen.append(dict(scope["headers"])[b"x-pad"])
            await hello_app(scope, receive, send)

        server = await serve(self, app)
        await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: \t v  \t\r\nConnection: close\r\n\r\n")
        self.assertEqual(seen, [b"v"])

    @asyncio_test
    async def test_unsupported_upgrade_is_served_as_http11_and_parsing_continues(self) -> None:
        server = await serve(self, hello_app)
        response = await exchange(server.port,
                                  b"GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n"
                                  + GOOD)
        self.assertIn(b"hello /up ", response)
        self.assertTrue(response.endswith(b"hello /after "))


class SlowClientTests(unittest.TestCase):
    @asyncio_test
    async def test_slowloris_head_is_cut_off(self) -> None:
        server = await serve(self, hello_app, request_head_timeout=0.2)
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        self.assertEqual(data, b"")  # closed without a response
        await released(server)

    @asyncio_test
    async def test_idle_keep_alive_connection_is_closed(self) -> None:
        server = await serve(self, hello_app, keep_alive_timeout=0.2)
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), TIMEOUT)  # ends when the server closes
        writer.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"))
        self.assertTrue(data.endswith(b"hello / "))

    @asyncio_test
    async def test_connection_limit_answers_503_and_recovers(self) -> None:
        server = await serve(self, hello_app, max_connections=2)
        held = [await connect(server.port) for _ in range(2)]
        for _, writer in held:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for reader, _ in held:
            await asyncio.wait_for(reader.readuntil(b"hello / "), TIMEOUT)
        refused = await exchange(server.port, GOOD)
        self.assertTrue(refused.startswith(b"HTTP/1.1 503 "), refused)
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
        factory = server.service.factory
        while factory.connections:
            await asyncio.sleep(0.01)  # the server sees the closes on its next reads
        after = await exchange(server.port, GOOD)
        self.assertTrue(after.startswith(b"HTTP/1.1 200 OK"))


class HeadLimitTests(unittest.TestCase):
    @asyncio_test
    async def test_a_head_split_after_a_large_body_in_the_same_read_is_not_431(self) -> None:
        server = await serve(self, hello_app)
        reader, writer = await connect(server.port)
        body = b"b" * 20000
        writer.write(b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                     + b"GET /two HTTP/1.1\r\nHo")
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"hello /one "), TIMEOUT)
        writer.write(b"st: x\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        self.assertTrue(rest.endswith(b"hello /two "), rest)
