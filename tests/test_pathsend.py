"""The ``http.response.pathsend`` extension: a file as the whole body, by ``os.sendfile`` over
cleartext HTTP/1.1 and read in chunks with backpressure over TLS and HTTP/2, its length
held to the Content-Length, and the file closed however the exchange ends."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from hello_asgi.stream import ClientDisconnected
from hello_asgi.testing import asyncio_test, serve
from hello_asgi.tls import development_certificate
from hello_asgi.transport import SendfileCounter, SocketTransport

from .support import TIMEOUT, H2Client, connect, exchange, header, parse_responses

SMALL = 3 * 1024 * 1024 + 17  # more than one read of the fallback, and not a multiple of it
LARGE = 32 * 1024 * 1024  # far more than the kernel's socket buffers hold for a client that does not read


def files_open(path: Path) -> int:
    """How many descriptors this process (the server) holds on ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            continue  # closed while listed (the listing's own descriptor)
    return count


class FileApp:
    """Sends ``path`` with pathsend; records what happened and when it finished."""

    def __init__(self, path: Path, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.path = path
        self.headers = headers if headers is not None else [(b"content-type", b"application/octet-stream")]
        self.done = asyncio.Event()
        self.error: BaseException | None = None
        self.extensions: dict[str, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.extensions = scope["extensions"]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            await send({"type": "http.response.pathsend", "path": str(self.path)})
        except BaseException as error:
            self.error = error
            raise
        finally:
            self.done.set()


async def observed(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)  # an observation window: ample for the file to go if nothing held it


class PathsendTests(unittest.TestCase):
    def file(self, size: int, random: bool = True) -> tuple[Path, bytes]:
        path = Path(self.mktemp())
        content = os.urandom(size) if random else bytes(range(256)) * (size // 256)
        path.write_bytes(content)
        return path.resolve(), content

    def tls(self) -> tuple[dict[str, str], ssl.SSLContext]:
        cert, key, _ = development_certificate(Path(self.mktemp()))
        context = ssl.create_default_context(cafile=str(cert))
        return {"certfile": str(cert), "keyfile": str(key)}, context

    def server_transport(self, server: Any) -> Any:
        (connection,) = server.service.factory.connections
        return connection.transport

    @asyncio_test
    async def test_http11_cleartext_goes_by_sendfile_and_arrives_whole_twice_on_one_connection(self) -> None:
        path, content = self.file(SMALL)
        app = FileApp(path)  # no Content-Length: the file's size becomes it
        server = await serve(self, app)
        before = SendfileCounter.sent
        request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        responses = parse_responses(await exchange(server.port, request), [b"GET", b"GET"])
        self.assertEqual(len(responses), 2)
        for response, body in responses:
            self.assertEqual(response.status_code, 200)
            self.assertEqual(header(response, b"content-length"), b"%d" % SMALL)
            self.assertEqual(body, content)
        self.assertEqual(SendfileCounter.sent - before, 2 * SMALL)
        self.assertIn("http.response.pathsend", app.extensions)
        self.assertEqual(files_open(path), 0)

    @asyncio_test
    async def test_head_gets_the_length_and_no_body(self) -> None:
        path, _ = self.file(SMALL)
        app = FileApp(path)
        server = await serve(self, app)
        data = await exchange(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ((response, body),) = parse_responses(data, [b"HEAD"])
        self.assertEqual((response.status_code, body), (200, b""))
        self.assertEqual(header(response, b"content-length"), b"%d" % SMALL)
        self.assertTrue(data.endswith(b"\r\n\r\n"))
        self.assertEqual(files_open(path), 0)

    @asyncio_test
    async def test_http11_over_tls_reads_the_file(self) -> None:
        path, content = self.file(SMALL)
        app = FileApp(path, [(b"content-length", b"%d" % SMALL)])
        settings, context = self.tls()
        server = await serve(self, app, **settings)
        before = SendfileCounter.sent
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context,
                                                       server_hostname="localhost")
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        ((response, body),) = parse_responses(data)
        self.assertEqual((response.status_code, body), (200, content))
        self.assertEqual(SendfileCounter.sent, before)  # TLS: no sendfile
        await asyncio.wait_for(app.done.wait(), TIMEOUT)
        self.assertEqual(files_open(path), 0)

    @asyncio_test
    async def test_h2c_reads_the_file(self) -> None:
        path, content = self.file(SMALL)
        app = FileApp(path)
        server = await serve(self, app)
        before = SendfileCounter.sent
        client = await H2Client.open(server.port)
        headers, body = await client.response(client.request("/"))
        client.close()
        self.assertEqual(headers[b":status"], b"200")
        self.assertEqual(headers[b"content-length"], b"%d" % SMALL)
        self.assertEqual(body, content)
        self.assertEqual(SendfileCounter.sent, before)
        self.assertEqual(files_open(path), 0)

    @asyncio_test
    async def test_h2_over_tls_reads_the_file(self) -> None:
        path, content = self.file(SMALL)
        app = FileApp(path)
        settings, context = self.tls()
        context.set_alpn_protocols(["h2"])
        server = await serve(self, app, **settings)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context,
                                                       server_hostname="localhost")
        client = H2Client(reader, writer)
        headers, body = await client.response(client.request("/"))
        client.close()
        self.assertEqual((headers[b":status"], body), (b"200", content))
        self.assertEqual(files_open(path), 0)

    @asyncio_test
    async def test_a_client_that_stops_reading_stops_sendfile_and_nothing_is_buffered(self) -> None:
        path, content = self.file(LARGE, random=False)
        app = FileApp(path)
        server = await serve(self, app)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=65536)  # reads ~128 KiB ahead, no more
        self.addCleanup(writer.close)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await observed()
        progress = SendfileCounter.sent
        await observed()
        self.assertEqual(SendfileCounter.sent, progress)  # stopped, with the client
        self.assertFalse(app.done.is_set())
        transport = self.server_transport(server)
        self.assertIsInstance(transport, SocketTransport)
        self.assertIsNone(transport._unsent)  # the kernel holds what is in flight; the server nothing
        body = await asyncio.wait_for(reader.readexactly(LARGE), TIMEOUT)
        self.assertEqual(body, content)
        await asyncio.wait_for(app.done.wait(), TIMEOUT)
        self.assertIsNone(app.error)
        self.assertEqual(files_open(path), 0)

    @asyncio_test
    async def test_an_h2_client_that_stops_reading_holds_at_most_one_read_of_the_file(self) -> None:
        from hello_asgi.stream import FILE_CHUNK

        path, content = self.file(SMALL, random=False)
        app = FileApp(path)
        server = await serve(self, app)
        client = await H2Client.open(server.port)
        stream_id = client.request("/")  # the client's windows (64 KiB) are never opened until it reads
        await observed()
        (connection,) = server.service.factory.connections
        queued = connection.inner._streams[stream_id].pending
        self.assertLessEqual(len(queued), FILE_CHUNK)
        self.assertFalse(app.done.is_set())
        _, body = await client.response(stream_id)
        client.close()
        self.assertEqual(body, content)
        await asyncio.wait_for(app.done.wait(), TIMEOUT)
        self.assertEqual(files_open(path), 0)

    @asyncio_test
    async def test_a_client_gone_mid_file_closes_it_over_sendfile(self) -> None:
        path, _ = self.file(LARGE, random=False)
        app = FileApp(path)
        server = await serve(self, app)
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readexactly(1024 * 1024)
        self.assertEqual(files_open(path), 1)  # still sending
        writer.transport.abort()  # type: ignore[attr-defined]
        await asyncio.wait_for(app.done.wait(), TIMEOUT)
        self.assertIsInstance(app.error, ClientDisconnected)
        self.assertEqual(files_open(path), 0)

    @asyncio_test
    async def test_a_client_gone_mid_file_closes_it_over_h2(self) -> None:
        from h2.errors import ErrorCodes

        path, _ = self.file(SMALL, random=False)
        app = FileApp(path)
        server = await serve(self, app)
        client = await H2Client.open(server.port)
        stream_id = client.request("/")
        while len(client.bodies.get(stream_id, b"")) < 1024 * 1024:
            await client.pump()
        self.assertEqual(files_open(path), 1)
        client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.flush()
        await asyncio.wait_for(app.done.wait(), TIMEOUT)
        client.close()
        self.assertIsInstance(app.error, ClientDisconnected)
        self.assertEqual(files_open(path), 0)

    @asyncio_test
    async def test_a_content_length_the_file_does_not_have_is_a_500(self) -> None:
        path, _ = self.file(20)
        app = FileApp(path, [(b"content-length", b"10")])
        server = await serve(self, app)
        data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ((response, body),) = parse_responses(data)
        self.assertEqual((response.status_code, body), (500, b"Internal Server Error"))
        self.assertIn("Content-Length", str(app.error))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(files_open(path), 0)

    @asyncio_test
    async def test_a_missing_file_is_a_500_and_pathsend_needs_a_started_response(self) -> None:
        app = FileApp(Path(self.mktemp()))
        server = await serve(self, app)
        data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(parse_responses(data)[0][0].status_code, 500)
        self.assertEqual(len(self.flushLoggedErrors(FileNotFoundError)), 1)

        async def early(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                await send({"type": "http.response.pathsend", "path": "/dev/null"})

        server = await serve(self, early)
        data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(parse_responses(data)[0][0].status_code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
