"""WebSockets over HTTP/1.1, driven by the websockets library and raw sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from hello_asgi.config import Config
from hello_asgi.context import WEBSOCKET_TASK
from hello_asgi.factory import ASGIServerFactory
from hello_asgi.stream import RequestHead
from hello_asgi.testing import asyncio_test, serve
from hello_asgi.websocket import HTTP11Handshake, WebSocketConnection
from hello_asgi.websocket_session import WebSocketDisconnected, WebSocketSession

from . import fuzz
from .support import cut_off, exchange, until_closed

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key
HANDSHAKE = (b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n")


def scope_json(scope: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in scope.items() if k != "state"}, default=lambda b: b.decode("latin-1"))


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Accepts with the first subprotocol offered, answers its scope, then echoes."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain HTTP"})
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    offered = scope["subprotocols"]
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None,
                "headers": [(b"x-accepted", b"yes")]})
    await send({"type": "websocket.send", "text": scope_json(scope)})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close please":
            await send({"type": "websocket.close", "code": 4001, "reason": "asked to"})
            continue
        await send({"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")})


class RecordingApp:
    """An echo app that keeps every message it received, to check the disconnect."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.done: asyncio.Future[None] | None = None
        self.send_error: BaseException | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.done = self.done or asyncio.get_running_loop().create_future()
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.disconnect":
                try:
                    await send({"type": "websocket.send", "text": "too late"})
                except OSError as error:
                    self.send_error = error
                self.done.set_result(None)
                return


class HandshakeTests(unittest.TestCase):
    @asyncio_test
    async def test_scope_subprotocol_and_accept_headers(self) -> None:
        server = await serve(self, echo_app, root_path="/app")
        async with connect(f"ws://127.0.0.1:{server.port}/chat/%C3%A9?room=1",
                           subprotocols=["chat.v2", "chat.v1"]) as ws:
            self.assertEqual(ws.subprotocol, "chat.v2")
            self.assertEqual(ws.response.headers["x-accepted"], "yes")
            scope = json.loads(await ws.recv())
        self.assertEqual(scope["type"], "websocket")
        self.assertEqual(scope["scheme"], "ws")
        self.assertEqual(scope["http_version"], "1.1")
        self.assertEqual(scope["path"], "/app/chat/é")
        self.assertEqual(scope["raw_path"], "/app/chat/%C3%A9")
        self.assertEqual(scope["query_string"], "room=1")
        self.assertEqual(scope["root_path"], "/app")
        self.assertEqual(scope["subprotocols"], ["chat.v2", "chat.v1"])
        self.assertEqual(scope["client"][0], "127.0.0.1")
        self.assertEqual(scope["server"], ["127.0.0.1", server.port])
        self.assertEqual(scope["extensions"], {"websocket.http.response": {}})
        self.assertEqual(scope["asgi"]["spec_version"], "2.5")
        self.assertNotIn("method", scope)
        self.assertIn(["sec-websocket-key", scope["headers"][3][1]], scope["headers"])

    @asyncio_test
    async def test_raw_handshake_answer(self) -> None:
        server = await serve(self, echo_app)
        data = await exchange(server.port, HANDSHAKE + b"\r\n", until=b"\r\n\r\n")
        head = data.partition(b"\r\n\r\n")[0].lower()
        self.assertTrue(head.startswith(b"http/1.1 101 switching protocols\r\n"))
        self.assertIn(b"sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=", head)  # RFC 6455 section 1.3
        self.assertIn(b"upgrade: websocket", head)

    @asyncio_test
    async def test_close_before_accept_is_403(self) -> None:
        async def deny(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.close"})

        server = await serve(self, deny)
        with self.assertRaises(InvalidStatus) as caught:
            async with connect(f"ws://127.0.0.1:{server.port}/"):
                pass
        self.assertEqual(caught.exception.response.status_code, 403)

    @asyncio_test
    async def test_denial_response_extension(self) -> None:
        async def deny(scope: Any, receive: Any, send: Any) -> None:
            assert "websocket.http.response" in scope["extensions"]
            await send({"type": "websocket.http.response.start", "status": 401,
                        "headers": [(b"www-authenticate", b"Bearer"), (b"content-type", b"text/plain")]})
            await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"are you?"})

        server = await serve(self, deny)
        data = await exchange(server.port, HANDSHAKE + b"\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), data)
        self.assertIn(b"www-authenticate: Bearer\r\n", data)
        self.assertIn(b"content-length: 12\r\n", data)
        self.assertTrue(data.endswith(b"\r\n\r\nwho are you?"))

    @asyncio_test
    async def test_app_error_before_accept_is_500_and_logged(self) -> None:
        async def broken(scope: Any, receive: Any, send: Any) -> None:
            raise ZeroDivisionError("boom")

        server = await serve(self, broken)
        data = await exchange(server.port, HANDSHAKE + b"\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n"), data)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @asyncio_test
    async def test_wrong_message_before_accept_raises(self) -> None:
        errors: list[BaseException] = []

        async def eager(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "websocket":
                return
            try:
                await send({"type": "websocket.send", "text": "hi"})
            except RuntimeError as error:
                errors.append(error)
                raise

        server = await serve(self, eager)
        data = await exchange(server.port, HANDSHAKE + b"\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 500 "), data)
        self.assertIn("before 'websocket.accept'", str(errors[0]))
        self.flushLoggedErrors(RuntimeError)

    @asyncio_test
    async def test_bad_handshakes_get_4xx(self) -> None:
        server = await serve(self, echo_app)
        base = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        cases = [
            (base + b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 8\r\n\r\n", b"426",
             b"sec-websocket-version: 13"),
            (base + b"Sec-WebSocket-Version: 13\r\n\r\n", b"400", b"Sec-WebSocket-Key"),
            (base + b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n", b"400", b"16 bytes"),
        ]
        for request, status, detail in cases:
            data = await exchange(server.port, request)
            self.assertTrue(data.startswith(b"HTTP/1.1 " + status), data)
            self.assertIn(detail, data)
        async with connect(f"ws://127.0.0.1:{server.port}/") as ws:  # and the server serves on
            await ws.recv()

    @asyncio_test
    async def test_pipelined_request_before_the_upgrade_is_answered_first(self) -> None:
        async def both(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"first"})
            else:
                await receive()
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close"})

        server = await serve(self, both)
        data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + HANDSHAKE + b"\r\n",
                              until=b"\x88\x02\x03\xe8")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        self.assertIn(b"first", data.split(b"HTTP/1.1 101")[0])
        self.assertIn(b"HTTP/1.1 101 Switching Protocols\r\n", data)
        self.assertTrue(data.endswith(b"\x88\x02\x03\xe8"), data)  # a close frame, code 1000

    @asyncio_test
    async def test_websockets_off_serves_the_request_as_http(self) -> None:
        async def plain(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": scope["type"].encode()})

        server = await serve(self, plain, websocket=False)
        data = await exchange(server.port, HANDSHAKE + b"Connection: close\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        self.assertTrue(data.endswith(b"http"))


class MessageTests(unittest.TestCase):
    @asyncio_test
    async def test_text_and_bytes_round_trip(self) -> None:
        server = await serve(self, echo_app)
        async with connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
            await ws.recv()
            await ws.send("héllo")
            self.assertEqual(await ws.recv(), "héllo")
            await ws.send(b"\x00\xff")
            self.assertEqual(await ws.recv(), b"\x00\xff")
            await ws.send(["frag", "mented"])  # one message in three frames
            self.assertEqual(await ws.recv(), "fragmented")
            large = bytes(range(256)) * 4096  # 1 MiB
            await ws.send(large)
            self.assertEqual(await ws.recv(), large)

    @asyncio_test
    async def test_the_app_task_is_named_for_a_websocket(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "websocket":
                task = asyncio.current_task()
                await receive()
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.send", "text": task.get_name() if task else ""})

        server = await serve(self, app)
        async with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            self.assertEqual(await ws.recv(), WEBSOCKET_TASK)

    @asyncio_test
    async def test_compression_negotiated_and_used(self) -> None:
        server = await serve(self, echo_app)
        async with connect(f"ws://127.0.0.1:{server.port}/") as ws:  # offers permessage-deflate
            self.assertIn("permessage-deflate", ws.response.headers["sec-websocket-extensions"])
            await ws.recv()
            text = "compressible " * 10000
            await ws.send(text)
            self.assertEqual(await ws.recv(), text)

    @asyncio_test
    async def test_compression_can_be_turned_off(self) -> None:
        server = await serve(self, echo_app, ws_per_message_deflate=False)
        async with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            self.assertNotIn("sec-websocket-extensions", ws.response.headers)
            await ws.recv()

    @asyncio_test
    async def test_app_close_with_code_and_reason(self) -> None:
        server = await serve(self, echo_app)
        async with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.recv()
            await ws.send("close please")
            with self.assertRaises(ConnectionClosed) as caught:
                await ws.recv()
        self.assertEqual(caught.exception.rcvd.code, 4001)
        self.assertEqual(caught.exception.rcvd.reason, "asked to")

    @asyncio_test
    async def test_client_close_reaches_the_app_and_send_after_raises(self) -> None:
        app = RecordingApp()
        server = await serve(self, app)
        async with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send("one")
            await ws.close(code=4321, reason="bye")
        await app.done
        self.assertEqual(app.received, [{"type": "websocket.receive", "text": "one"},
                                        {"type": "websocket.disconnect", "code": 4321, "reason": "bye"}])
        self.assertIsInstance(app.send_error, OSError)

    @asyncio_test
    async def test_close_without_code_is_1005_and_a_dropped_connection_1006(self) -> None:
        for close_frame, code in ((b"\x88\x80\x00\x00\x00\x00", 1005), (b"", 1006)):
            app = RecordingApp()
            server = await serve(self, app)
            await exchange(server.port, HANDSHAKE + b"\r\n" + close_frame, until=b"\r\n\r\n")
            await app.done
            self.assertEqual(app.received[-1]["code"], code)

    @asyncio_test
    async def test_oversize_message_closes_with_1009(self) -> None:
        server = await serve(self, echo_app, ws_max_message_size=1000, ws_per_message_deflate=False)
        async with connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
            await ws.recv()
            await ws.send("x" * 1001)
            with self.assertRaises(ConnectionClosed) as caught:
                await ws.recv()
        self.assertEqual(caught.exception.rcvd.code, 1009)

    @asyncio_test
    async def test_compressed_bomb_closes_with_1009(self) -> None:
        server = await serve(self, echo_app, ws_max_message_size=100_000)
        async with connect(f"ws://127.0.0.1:{server.port}/", max_size=None) as ws:
            await ws.recv()
            await ws.send("a" * 1_000_000)  # deflates to about 1 KB, inflates past the limit
            with self.assertRaises(ConnectionClosed) as caught:
                await ws.recv()
        self.assertEqual(caught.exception.rcvd.code, 1009)

    @asyncio_test
    async def test_app_error_after_accept_closes_with_1011(self) -> None:
        async def broken(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await receive()
            raise ZeroDivisionError("boom")

        server = await serve(self, broken)
        async with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send("anything")
            with self.assertRaises(ConnectionClosed) as caught:
                await ws.recv()
        self.assertEqual(caught.exception.rcvd.code, 1011)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @asyncio_test
    async def test_app_that_returns_closes_with_1000(self) -> None:
        async def brief(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})

        server = await serve(self, brief)
        async with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            with self.assertRaises(ConnectionClosed) as caught:
                await ws.recv()
        self.assertEqual(caught.exception.rcvd.code, 1000)


class LimitTests(unittest.TestCase):
    @asyncio_test
    async def test_frame_over_the_limit_closes_with_1009(self) -> None:
        server = await serve(self, echo_app, ws_max_frame_size=100)
        async with connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
            await ws.recv()
            await ws.send(["a" * 90, "b" * 90])  # frames within the limit, the message above it
            self.assertEqual(await ws.recv(), "a" * 90 + "b" * 90)
            await ws.send(["a" * 101, "b"])
            with self.assertRaises(ConnectionClosed) as caught:
                await ws.recv()
        self.assertEqual(caught.exception.rcvd.code, 1009)

    @asyncio_test
    async def test_a_peer_that_never_answers_pings_is_closed(self) -> None:
        app = RecordingApp()
        server = await serve(self, app, ws_ping_interval=0.1, ws_ping_timeout=0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(HANDSHAKE + b"\r\n")
        data, reset = await until_closed(reader)  # a client that reads but never pongs
        writer.close()
        self.assertTrue(reset)
        self.assertIn(b"\x89", data.partition(b"\r\n\r\n")[2][:1])  # the ping it ignored
        await app.done
        self.assertEqual(app.received[-1], {"type": "websocket.disconnect", "code": 1006, "reason": ""})

    @asyncio_test
    async def test_an_app_that_never_accepts_is_cut_off(self) -> None:
        disconnects: list[Any] = []

        async def undecided(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "websocket":
                await receive()
                disconnects.append(await receive())

        server = await serve(self, undecided, ws_handshake_timeout=0.1)
        self.assertEqual(await cut_off(server.port, HANDSHAKE + b"\r\n"), (b"", True))
        await asyncio.sleep(0)
        self.assertEqual(disconnects, [{"type": "websocket.disconnect", "code": 1006, "reason": ""}])

    @asyncio_test
    async def test_an_app_that_does_not_receive_stops_the_reading(self) -> None:
        release = asyncio.Event()
        received = []

        async def slow(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "websocket":
                return
            await receive()
            await send({"type": "websocket.accept"})
            await release.wait()
            while (message := await receive())["type"] == "websocket.receive":
                received.append(len(message["bytes"]))

        server = await serve(self, slow, ws_max_queue=4)
        async with connect(f"ws://127.0.0.1:{server.port}/", compression=None, write_limit=65536) as ws:
            chunk = b"x" * 65536

            async def flood() -> None:
                for _ in range(1000):  # 64 MiB: far more than socket buffers hold
                    await ws.send(chunk)

            sending = asyncio.ensure_future(flood())
            done, _ = await asyncio.wait([sending], timeout=1)
            self.assertFalse(done, "the server read 64 MiB an app never took")
            release.set()
            await asyncio.wait_for(sending, 30)
            await ws.close()
        self.assertEqual(len(received), 1000)

    @asyncio_test
    async def test_send_waits_for_a_client_that_does_not_read(self) -> None:
        sent = []

        async def firehose(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "websocket":
                return
            await receive()
            await send({"type": "websocket.accept"})
            for _ in range(64):
                await send({"type": "websocket.send", "bytes": b"y" * 1048576})
                sent.append(1)

        server = await serve(self, firehose, ws_per_message_deflate=False)
        async with connect(f"ws://127.0.0.1:{server.port}/", compression=None, max_size=None,
                           max_queue=1) as ws:
            await asyncio.sleep(0.5)  # the client reads nothing for a while
            self.assertLess(len(sent), 64, "send() never waited for the client")
            for _ in range(64):
                self.assertEqual(len(await ws.recv()), 1048576)
        self.assertEqual(len(sent), 64)

    @asyncio_test
    async def test_graceful_shutdown_closes_with_1001(self) -> None:
        server = await serve(self, echo_app)
        async with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.recv()
            stopping = server.service.stopService()
            with self.assertRaises(ConnectionClosed) as caught:
                await ws.recv()
        await stopping.asFuture(asyncio.get_running_loop())
        self.assertEqual(caught.exception.rcvd.code, 1001)


class _RecordingChannel:
    """A ``WebSocketChannel`` that records what ``WebSocketSession`` asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def accept(self, subprotocol: str | None, headers: Any) -> None:
        self.calls.append(("accept", subprotocol, headers))

    def deny(self, status: int, headers: Any, body: bytes) -> None:
        self.calls.append(("deny", status, headers, body))

    def send_message(self, payload: bytes, binary: bool) -> None:
        self.calls.append(("message", payload, binary))

    def close(self, code: int, reason: str) -> None:
        self.calls.append(("close", code, reason))

    def drained(self) -> None:
        return None

    def message_taken(self) -> None:
        pass

    def waiting(self) -> None:
        pass

    def finished(self, session: Any) -> None:
        pass


class SessionSendInMemoryTests(unittest.TestCase):
    """``WebSocketSession.send`` over a recording channel, no sockets: what each state lets
    the app send, and the error for what it does not."""

    def session(self) -> tuple[WebSocketSession, _RecordingChannel]:
        channel = _RecordingChannel()
        return WebSocketSession({"type": "websocket", "path": "/", "subprotocols": ["chat"]}, channel), channel

    @asyncio_test
    async def test_accept_messages_and_close(self) -> None:
        session, channel = self.session()
        with self.assertRaisesRegex(RuntimeError, "^'websocket.send' sent before 'websocket.accept' or"):
            await session.send({"type": "websocket.send", "text": "early"})
        with self.assertRaisesRegex(ValueError, "subprotocol 'mqtt' was not offered by the client"):
            await session.send({"type": "websocket.accept", "subprotocol": "mqtt"})
        with self.assertRaisesRegex(ValueError, "gives the subprotocol in 'subprotocol', not in 'headers'"):
            await session.send({"type": "websocket.accept", "headers": [(b"Sec-WebSocket-Protocol", b"chat")]})
        await session.send({"type": "websocket.accept", "subprotocol": "chat", "headers": [(b"x-a", b"1")]})
        await session.send({"type": "websocket.send", "text": "hé"})
        await session.send({"type": "websocket.send", "bytes": bytearray(b"\x00")})
        for both_or_neither in ({"type": "websocket.send"}, {"type": "websocket.send", "text": "a", "bytes": b"b"}):
            with self.assertRaisesRegex(ValueError, "needs exactly one of 'bytes' and 'text'"):
                await session.send(both_or_neither)
        with self.assertRaisesRegex(RuntimeError, "unexpected ASGI message 'websocket.accept' on an open WebSocket"):
            await session.send({"type": "websocket.accept"})
        with self.assertRaisesRegex(ValueError, "code 1005 cannot be sent"):
            await session.send({"type": "websocket.close", "code": 1005})
        await session.send({"type": "websocket.close", "code": 4000, "reason": "bye"})
        await session.send({"type": "websocket.close"})  # a close after the close is harmless
        with self.assertRaisesRegex(WebSocketDisconnected, "the WebSocket is closed; cannot send 'websocket.send'"):
            await session.send({"type": "websocket.send", "text": "late"})
        self.assertEqual(channel.calls, [("accept", "chat", [(b"x-a", b"1")]), ("message", "hé".encode(), False),
                                         ("message", b"\x00", True), ("close", 4000, "bye")])

    @asyncio_test
    async def test_a_close_before_accept_is_a_403(self) -> None:
        session, channel = self.session()
        await session.send({"type": "websocket.close"})
        self.assertEqual((channel.calls, session.status),
                         ([("deny", 403, [(b"content-type", b"text/plain; charset=utf-8")], b"Forbidden")], 403))

    @asyncio_test
    async def test_a_denial_response_gathers_its_body(self) -> None:
        session, channel = self.session()
        with self.assertRaisesRegex(ValueError, "status must be an int from 200 to 999, not 101"):
            await session.send({"type": "websocket.http.response.start", "status": 101})
        await session.send({"type": "websocket.http.response.start", "status": 404, "headers": [(b"x-a", b"1")]})
        with self.assertRaisesRegex(RuntimeError, "'websocket.accept' sent during a 'websocket.http.response'"):
            await session.send({"type": "websocket.accept"})
        await session.send({"type": "websocket.http.response.body", "body": b"no", "more_body": True})
        self.assertEqual(channel.calls, [])
        await session.send({"type": "websocket.http.response.body", "body": b"pe"})
        self.assertEqual((channel.calls, session.status), ([("deny", 404, [(b"x-a", b"1")], b"nope")], 404))


class ConnectionLostInMemoryTests(unittest.TestCase):
    """``WebSocketConnection`` over a ``StringTransport``, no sockets."""

    def test_connection_lost_without_a_reason_tells_the_app(self) -> None:
        # IProtocol.connectionLost's reason defaults to connectionDone, as Twisted's and
        # autobahn's do; a None default reached autobahn, which reads reason.value.
        factory = ASGIServerFactory(fuzz.websocket_echo, Config(access_log=None, ws_ping_interval=0))
        request = RequestHead(b"GET", b"/", b"/", b"", [(b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")])
        connection = WebSocketConnection(factory.context, request, "1.1", HTTP11Handshake(request, factory.context))
        connection.makeConnection(StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 80),
                                                  peerAddress=IPv4Address("TCP", "127.0.0.1", 5000)))
        connection.accept(None, [])
        connection.connectionLost()
        connection.session.task.cancel()  # type: ignore[union-attr]
        self.assertEqual(connection.session._disconnect, {"type": "websocket.disconnect", "code": 1006, "reason": ""})
