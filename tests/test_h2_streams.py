"""HTTP/2 streams as records (h2_stream.py): one way in, one way out, nothing left behind,
flow control that holds through a graceful shutdown, and app errors confined to their
stream; driven over loopback by an h2-library client."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from h2.errors import ErrorCodes
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from hello_asgi.h2_stream import H2Stream
from hello_asgi.stream import HTTPStream
from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, H2Client, hello_app
from .test_websocket_h2 import CONNECT, pump_until

CHUNK = 65536


def protocol_of(server: Any) -> Any:
    """The HTTP/2 protocol of the server's one connection."""
    (connection,) = server.service.factory.connections
    return connection.inner


async def ended(client: H2Client, *stream_ids: int) -> None:
    """Pump until each stream ended or was reset."""
    await pump_until(client, lambda: all(s in client.ended or s in client.resets for s in stream_ids))


class ContentLengthTests(unittest.TestCase):
    """Issue 17's defect, checked over HTTP/2: a response the app frames wrong is a 500 while
    nothing of it went out, else a reset stream; logged once, the connection's other
    streams served."""

    @asyncio_test
    async def test_a_wrong_content_length_gives_500_or_a_reset_stream_and_others_go_on(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            path = scope["path"]
            if path == "/abc":
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"abc")]})
                await send({"type": "http.response.body", "body": b"abc"})
            elif path == "/hint-then-abc":
                await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload"]})
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"abc")]})
            elif path == "/over":
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
                await send({"type": "http.response.body", "body": b"abc", "more_body": True})
                await send({"type": "http.response.body", "body": b"defgh"})  # 3 bytes more than promised
            else:
                await hello_app(scope, receive, send)

        errors: list[dict[str, Any]] = []
        warnings: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "hello_asgi.app":
                errors.append(event)
            elif event.get("log_namespace") == "hello_asgi.http2":
                warnings.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        server = await serve(self, app)
        client = await H2Client.open(server.port)
        abc, hinted, over, fine = (client.request(path) for path in ("/abc", "/hint-then-abc", "/over", "/fine"))
        await ended(client, abc, hinted, over, fine)
        for stream_id in (abc, hinted):
            headers, body = await client.response(stream_id)
            self.assertEqual((headers[b":status"], body), (b"500", b"Internal Server Error"))
        self.assertEqual(client.informational[hinted][0][0], (b":status", b"103"))
        self.assertEqual(client.resets[over], ErrorCodes.INTERNAL_ERROR)
        self.assertEqual(client.bodies.get(over, b""), b"abc")
        _, body = await client.response(fine)
        self.assertEqual(body, b"hello /fine ")
        again = client.request("/again")  # the connection carries on
        _, body = await client.response(again)
        client.close()
        self.assertIsNone(client.goaway)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(errors), 3)  # one line each, nothing more
        self.assertEqual(warnings, [])


class StreamLifeTests(unittest.TestCase):
    @asyncio_test
    async def test_every_way_a_stream_ends_leaves_nothing_behind(self) -> None:
        """Completed, aborted by its app, reset by the client while its app waits or while
        its data waits for window, a WebSocket ended by the client or reset: afterwards the
        connection holds no stream, no queued data, and still serves."""
        waiting = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.accept"})
                while (await receive())["type"] != "websocket.disconnect":
                    pass
                return
            if scope["type"] != "http":
                return
            path = scope["path"]
            if path == "/abort":
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": b"partial", "more_body": True})
                raise ValueError("mid-body")
            if path == "/wait":
                waiting.set()
                await receive()
                await receive()  # the disconnect
                return
            if path == "/big":
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": b"b" * (4 * CHUNK)})
                return
            await hello_app(scope, receive, send)

        server = await serve(self, app)
        client = await H2Client.open(server.port, auto_ack=False)
        client.conn.increment_flow_control_window(2**30)  # the connection's: only /big's own window stays shut
        await pump_until(client, lambda: client.conn.remote_settings.enable_connect_protocol)
        done, aborted, held, big = (client.request(path) for path in ("/done", "/abort", "/wait", "/big"))
        sockets = []
        for _ in range(2):
            stream_id = client.conn.get_next_available_stream_id()
            client.conn.send_headers(stream_id, CONNECT)
            sockets.append(stream_id)
        client.flush()
        await asyncio.wait_for(waiting.wait(), TIMEOUT)
        await pump_until(client, lambda: done in client.ended and big in client.bodies
                         and all(s in client.headers for s in sockets))
        self.assertTrue(protocol_of(server)._queued)  # /big waits for the window the client keeps shut
        for stream_id in (held, big, sockets[0]):
            client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.conn.end_stream(sockets[1])
        client.flush()
        await ended(client, aborted, sockets[1])
        self.assertEqual(client.resets[aborted], ErrorCodes.INTERNAL_ERROR)
        client.auto_ack = True
        last = client.request("/last")
        _, body = await client.response(last)
        self.assertEqual(body, b"hello /last ")
        protocol = protocol_of(server)
        self.assertEqual((protocol._streams, protocol._queued), ({}, {}))
        client.close()
        self.flushLoggedErrors(ValueError)

    @asyncio_test
    async def test_finished_requests_leave_no_reference_cycle(self) -> None:
        """A stream's record lets go of its ASGI side when it ends: a request's objects are
        freed by reference counting, and the collector is never needed for them (a cycle
        per request cost 6k instructions of 480k in collections)."""
        exchanges: list[str] = []  # (HTTPStream has slots and no weak references: counted by gc instead)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                exchanges.append(scope["path"])
                await hello_app(scope, receive, send)

        server = await serve(self, app)
        client = await H2Client.open(server.port)
        await client.response(client.request("/warm"))
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        for index in range(10):
            await client.response(client.request(f"/{index}"))
        self.assertEqual(len(exchanges), 11)
        self.assertEqual([o for o in gc.get_objects() if type(o) is HTTPStream], [])
        self.assertEqual([o for o in gc.get_objects() if type(o) is H2Stream], [])
        client.close()


class FlowControlTests(unittest.TestCase):
    @asyncio_test
    async def test_send_still_waits_for_the_client_during_a_graceful_shutdown(self) -> None:
        """While the connection drains (GOAWAY sent, open streams finishing), an app's
        ``send()`` still waits for the client's window; it used not to, and a streaming
        response was then queued whole in the server."""
        entered, go, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            entered.set()
            await go.wait()
            await send({"type": "http.response.start", "status": 200})
            for _ in range(8):
                await send({"type": "http.response.body", "body": b"d" * CHUNK, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            done.set()

        server = await serve(self, app)
        client = await H2Client.open(server.port, auto_ack=False)
        stream_id = client.request("/")
        await asyncio.wait_for(entered.wait(), TIMEOUT)
        server.service.factory.shutdown()
        go.set()
        await pump_until(client, lambda: len(client.bodies.get(stream_id, b"")) == 65535)  # the client's window
        self.assertEqual((client.goaway.last_stream_id, client.goaway.error_code), (stream_id, ErrorCodes.NO_ERROR))
        self.assertLessEqual(len(protocol_of(server)._streams[stream_id].pending), CHUNK)
        self.assertFalse(done.is_set())
        client.conn.acknowledge_received_data(65535, stream_id)
        client.auto_ack = True
        client.flush()
        _, body = await client.response(stream_id)
        await asyncio.wait_for(done.wait(), TIMEOUT)
        self.assertEqual(len(body), 8 * CHUNK)
        client.close()


class HeaderPolicyTests(unittest.TestCase):
    @asyncio_test
    async def test_a_websockets_answer_carries_server_and_date_as_responses_do(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.accept", "headers": [(b"X-Mine", b" v ")]})
                await receive()

        server = await serve(self, app)
        client = await H2Client.open(server.port)
        await pump_until(client, lambda: client.conn.remote_settings.enable_connect_protocol)
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream_id, CONNECT)
        client.flush()
        await pump_until(client, lambda: stream_id in client.headers)
        headers = dict(client.headers[stream_id])
        client.close()
        self.assertEqual((headers[b":status"], headers[b"server"], headers[b"x-mine"]), (b"200", b"hello-asgi", b"v"))
        self.assertIn(b"date", headers)
