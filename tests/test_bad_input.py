"""Malformed and hostile HTTP/1.1 input, over raw sockets: the right 4xx, a clean close,
and the server still serving everyone else."""

from __future__ import annotations

import asyncio

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, connect, exchange, hello_app, released, until_closed

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
    # Before, each of these was served (RFC 9112 sections 3.2, 3.2.4, 6.1; RFC 9110 section 9.1).
    "Host with a space": (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    "Host with userinfo": (b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    "Host with a path": (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    "fragment in the target": (b"GET /a#frag?x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "asterisk target for GET": (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "CONNECT with an origin-form target": (b"CONNECT /a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "CONNECT to an authority": (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
    "gzip then chunked": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                          b"3\r\nabc\r\n0\r\n\r\n", 501),
    "gzip then chunked, in two fields": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
                                         b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),
    "a second, empty Host": (b"GET / HTTP/1.1\r\nHost: x\r\nHost: \r\n\r\n", 400),
    "unregistered method PURGEX": (b"PURGEX / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    "unregistered method FOO": (b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
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


class ValidInputTests(unittest.TestCase):
    @asyncio_test
    async def test_whitespace_before_a_chunk_extension_is_valid(self) -> None:
        """RFC 9112 section 7.1.1 allows it (BWS); before, it got 400."""
        server = await serve(self, hello_app)
        response = await exchange(server.port, b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                               b"Connection: close\r\n\r\n3 ;a=b\r\nabc\r\n0\r\n\r\n")
        self.assertTrue(response.endswith(b"hello /c abc"), response)

    @asyncio_test
    async def test_an_absolute_form_target_replaces_host(self) -> None:
        """RFC 9112 section 3.2.2: the target's authority, not the Host header, is the host."""
        hosts = []

        async def app(scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] == "http":
                hosts.append([value for name, value in scope["headers"] if name == b"host"])
            await hello_app(scope, receive, send)

        server = await serve(self, app)
        response = await exchange(server.port, b"GET http://real.example:8080/p?q=1 HTTP/1.1\r\n"
                                               b"Host: other.example\r\nConnection: close\r\n\r\n")
        self.assertTrue(response.endswith(b"hello /p "), response)
        self.assertEqual(hosts, [[b"real.example:8080"]])

    @asyncio_test
    async def test_an_h2c_upgrade_with_undecodable_settings_stays_http11(self) -> None:
        """Before, the upgrade went ahead with an HTTP2-Settings that is not base64url."""
        server = await serve(self, hello_app)
        response = await exchange(server.port, b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                                               b"Upgrade: h2c\r\nHTTP2-Settings: !!not*base64!!\r\n\r\n" + GOOD)
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response)
        self.assertNotIn(b"101", response.split(b"\r\n")[0])


class LingeringCloseTests(unittest.TestCase):
    @asyncio_test
    async def test_a_client_still_sending_reads_its_431(self) -> None:
        """Before, a 200 KB header line got a TCP reset before the client could read its 431:
        the server closed with the rest of the line unread."""
        server = await serve(self, hello_app)
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n")
        await writer.drain()
        data, reset = await until_closed(reader)
        writer.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 431 "), data[:100])
        self.assertFalse(reset)
        await released(server)

    @asyncio_test
    async def test_the_linger_ends_within_the_close_timeout(self) -> None:
        server = await serve(self, hello_app, close_timeout=0.3)
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n")
        self.assertTrue((await asyncio.wait_for(reader.readuntil(b"too large\n"), TIMEOUT)).startswith(b"HTTP/1.1 431"))
        await released(server)  # the client neither closes nor sends: the server is done all the same
        writer.close()


class BodyTimeoutTests(unittest.TestCase):
    @asyncio_test
    async def test_a_body_that_stops_coming_gets_408(self) -> None:
        """Before, a head followed by no body held the connection until the client left."""
        server = await serve(self, hello_app, body_timeout=0.3)
        reader, writer = await connect(server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")  # and no more
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)
        await released(server)

    @asyncio_test
    async def test_a_body_that_stops_after_the_response_began_is_cut(self) -> None:
        async def app(scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"streaming", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass

        server = await serve(self, app, body_timeout=0.3)
        reader, writer = await connect(server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        data, _ = await until_closed(reader)
        writer.close()
        self.assertIn(b"9\r\nstreaming\r\n", data)
        self.assertFalse(data.endswith(b"0\r\n\r\n"))  # no last chunk: cut
        await released(server)

    @asyncio_test
    async def test_an_app_that_does_not_read_is_not_the_clients_fault(self) -> None:
        release = asyncio.Event()

        async def app(scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] != "http":
                return
            await release.wait()  # reads nothing for a while: the socket is paused
            await hello_app(scope, receive, send)

        server = await serve(self, app, body_timeout=0.2, body_buffer_size=1024)
        reader, writer = await connect(server.port)
        body = b"z" * 4096
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                     + body)
        await asyncio.sleep(0.6)  # three body timeouts while the app, not the client, holds the body up
        release.set()
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 200 ") and data.endswith(body), data[:100])


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
