"""Every kind of HTTP/1.1 head goes through ``wire.head``, with one Server and Date policy:
a head that ends an exchange (a response, an error response, the over-limit 503, the
WebSocket ``101`` and its denial, the h2c ``101``) carries both as configured; an interim
one (``100 Continue``, ``103 Early Hints``) carries neither. Before: the error responses
and the h2c ``101`` had no Date, the h2c ``101`` no Server."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, connect

_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
_WS = b"GET /%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
_DATE = re.compile(rb"\r\ndate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n")

# Each kind of head: what the client sends, and whether the head ends its exchange.
HEADS: dict[str, tuple[bytes, bool]] = {
    "response": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
    "error response": (b"GET / HTTP/1.1\r\n\r\n", True),  # no Host: 400
    "WebSocket 101": (_WS % b"accept" + b"Sec-WebSocket-Key: " + _KEY + b"\r\n\r\n", True),
    "WebSocket denial": (_WS % b"deny" + b"Sec-WebSocket-Key: " + _KEY + b"\r\n\r\n", True),
    "bad WebSocket handshake": (_WS % b"accept" + b"\r\n", True),  # no key: 400
    "h2c 101": (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", True),
    "100 Continue": (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", False),
    "103 Early Hints": (b"GET /hints HTTP/1.1\r\nHost: x\r\n\r\n", False),
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        if scope["path"] == "/deny":
            await send({"type": "websocket.close"})
        else:
            await send({"type": "websocket.accept"})
            await receive()
    elif scope["type"] == "http":
        if scope["path"] == "/hints":
            await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def first_head(port: int, request: bytes) -> bytes:
    reader, writer = await connect(port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    finally:
        writer.close()


class HeadPolicyTests(unittest.TestCase):
    def assert_policy(self, name: str, head: bytes, final: bool, on: bool) -> None:
        present = on and final
        self.assertEqual(b"\r\nserver: hello-asgi\r\n" in head, present, (name, head))
        self.assertEqual(_DATE.search(head) is not None, present, (name, head))
        if not present:
            self.assertNotIn(b"server:", head.lower(), name)
            self.assertNotIn(b"date:", head.lower(), name)

    @asyncio_test
    async def test_each_kind_of_head(self) -> None:
        for on in (True, False):
            settings: dict[str, Any] = {} if on else {"server_header": None, "date_header": False}
            server = await serve(self, app, **settings)
            for name, (request, final) in HEADS.items():
                head = await first_head(server.port, request)
                self.assertTrue(head.startswith(b"HTTP/1.1 "), (name, head))
                self.assert_policy(name, head, final, on)

    @asyncio_test
    async def test_the_over_limit_503(self) -> None:
        server = await serve(self, app, max_connections=1)
        reader, writer = await connect(server.port)
        writer.write(HEADS["response"][0])
        await asyncio.wait_for(reader.readuntil(b"ok"), TIMEOUT)  # the one connection allowed, held
        head = await first_head(server.port, HEADS["response"][0])
        writer.close()
        self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head)
        self.assert_policy("503", head, True, True)


class DateTests(unittest.TestCase):
    def test_the_date_line_is_this_seconds(self) -> None:
        """``wire.http_date()`` is the value ``head()`` writes (the one cache of it, for any
        module that needs the Date value), and it is now's."""
        import email.utils
        import time

        from hello_asgi.wire import head, http_date

        before = int(time.time())
        while True:  # (again if a second ended between the two)
            value = http_date()
            written = head(200, [], b"", None, True)
            if http_date() == value:
                break
        self.assertIn(b"\r\ndate: " + value + b"\r\n", written)
        stamped = email.utils.parsedate_to_datetime(value.decode()).timestamp()
        self.assertTrue(before <= stamped <= time.time(), value)
