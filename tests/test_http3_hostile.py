"""Hostile HTTP/3 peers: each is stopped or bounded, and another client is served meanwhile."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from aioquic.quic.connection import QuicConnection
from twisted.trial import unittest

from hello_asgi.http3 import SEND_HIGH
from hello_asgi.testing import TestServer, asyncio_test

from .support import hello_app
from .test_http3 import TIMEOUT, H3Client, client_configuration, h3_client, h3_port, serve_h3


async def still_served(server: TestServer) -> None:
    """Another client gets its answer."""
    async with h3_client(h3_port(server)) as other:
        response = await other.get("/other")
    assert response.status == 200 and bytes(response.body) == b"hello /other ", response


def endpoint_of(server: TestServer) -> Any:
    return server.service.quic[0]


class HostileHTTP3Tests(unittest.TestCase):
    timeout = 60

    @asyncio_test
    async def test_more_streams_than_allowed_closes_that_connection(self) -> None:
        server = await serve_h3(self, hello_app, h3_max_concurrent_streams=10)
        async with h3_client(h3_port(server)) as client:
            client._quic._remote_max_streams_bidi = 1000  # ignore the server's MAX_STREAMS
            for n in range(30):
                client.start("GET", f"/{n}")
            terminated = await asyncio.wait_for(client.terminated, TIMEOUT)
            self.assertEqual(terminated.error_code, 0x4)  # STREAM_LIMIT_ERROR
            await still_served(server)

    @asyncio_test
    async def test_an_oversized_header_block_closes_that_connection(self) -> None:
        server = await serve_h3(self, hello_app, max_head_size=16384)
        async with h3_client(h3_port(server)) as client:
            client.start("GET", "/", headers=[(b"x-big-%d" % n, os.urandom(5_000).hex().encode()) for n in range(4)])
            terminated = await asyncio.wait_for(client.terminated, TIMEOUT)
            self.assertEqual(terminated.error_code, 0x107)  # H3_EXCESSIVE_LOAD
            await still_served(server)

    @asyncio_test
    async def test_many_small_fields_that_add_up_are_refused_with_431(self) -> None:
        server = await serve_h3(self, hello_app, max_head_size=4096, max_request_line=4096)
        async with h3_client(h3_port(server)) as client:
            # Huffman-coded "a"s: 3.4 KB on the wire (under the frame limit), 5.1 KB decoded.
            response = await client.get("/", headers=[(b"x-%d" % n, b"a" * 60) for n in range(80)])
            self.assertEqual(response.status, 431)
            self.assertEqual((await client.get("/next")).status, 200)  # the connection goes on

    @asyncio_test
    async def test_qpack_abuse_closes_that_connection(self) -> None:
        """The server offers no dynamic table: an encoder stream that sets one up, or a header
        block that refers into one, is a QPACK error for that connection alone."""
        server = await serve_h3(self, hello_app)
        async with h3_client(h3_port(server)) as client:
            encoder = client.h3._local_encoder_stream_id
            client._quic.send_stream_data(encoder, b"\x3f\xe1\x1f")  # Set Dynamic Table Capacity 4096
            client.transmit()
            terminated = await asyncio.wait_for(client.terminated, TIMEOUT)
            self.assertEqual(terminated.error_code, 0x201)  # QPACK_ENCODER_STREAM_ERROR
        async with h3_client(h3_port(server)) as client:
            stream_id = client._quic.get_next_available_stream_id()
            # A HEADERS frame whose field section refers to dynamic entry 0 (Required Insert Count 1).
            client._quic.send_stream_data(stream_id, b"\x01\x03\x02\x00\x80", end_stream=True)
            client.transmit()
            terminated = await asyncio.wait_for(client.terminated, TIMEOUT)
            self.assertEqual(terminated.error_code, 0x200)  # QPACK_DECOMPRESSION_FAILED
        await still_served(server)

    @asyncio_test
    async def test_a_flood_of_tiny_datagrams_makes_no_state(self) -> None:
        server = await serve_h3(self, hello_app)
        endpoint = endpoint_of(server)
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(flood.close)
        for n in range(20_000):
            flood.sendto(os.urandom(n % 40 + 1), ("127.0.0.1", h3_port(server)))
            if n % 500 == 0:
                await asyncio.sleep(0)  # let the server read as the flood goes on
        await still_served(server)
        self.assertLessEqual(len(endpoint.connections), 1)  # the other client's, closing
        self.assertLessEqual(len(endpoint._routes), 16)

    @asyncio_test
    async def test_junk_initials_are_bounded_and_dropped(self) -> None:
        """Initial-sized garbage with a valid long header starts a connection that cannot
        complete: at most max_connections of them, each dropped at the handshake timeout."""
        server = await serve_h3(self, hello_app, max_connections=20, request_head_timeout=1.0)
        endpoint = endpoint_of(server)
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(junk.close)
        for _ in range(200):
            dcid, scid = os.urandom(8), os.urandom(8)
            header = b"\xc3\x00\x00\x00\x01" + b"\x08" + dcid + b"\x08" + scid + b"\x00" + b"\x44\xd0"
            junk.sendto(header + os.urandom(1200 - len(header)), ("127.0.0.1", h3_port(server)))
        for _ in range(5):
            await asyncio.sleep(0)
        self.assertLessEqual(len(endpoint.connections), 20)
        await asyncio.wait_for(endpoint.drained(), TIMEOUT)  # each dropped at its handshake timeout
        self.assertEqual(len(endpoint.connections), 0)
        await still_served(server)

    @asyncio_test
    async def test_a_handshake_that_never_completes_is_dropped(self) -> None:
        server = await serve_h3(self, hello_app, request_head_timeout=1.0)
        endpoint = endpoint_of(server)
        quic = QuicConnection(configuration=client_configuration())
        quic.connect(("127.0.0.1", h3_port(server)), now=0.0)
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(silent.close)
        for data, _ in quic.datagrams_to_send(now=0.0):
            silent.sendto(data, ("127.0.0.1", h3_port(server)))  # its first flight, then nothing
        await still_served(server)
        # The silent one is held still (the other client's may not have been seen to close yet).
        self.assertEqual(len([c for c in endpoint._serving if c._connection is None]), 1)
        await asyncio.wait_for(endpoint.drained(), TIMEOUT)
        self.assertEqual(len(endpoint._serving), 0)

    @asyncio_test
    async def test_a_client_that_never_opens_its_window(self) -> None:
        """send() waits instead of buffering the response; the stream is reset at the stall
        timeout and the app hears the client is gone."""
        chunk = 64 * 1024
        sent = [0]
        peak = [0]
        ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        async def endless(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/other":
                await hello_app(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 200})
            connection = next(c for c in endpoint_of(server).connections if c._streams)
            try:
                for _ in range(1000):  # 64 MB, if it were all taken
                    await send({"type": "http.response.body", "body": b"z" * chunk, "more_body": True})
                    sent[0] += chunk
                    quic_stream = connection.quic._streams.get(0)
                    if quic_stream is not None:
                        peak[0] = max(peak[0], len(quic_stream.sender._buffer))
            except OSError as error:
                ended.set_result(error)
                raise
            ended.set_result(None)

        server = await serve_h3(self, endless, h3_stall_timeout=1.0)
        configuration = client_configuration(max_stream_data=16384)

        class Stingy(H3Client):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._quic._write_stream_limits = lambda *args, **kwargs: None  # never raises MAX_STREAM_DATA

        from aioquic.asyncio.client import connect

        async with connect("127.0.0.1", h3_port(server), configuration=configuration, create_protocol=Stingy) as client:
            stream_id = client.start("GET", "/endless")  # type: ignore[attr-defined]
            error = await asyncio.wait_for(ended, TIMEOUT)
            response = await client.response(stream_id)  # type: ignore[attr-defined]
        self.assertIsInstance(error, OSError)  # ClientDisconnected
        self.assertEqual(response.reset, 0x10C)  # H3_REQUEST_CANCELLED
        self.assertLessEqual(sent[0], 16384 + SEND_HIGH + chunk)
        self.assertLessEqual(peak[0], SEND_HIGH + chunk)
        await still_served(server)
