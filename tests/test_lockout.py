"""Nobody can lock the server out: every connection the server is done with reaches
``connectionLost`` and gives its slot and its descriptor back, whatever the client does.

Each test counts the connection slots (the factory's open connections) and this process's
open file descriptors (the server runs in the test process) before and after, and ends
with a fresh client served. The limit of connections is small, so a leak of a few slots
is a 503 for everyone after.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import ssl
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from hello_asgi.testing import TestServer, asyncio_test, serve
from hello_asgi.tls import development_certificate

from .support import TIMEOUT, connect, exchange, open_descriptors, released

LIMIT = 5  # connections: a leak of five is a 503 for everyone
GOOD = b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
BAD_REQUESTS = [
    b"BAD REQUEST\r\n\r\n",  # 400
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",  # 431
    b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",  # 505
]


async def unread_body_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers at once, reading none of the request body."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class Released(unittest.TestCase):
    """Shared checks: slots and descriptors back where they were, and a fresh client served."""

    async def assert_released(self, server: TestServer, descriptors: int) -> None:
        await released(server)
        self.assertLessEqual(open_descriptors(), descriptors)

    async def assert_still_serving(self, server: TestServer) -> None:
        response = await exchange(server.port, GOOD)
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "), response[:100])


class TLSTests(Released):
    def setUp(self) -> None:
        self.cert, self.key, _ = development_certificate(Path(self.mktemp()))
        self.context = ssl.create_default_context(cafile=str(self.cert))

    def serve_tls(self, app: Any, **settings: Any) -> TestServer:
        return serve(self, app, certfile=str(self.cert), keyfile=str(self.key), max_connections=LIMIT, **settings)

    @asyncio_test
    async def test_error_responses_over_tls_give_their_connections_back(self) -> None:
        """Before: the connection stayed in CLOSE-WAIT once the client closed (the error
        response paused reading, so the client's close was never read): five of them and
        every client got 503."""
        server = await self.serve_tls(unread_body_app)
        descriptors = open_descriptors()
        for _ in range(3):  # nine bad requests against a limit of five
            for request in BAD_REQUESTS:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=self.context,
                                                               server_hostname="localhost")
                writer.write(request)
                response = await asyncio.wait_for(reader.read(), TIMEOUT)
                self.assertRegex(response[:12], rb"HTTP/1.1 (4\d\d|50[15])")
                writer.close()
                await self.assert_released(server, descriptors)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=self.context,
                                                       server_hostname="localhost")
        writer.write(GOOD)
        self.assertTrue((await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(b"HTTP/1.1 200 "))
        writer.close()

    @asyncio_test
    async def test_a_silent_client_over_tls_is_dropped_within_the_close_timeout(self) -> None:
        """Before: after the keep-alive timeout the server sent close_notify and waited for
        the client's without limit (seen open after 70 s)."""
        server = await self.serve_tls(unread_body_app, keep_alive_timeout=0.2, close_timeout=0.5)
        descriptors = open_descriptors()

        def silent_client() -> ssl.SSLSocket:
            tls = self.context.wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                                           server_hostname="localhost")
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"ok"):
                data += tls.recv(65536)
            return tls  # open, and never read again: the server's close_notify goes unanswered

        clients = [await asyncio.to_thread(silent_client) for _ in range(LIMIT)]
        for client in clients:
            self.addCleanup(client.close)
        await self.assert_released(server, descriptors + LIMIT)  # the clients' own sockets remain
        await self.assert_still_serving_tls(server)

    async def assert_still_serving_tls(self, server: TestServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=self.context,
                                                       server_hostname="localhost")
        writer.write(GOOD)
        self.assertTrue((await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(b"HTTP/1.1 200 "))
        writer.close()


class UnreadBodyTests(Released):
    @asyncio_test
    async def test_a_body_the_app_ignores_is_drained_and_the_connection_kept(self) -> None:
        """Before: with any unread body over about 128 KB the keep-alive timer was never
        armed again and the connection was never read again: when the client closed, the
        descriptor and the slot leaked."""
        server = await serve(self, unread_body_app, max_connections=LIMIT)
        descriptors = open_descriptors()
        body = b"x" * 140000
        for _ in range(LIMIT + 2):
            reader, writer = await connect(server.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            first = await asyncio.wait_for(reader.readuntil(b"ok"), TIMEOUT)
            self.assertTrue(first.startswith(b"HTTP/1.1 200 "))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection serves on
            self.assertTrue((await asyncio.wait_for(reader.readuntil(b"ok"), TIMEOUT)).startswith(b"HTTP/1.1 200 "))
            writer.close()
            await self.assert_released(server, descriptors)
        await self.assert_still_serving(server)

    @asyncio_test
    async def test_a_drained_connection_left_idle_times_out(self) -> None:
        server = await serve(self, unread_body_app, max_connections=LIMIT, keep_alive_timeout=0.2)
        reader, writer = await connect(server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 140000\r\n\r\n" + b"x" * 140000)
        data = await asyncio.wait_for(reader.read(), TIMEOUT)  # ends with the keep-alive timeout
        self.assertTrue(data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"ok"))
        writer.close()
        await released(server)

    async def upload(self, server: TestServer, head: bytes, body: bytes) -> bytes:
        """Send ``head`` and ``body`` at once, as curl does, and read until the server closes."""
        reader, writer = await connect(server.port)
        writer.write(head + body)
        try:
            data, _ = await asyncio.wait_for(_read_to_end(reader), TIMEOUT)
        finally:
            writer.close()
        return data

    @asyncio_test
    async def test_a_large_upload_the_app_ignores_gets_its_answer_and_a_close(self) -> None:
        """Before: the server stopped reading at about 4 MB and neither closed nor said
        ``Connection: close``: the upload hung for a minute and more."""
        server = await serve(self, unread_body_app, max_connections=LIMIT)
        descriptors = open_descriptors()
        size = 50 * 1024 * 1024
        data = await self.upload(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size,
                                 b"x" * size)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"ok"), data[:100])
        chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
        data = await self.upload(server, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                                 chunk * 320 + b"0\r\n\r\n")  # 20 MiB
        self.assertTrue(data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"ok"), data[:100])
        await self.assert_released(server, descriptors)
        await self.assert_still_serving(server)


async def _read_to_end(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """All the server sent until it closed; whether it ended with a reset (which may cut
    what the client had not read yet)."""
    data = b""
    try:
        while chunk := await reader.read(65536):
            data += chunk
    except ConnectionResetError:
        return data, True
    return data, False


class PipelineTests(Released):
    @asyncio_test
    async def test_a_client_that_never_reads_its_pipelined_responses_is_not_read_either(self) -> None:
        """Before: the server parsed and answered every pipelined request while the client
        read nothing, queueing the responses in memory (RSS grew 60 -> 90 MB in 5 s)."""
        calls = 0
        body = b"r" * 1024

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            nonlocal calls
            calls += 1
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

        server = await serve(self, app)
        reader, writer = await connect(server.port)
        writer.transport.pause_reading()  # type: ignore[attr-defined]  # and never reads
        before = _rss()
        requests = 100_000
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
        # Unbounded, the server answers them all in a few seconds (100 MB of responses).
        for _ in range(30):
            await asyncio.sleep(0.1)  # an observation window: nothing to wait for but time
        self.assertLess(calls, 10_000, "the server answered on while nobody read")  # before: 27,687 in 3 s, and on
        self.assertLess(_rss() - before, 40 * 1024 * 1024)
        connection = next(iter(server.service.factory.connections))
        unsent = connection.transport._unsent  # type: ignore[union-attr]
        self.assertLess(len(unsent or b""), 256 * 1024)
        writer.transport.abort()  # type: ignore[attr-defined]
        await released(server)
        await self.assert_still_serving(server)


def _rss() -> int:
    """This process's resident memory, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()
