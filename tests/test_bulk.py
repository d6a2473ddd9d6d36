"""Bulk transfers: what keeps a large response cheap and its memory bounded, over TLS and
HTTP/2 (pathsend has ``test_pathsend.py``, the DATA fast paths ``test_h2_engine.py``)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve
from hello_asgi.tls import development_certificate
from hello_asgi.transport import SocketTransport

from .support import TIMEOUT, H2Client, parse_responses

MIB = 1024 * 1024


class Sender:
    """Sends ``chunks`` chunks of 64 KiB without ever waiting for anything but ``send()``."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.sent = 0
        self.done = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunk = b"c" * 65536
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % (self.chunks * len(chunk)))]})
            for _ in range(self.chunks):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.sent += 1
            await send({"type": "http.response.body", "body": b""})
        finally:
            self.done.set()


class BulkTests(unittest.TestCase):
    @asyncio_test
    async def test_the_tls_records_of_one_write_leave_in_one_transport_write(self) -> None:
        writes: list[int] = []
        original = SocketTransport.write

        def counted(transport: SocketTransport, data: bytes) -> None:
            writes.append(len(data))
            original(transport, data)

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":  # small writes are gathered, a large one is not: the order holds
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"%d" % (MIB + 6))]})
                await send({"type": "http.response.body", "body": b"abc", "more_body": True})
                await send({"type": "http.response.body", "body": b"t" * MIB, "more_body": True})
                await send({"type": "http.response.body", "body": b"xyz"})

        cert, key, _ = development_certificate(Path(self.mktemp()))
        server = await serve(self, app, certfile=str(cert), keyfile=str(key))
        context = ssl.create_default_context(cafile=str(cert))
        context.set_alpn_protocols(["http/1.1"])
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context,
                                                       server_hostname="localhost")
        self.patch(SocketTransport, "write", counted)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        self.assertEqual(parse_responses(data)[0][1], b"abc" + b"t" * MIB + b"xyz")
        self.assertLessEqual(len([size for size in writes if size > 16384]), 2)  # not 64 records, one each
        self.assertGreater(max(writes), MIB)

    @asyncio_test
    async def test_an_h2_app_that_never_waits_is_held_back_by_a_client_that_does_not_read(self) -> None:
        """The client opens its windows wide and reads nothing: the app's ``send()`` must still
        wait, with little held in the server, rather than pile its whole body into memory."""
        from h2.settings import SettingCodes

        app = Sender(128)  # 8 MiB: more than the (small) socket buffers both ends hold
        server = await serve(self, app)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        client = H2Client(*await asyncio.open_connection(sock=sock))
        while not server.service.factory.connections:
            await asyncio.sleep(0)  # accepted on the loop's next turn
        (connection,) = server.service.factory.connections
        connection.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        client.conn.increment_flow_control_window(2**31 - 1 - 65535)
        stream_id = client.request("/")
        await asyncio.sleep(0.5)  # an observation window: the app sends all if nothing holds it back
        self.assertFalse(app.done.is_set())
        transport = connection.transport
        held = len(transport._unsent or b"") + connection.inner._h2.queued
        self.assertLess(held, 1 * MIB)
        self.assertLess(app.sent, 128)
        client.auto_ack = True
        _, body = await client.response(stream_id)
        client.close()
        self.assertEqual(len(body), 8 * MIB)
        await asyncio.wait_for(app.done.wait(), TIMEOUT)
