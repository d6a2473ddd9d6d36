"""What an idle connection costs in Python objects, held under the figures the docs give.

The memory work of the transport and the HTTP/1.1 protocol (slots, no parser kept between
requests, one shared empty header tuple, addresses made when asked for) is guarded only by
benchmarks nobody runs in CI; these tests keep it. The server runs here, under tracemalloc;
the idle clients run in another process, so their objects are not counted. Every byte the
server allocated while the clients connected, made their one request each and went idle,
and still holds, is divided by the number of connections.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from hello_asgi.bridge import is_uvloop
from hello_asgi.stream import HTTPStream
from hello_asgi.testing import asyncio_test, serve
from hello_asgi.websocket_session import WebSocketSession

from .support import hello_app

CONNECTIONS = 1000
CLIENTS = Path(__file__).with_name("idle_clients.py")

# The docs' figures (limits.rst "Idle connections"): bytes of Python objects an idle
# HTTP/1.1 keep-alive connection and an idle WebSocket keep, measured 2026-12-05 by these
# tests on each Python and loop CI runs. Python 3.13's objects are larger; uvloop's reader
# handle is a Python object too. A test fails 4% above its figure, so a real growth shows.
MEASURED = {  # (Python, loop): (HTTP/1.1, WebSocket)
    ((3, 11), "asyncio"): (1829, 13198),
    ((3, 11), "uvloop"): (2078, 13461),
    ((3, 12), "asyncio"): (1834, 13036),
    ((3, 13), "asyncio"): (2494, 13678),
}
HEADROOM = 1.04


def bound(kind: str) -> float:
    """This Python's and loop's figure, or the largest of them for one not measured."""
    loop = "uvloop" if is_uvloop(asyncio.get_running_loop()) else "asyncio"
    figures = MEASURED.get((sys.version_info[:2], loop)) or tuple(map(max, zip(*MEASURED.values())))
    return figures[0 if kind == "http" else 1] * HEADROOM


async def idle_websocket_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    elif scope["type"] == "http":
        await hello_app(scope, receive, send)


class _Clients(ProcessProtocol):
    """The client process: ``idle`` fires once every connection has had its answer."""

    def __init__(self) -> None:
        self.idle: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"idle" in self.output and not self.idle.called:
            self.idle.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.idle.called:
            self.idle.errback(RuntimeError(f"the clients ended first: {self.output!r}"))
        self.ended.callback(None)


class IdleMemoryTests(unittest.TestCase):
    async def bytes_per_idle_connection(self, app: Any, kind: str, **settings: Any) -> float:
        server = await serve(self, app, access_log=None, keep_alive_timeout=300, **settings)
        await self.hold(server.port, kind, 1)  # first use: what is loaded or cached once is not per connection
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        await self.hold(server.port, kind, CONNECTIONS, measure=lambda: tracemalloc.get_traced_memory()[0] - before)
        return self.held / CONNECTIONS

    async def hold(self, port: int, kind: str, count: int, measure: Any = None) -> None:
        """``count`` client connections made, answered and idle; ``measure()`` then, into
        ``self.held``; then they close."""
        loop = asyncio.get_running_loop()
        clients = _Clients()
        process = reactor.spawnProcess(clients, sys.executable, [sys.executable, str(CLIENTS), str(port), str(count), kind])
        await asyncio.wait_for(clients.idle.asFuture(loop), 120)
        if measure is not None:
            await asyncio.sleep(0.2)  # the last requests' finishing calls, a turn or two later
            gc.collect()  # what a handshake left in reference cycles is garbage, not the connection's
            self.held = measure()
        process.closeStdin()  # the clients close their connections and exit
        await asyncio.wait_for(clients.ended.asFuture(loop), 60)

    @asyncio_test
    async def test_an_idle_keep_alive_connection(self) -> None:
        per_connection = await self.bytes_per_idle_connection(hello_app, "http")
        self.assertLess(per_connection, bound("http"), f"{per_connection:.0f} bytes per idle HTTP/1.1 connection")

    @asyncio_test
    async def test_an_idle_websocket(self) -> None:
        per_connection = await self.bytes_per_idle_connection(idle_websocket_app, "websocket",
                                                              ws_per_message_deflate=False)
        self.assertLess(per_connection, bound("websocket"), f"{per_connection:.0f} bytes per idle WebSocket")


class SlotsTests(unittest.TestCase):
    """The objects made per request and kept per WebSocket have slots and no ``__dict__``
    (a dict of their dozen attributes would add about 0.3 KiB to each): checked in memory,
    in microseconds, beside the measurements above."""

    def test_an_http_stream_has_no_dict(self) -> None:
        stream = HTTPStream({"extensions": {}}, writer=None, body_complete=True)  # type: ignore[arg-type]
        self.assertFalse(hasattr(stream, "__dict__"))
        with self.assertRaises(AttributeError):
            stream.anything = 1  # type: ignore[attr-defined]

    def test_a_websocket_session_has_no_dict(self) -> None:
        session = WebSocketSession({}, channel=None)  # type: ignore[arg-type]
        self.assertFalse(hasattr(session, "__dict__"))
        with self.assertRaises(AttributeError):
            session.anything = 1  # type: ignore[attr-defined]
