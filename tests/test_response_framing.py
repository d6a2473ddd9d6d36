"""The app's response head and its body length, checked once for every protocol: a response
no client could read right never reaches the wire. Before a byte is written it becomes a
500; once the head is out, the response is cut (HTTP/1.1 closes with a reset, HTTP/2 resets
the stream), never ended cleanly on a length other than the one declared."""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.trial import unittest

from hello_asgi.http1_framing import CHUNKED, CLOSE_DELIMITED, LENGTH, NO_BODY, NO_BODY_CHUNKED, framing
from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, H2Client, connect, exchange, until_closed

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


class WriterFailureTests(unittest.TestCase):
    """Whatever makes HTTP/1.1's writing of a response raise, after ``HTTPStream`` has moved
    its state on, must not leave the connection waiting for a response that never comes
    (issue 17: an app's ``content-length: abc`` once made ``int()`` raise there). A body that
    is text, not bytes, still reaches the writer: it must give a 500 while nothing was sent,
    a cut connection once something was, and one log line with the traceback."""

    @staticmethod
    def app_with_text_body(first: Any, second: Any = None) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": first, "more_body": second is not None})
            if second is not None:
                await send({"type": "http.response.body", "body": second})

        return app

    @asyncio_test
    async def test_a_failure_before_anything_is_sent_gives_a_500(self) -> None:
        """Before: no response, and the connection stayed open until the client gave up."""
        for first, second in (("text", None), ("text", b"more")):
            server = await serve(self, self.app_with_text_body(first, second))
            reader, writer = await connect(server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data, _ = await until_closed(reader)  # bounded: TIMEOUT for each read
            writer.close()
            self.assertTrue(data.startswith(b"HTTP/1.1 500 "), data)
            self.assertIn(b"\r\nconnection: close\r\n", data)
            self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    @asyncio_test
    async def test_a_failure_after_the_head_cuts_the_connection(self) -> None:
        """Before: the head and first chunk, then nothing: the chunked body never ended, and
        the connection stayed open."""
        server = await serve(self, self.app_with_text_body(b"part", "text"))
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data, _ = await until_closed(reader)
        writer.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
        self.assertTrue(data.endswith(b"\r\n\r\n4\r\npart\r\n"), data)  # never the last chunk: the client sees it cut
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


# framing(method, version, status, headers, keep_alive, whole, trailers) -> (writer, keep_alive, lines)
_CL = [(b"Content-Length", b"5")]
_TE = [(b"Transfer-Encoding", b"chunked")]
FRAMING_TABLE: list[tuple[str, tuple[Any, ...], tuple[Any, bool, bytes]]] = [
    ("whole body known: its length", ("GET", "1.1", 200, [], True, 5, False), (LENGTH, True, b"content-length: 5\r\n")),
    ("the app's length", ("GET", "1.1", 200, _CL, True, None, False), (LENGTH, True, b"")),
    ("the app's length wins over whole", ("GET", "1.1", 200, _CL, True, 5, False), (LENGTH, True, b"")),
    ("streamed, HTTP/1.1: chunks", ("GET", "1.1", 200, [], True, None, False),
     (CHUNKED, True, b"transfer-encoding: chunked\r\n")),
    ("streamed, HTTP/1.0: to the close", ("GET", "1.0", 200, [], True, None, False),
     (CLOSE_DELIMITED, False, b"connection: close\r\n")),
    ("HTTP/1.0 keep-alive says so", ("GET", "1.0", 200, [], True, 5, False),
     (LENGTH, True, b"content-length: 5\r\nconnection: keep-alive\r\n")),
    ("trailers need chunks, the app's length goes", ("GET", "1.1", 200, _CL, True, None, True),
     (CHUNKED, True, b"transfer-encoding: chunked\r\n")),
    ("no trailers for HTTP/1.0", ("GET", "1.0", 200, _CL, True, None, True),
     (LENGTH, True, b"connection: keep-alive\r\n")),
    ("the app asked for chunks", ("GET", "1.1", 200, _TE, True, 5, False),
     (CHUNKED, True, b"transfer-encoding: chunked\r\n")),
    ("chunks asked of an HTTP/1.0 client: a length", ("GET", "1.0", 200, _TE, True, 5, False),
     (LENGTH, True, b"content-length: 5\r\nconnection: keep-alive\r\n")),
    ("the app's Connection: close", ("GET", "1.1", 200, [(b"Connection", b"Close")], True, 5, False),
     (LENGTH, False, b"content-length: 5\r\nconnection: close\r\n")),
    ("the connection's wish to close", ("GET", "1.1", 200, [], False, 5, False),
     (LENGTH, False, b"content-length: 5\r\nconnection: close\r\n")),
    ("HEAD: GET's fields, no body", ("HEAD", "1.1", 200, _CL, True, 0, False), (NO_BODY, True, b"")),
    ("HEAD answered with a body: its length", ("HEAD", "1.1", 200, [], True, 5, False),
     (NO_BODY, True, b"content-length: 5\r\n")),
    ("HEAD answered empty: no length claimed", ("HEAD", "1.1", 200, [], True, 0, False), (NO_BODY, True, b"")),
    ("HEAD streamed: chunks named", ("HEAD", "1.1", 200, [], True, None, False),
     (NO_BODY_CHUNKED, True, b"transfer-encoding: chunked\r\n")),
    ("HEAD with trailers: chunks named", ("HEAD", "1.1", 200, _CL, True, None, True),
     (NO_BODY_CHUNKED, True, b"transfer-encoding: chunked\r\n")),
    ("204", ("GET", "1.1", 204, _TE, True, 0, False), (NO_BODY, True, b"")),
    ("304 keeps the app's length", ("GET", "1.1", 304, _CL, True, 0, False), (NO_BODY, True, b"")),
    ("1xx", ("GET", "1.1", 103, [], True, None, False), (NO_BODY, True, b"")),
    ("304, HTTP/1.0", ("GET", "1.0", 304, [], True, None, False), (NO_BODY, True, b"connection: keep-alive\r\n")),
]


class FramingTableTests(unittest.TestCase):
    """``http1_framing.framing``, the one decision, case by case in memory."""

    def test_each_case(self) -> None:
        for name, arguments, expected in FRAMING_TABLE:
            self.assertEqual(framing(*arguments), expected, name)

    def test_a_content_length_that_is_no_number_raises(self) -> None:
        for value in (b"abc", b"-1", b"+5", b"5,5", b""):
            with self.assertRaises(ValueError, msg=value):
                framing("GET", "1.1", 200, [(b"content-length", value)], True, None, False)

    def test_the_writers(self) -> None:
        self.assertEqual(CHUNKED.chunk(b"hello"), b"5\r\nhello\r\n")
        self.assertEqual(CHUNKED.last, b"0\r\n\r\n")
        self.assertEqual(CHUNKED.trailers([(b"x-sum", b"1")]), b"0\r\nx-sum: 1\r\n\r\n")
        self.assertEqual(NO_BODY.chunk(b"hello"), b"")
        for writer in (LENGTH, CLOSE_DELIMITED):
            self.assertTrue(writer.raw)
            self.assertEqual(writer.last + writer.trailers([(b"x-sum", b"1")]), b"")
        self.assertFalse(CLOSE_DELIMITED.shows_cut)
        self.assertEqual([writer.chunked_head for writer in (LENGTH, CHUNKED, CLOSE_DELIMITED, NO_BODY, NO_BODY_CHUNKED)],
                         [False, True, False, False, True])  # the app's Content-Length goes where True
        self.assertTrue(LENGTH.shows_cut and CHUNKED.shows_cut and NO_BODY.shows_cut)


class InMemoryWriterFailureTests(unittest.TestCase):
    """Issue 17's defect where it lived: ``write_response`` given ``content-length: abc``
    (as the stream once let through) answers 500 and closes, over a ``StringTransport``."""

    def test_a_bad_content_length_reaching_the_writer_gives_a_500(self) -> None:
        from twisted.internet.testing import StringTransport

        from hello_asgi.factory import ASGIServerFactory
        from hello_asgi.http1 import CLOSING, HTTP11Connection

        async def app(scope: Any, receive: Any, send: Any) -> None:  # never started: no loop runs here
            pass

        connection = HTTP11Connection(ASGIServerFactory(app).context)
        transport = StringTransport()
        connection.makeConnection(transport)
        connection._start = lambda stream: None  # type: ignore[method-assign]  # no app task: we write
        connection.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        stream = connection._streams[0]
        connection.write_response(stream, 200, [(b"content-length", b"abc")], b"x", True)
        written = transport.value()
        self.assertTrue(written.startswith(b"HTTP/1.1 500 "), written)
        self.assertIn(b"connection: close\r\n", written)
        self.assertNotIn(b"abc", written)
        self.assertTrue(stream.disconnected)
        self.assertGreaterEqual(connection._state, CLOSING)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        connection.connectionLost()  # (its deadlines go)


class HeadWithTrailersTests(unittest.TestCase):
    @asyncio_test
    async def test_a_head_response_never_names_both_a_length_and_chunks(self) -> None:
        """HEAD to an app announcing trailers with a Content-Length: GET's head would be
        chunked (trailers need chunks), so the length goes (RFC 9112 section 6.2)."""
        from .test_extensions import extensions_app

        server = await serve(self, extensions_app)
        data = await exchange(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        final = data[data.index(b"HTTP/1.1 200"):]
        self.assertIn(b"\r\ntransfer-encoding: chunked\r\n", final)
        self.assertNotIn(b"content-length", final.lower())
        self.assertTrue(final.endswith(b"\r\n\r\n"), final)  # the head alone
