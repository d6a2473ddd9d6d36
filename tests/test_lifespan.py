"""The lifespan protocol and graceful shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from hello_asgi import ASGIService, Config
from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, HeldApp, connect, exchange, hello_app, until_closed

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def lifespan_app(events: list[str], fail: str | None = None):  # type: ignore[no-untyped-def]
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                phase = message["type"].split(".")[1]
                events.append(phase)
                if phase == "startup":
                    scope["state"]["db"] = "connected"
                if fail == phase:
                    await send({"type": f"lifespan.{phase}.failed", "message": f"no {phase} today"})
                else:
                    await send({"type": f"lifespan.{phase}.complete"})
                if phase == "shutdown":
                    return
        else:
            events.append("request")
            scope["state"]["mutated"] = True  # must not leak into the next request's copy
            body = repr(sorted(scope["state"].items())).encode()
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": body})

    return app


class LifespanTests(unittest.TestCase):
    @asyncio_test
    async def test_startup_before_listening_state_in_requests_shutdown_on_stop(self) -> None:
        events: list[str] = []
        server = await serve(self, lifespan_app(events))
        self.assertEqual(events, ["startup"])
        for _ in range(2):
            response = await exchange(server.port, REQUEST)
            self.assertTrue(response.endswith(b"[('db', 'connected'), ('mutated', True)]"))
        await server.service.stopService().asFuture(asyncio.get_running_loop())
        self.assertEqual(events, ["startup", "request", "request", "shutdown"])

    @asyncio_test
    async def test_startup_failed_stops_the_server_with_the_message(self) -> None:
        events: list[str] = []
        service = ASGIService(lifespan_app(events, fail="startup"),
                              Config(listen=["tcp:0:interface=127.0.0.1"]))
        service.startService()
        self.addCleanup(service.stopService)
        with self.assertRaises(Exception) as caught:
            await service.whenListening().asFuture(asyncio.get_running_loop())
        self.assertIn("no startup today", str(caught.exception))
        self.assertEqual(service.ports, [])

    @asyncio_test
    async def test_auto_mode_serves_apps_without_lifespan_with_a_debug_line(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert scope["type"] == "http", "this app only speaks HTTP"
            await hello_app(scope, receive, send)

        server = await serve(self, app)
        response = await exchange(server.port, REQUEST)
        self.assertTrue(response.startswith(b"HTTP/1.1 200"))
        notes = [e for e in events if e.get("log_namespace") == "hello_asgi.lifespan"]
        self.assertEqual([e["log_level"].name for e in notes], ["debug"])
        self.assertEqual(self.flushLoggedErrors(), [])

    @asyncio_test
    async def test_on_mode_refuses_an_app_without_lifespan(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert scope["type"] == "http", "this app only speaks HTTP"

        service = ASGIService(app, Config(listen=["tcp:0:interface=127.0.0.1"], lifespan="on"))
        service.startService()
        self.addCleanup(service.stopService)
        with self.assertRaises(Exception):
            await service.whenListening().asFuture(asyncio.get_running_loop())
        self.flushLoggedErrors(AssertionError)

    @asyncio_test
    async def test_off_mode_never_calls_lifespan(self) -> None:
        events: list[str] = []
        server = await serve(self, lifespan_app(events), lifespan="off")
        await exchange(server.port, REQUEST)
        self.assertEqual(events, ["request"])


class GracefulShutdownTests(unittest.TestCase):
    @asyncio_test
    async def test_in_flight_request_finishes_and_idle_connections_close(self) -> None:
        app = HeldApp()
        server = await serve(self, app)
        busy_reader, busy_writer = await connect(server.port)
        busy_writer.write(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
        idle_reader, idle_writer = await connect(server.port)
        await asyncio.wait_for(app.entered.wait(), TIMEOUT)
        loop = asyncio.get_running_loop()
        stopped = server.service.stopService().asFuture(loop)
        self.assertEqual(await asyncio.wait_for(idle_reader.read(), TIMEOUT), b"")  # idle: closed at once
        with self.assertRaises(OSError):
            await connect(server.port)  # no longer listening
        self.assertFalse(stopped.done())
        app.release.set()
        response = await asyncio.wait_for(busy_reader.read(), TIMEOUT)
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"))
        self.assertIn(b"connection: close", response)
        self.assertTrue(response.endswith(b"hello /busy "))
        await asyncio.wait_for(stopped, TIMEOUT)
        busy_writer.close()
        idle_writer.close()

    @asyncio_test
    async def test_graceful_timeout_cuts_requests_that_take_too_long(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await asyncio.Event().wait()  # never answers

        server = await serve(self, app, graceful_timeout=0.2)
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        while not server.service.factory.connections:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(server.service.stopService().asFuture(asyncio.get_running_loop()), TIMEOUT)
        self.assertEqual(await until_closed(reader), (b"", True))  # cut: reset
        writer.close()
