"""The app's response head and its body length, checked once for every protocol: a response
no client could read right never reaches the wire. Before a byte is written it becomes a
500; once the head is out, the response is cut (HTTP/1.1 closes with a reset, HTTP/2 resets
the stream), never ended cleanly on a length other than the one declared."""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, H2Client, connect, until_closed

# Each app response, as (status, headers, body chunks); all are refused before anything is written.
REFUSED: dict[str, tuple[int, list[tuple[bytes, bytes]], list[bytes]]] = {
    "status 600": (600, [], [b"x"]),
    "status 999": (999, [], [b"x"]),
    "Content-Length abc": (200, [(b"content-length", b"abc")], [b"x"]),
    "Content-Length 5,5": (200, [(b"content-length", b"5,5")], [b"hello"]),
    "Content-Length -1": (200, [(b"content-length", b"-1")], [b"abcd"]),
    "Content-Length +5": (200, [(b"content-length", b"+5")], [b"hello"]),
    "two Content-Lengths": (200, [(b"content-length", b"5"), (b"content-length", b"2")], [b"hello"]),
    "more body than declared": (200, [(b"content-length", b"2")], [b"hello"]),
    "less body than declared": (200, [(b"content-length", b"10")], [b"hello"]),
}


def app_sending(status: int, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/good":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"good"})
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for index, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": index < len(chunks) - 1})

    return app


class HTTP11Tests(unittest.TestCase):
    @asyncio_test
    async def test_malformed_responses_become_a_500_promptly(self) -> None:
        """Before: ``abc`` and ``5,5`` gave no response and a connection open 20 s and more;
        ``-1``, ``+5`` and two values reached the wire, with keep-alive."""
        for name, (status, headers, chunks) in REFUSED.items():
            server = await serve(self, app_sending(status, headers, chunks))
            reader, writer = await connect(server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive asked
            data, _ = await until_closed(reader)  # the 500 closes the connection
            writer.close()
            self.assertTrue(data.startswith(b"HTTP/1.1 500 "), (name, data))
            self.assertEqual(data.count(b"HTTP/1.1"), 1, name)
        self.flushLoggedErrors(ValueError, RuntimeError)

    @asyncio_test
    async def test_more_or_less_body_after_the_head_cuts_the_connection(self) -> None:
        for declared, chunks in ((b"4", [b"ab", b"cdef"]), (b"10", [b"ab", b"cd"])):
            server = await serve(self, app_sending(200, [(b"content-length", declared)], chunks))
            reader, writer = await connect(server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data, _ = await until_closed(reader)
            writer.close()
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "))
            # Never the bytes past the length; the close comes short of it, which the client sees.
            self.assertIn(b"content-length: %s\r\n" % declared, data)
            self.assertTrue(data.endswith(b"\r\n\r\nab"), data)
        self.flushLoggedErrors(RuntimeError)

    @asyncio_test
    async def test_a_204_goes_without_content_length_or_body(self) -> None:
        server = await serve(self, app_sending(204, [(b"content-length", b"0")], [b"dropped"]))
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /good HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.readuntil(b"good"), TIMEOUT)
        writer.close()
        first, _, second = data.partition(b"\r\n\r\n")
        self.assertTrue(first.startswith(b"HTTP/1.1 204 "))
        self.assertNotIn(b"content-length", first.lower())
        self.assertTrue(second.startswith(b"HTTP/1.1 200 "), data)  # no body between: the next response


class HTTP2Tests(unittest.TestCase):
    @asyncio_test
    async def test_malformed_responses_become_a_500(self) -> None:
        """Before: Content-Length 2 with 5 bytes of DATA, 10 with 5 and a clean END_STREAM,
        ``abc``, two values, and ``:status 600`` all went out."""
        for name, (status, headers, chunks) in REFUSED.items():
            server = await serve(self, app_sending(status, headers, chunks))
            client = await H2Client.open(server.port)
            response, body = await client.response(client.request("/"))
            self.assertEqual(response[b":status"], b"500", name)
            _, good = await client.response(client.request("/good"))  # the connection serves on
            self.assertEqual(good, b"good")
            client.close()
        self.flushLoggedErrors(ValueError, RuntimeError)

    @asyncio_test
    async def test_more_or_less_body_after_the_head_resets_the_stream(self) -> None:
        for declared, chunks in ((b"4", [b"ab", b"cdef"]), (b"10", [b"ab", b"cd"])):
            server = await serve(self, app_sending(200, [(b"content-length", declared)], chunks))
            client = await H2Client.open(server.port)
            stream_id = client.request("/")
            while stream_id not in client.resets and stream_id not in client.ended:
                await client.pump()
            self.assertIn(stream_id, client.resets)  # never a clean END_STREAM
            self.assertEqual(client.bodies.get(stream_id), b"ab")
            client.close()
        self.flushLoggedErrors(RuntimeError)

    @asyncio_test
    async def test_a_204_and_te_go_without_what_http2_forbids(self) -> None:
        server = await serve(self, app_sending(204, [(b"content-length", b"0"), (b"te", b"trailers")], [b"x"]))
        client = await H2Client.open(server.port)
        headers, body = await client.response(client.request("/"))
        client.close()
        self.assertEqual(headers[b":status"], b"204")
        self.assertNotIn(b"content-length", headers)
        self.assertNotIn(b"te", headers)  # RFC 9113 section 8.2.2
        self.assertEqual(body, b"")


class CutCloseDelimitedTests(unittest.TestCase):
    @asyncio_test
    async def test_a_cut_close_delimited_response_is_reset(self) -> None:
        """An HTTP/1.0 response without a length ends at the close: cut, it must be a reset,
        or the client would take what it got for the whole response."""
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise ValueError("cut")

        server = await serve(self, app)
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        _, reset = await until_closed(reader)
        writer.close()
        self.assertTrue(reset)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
