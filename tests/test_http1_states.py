"""``HTTP11Connection``'s states (``http1.State``) step by step, in memory: bytes in over a
``StringTransport``, no app run (the stream is answered by hand), no socket."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from hello_asgi.factory import ASGIServerFactory
from hello_asgi.http1 import HTTP11Connection, State


async def _app(scope: Any, receive: Any, send: Any) -> None:
    pass  # never run here


class InMemoryTests(unittest.TestCase):
    """What the tests below share: a connection over a ``StringTransport``, its state."""

    def connection(self) -> tuple[HTTP11Connection, StringTransport]:
        connection = HTTP11Connection(ASGIServerFactory(_app).context)
        transport = StringTransport()
        connection.makeConnection(transport)
        connection._start = lambda stream: None  # type: ignore[method-assign]  # the test answers
        self.addCleanup(connection.connectionLost)  # (its deadlines go)
        return connection, transport

    def state(self, connection: HTTP11Connection) -> State:
        return State(connection._state)


class StateTests(InMemoryTests):
    def test_a_request_with_a_body_then_keep_alive(self) -> None:
        connection, transport = self.connection()
        self.assertEqual(self.state(connection), State.IDLE)
        connection.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\n")
        self.assertEqual(self.state(connection), State.HEAD)
        connection.dataReceived(b"Content-Length: 4\r\n\r\nab")
        self.assertEqual(self.state(connection), State.BODY)
        connection.dataReceived(b"cd")
        self.assertEqual(self.state(connection), State.IDLE)
        stream = connection._streams[0]
        connection.write_response(stream, 200, [], b"ok", True)
        self.assertEqual(self.state(connection), State.IDLE)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.connected)
        connection.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertEqual(self.state(connection), State.HEAD)

    def test_a_refused_request_then_closing_then_closed(self) -> None:
        connection, transport = self.connection()
        connection.dataReceived(b"GET / HTTP/1.1\r\n\r\n")  # no Host
        self.assertEqual(self.state(connection), State.CLOSING)  # REJECTED, and its 400 sent at once
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))
        connection.connectionLost()
        self.assertEqual(self.state(connection), State.CLOSED)

    def test_a_refused_request_waits_for_the_response_owed_before_it(self) -> None:
        connection, transport = self.connection()
        connection.dataReceived(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
        self.assertEqual(self.state(connection), State.REJECTED)
        self.assertEqual(transport.value(), b"")  # the 400 waits for /1's response
        connection.write_response(connection._streams[0], 200, [], b"one", True)
        self.assertEqual(self.state(connection), State.CLOSING)
        first, _, second = transport.value().partition(b"one")
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK\r\n") and second.startswith(b"HTTP/1.1 400 "))

    def test_an_upgrade_waits_switching_then_is_switched(self) -> None:
        switched: list[tuple[str, bytes]] = []
        connection = HTTP11Connection(ASGIServerFactory(_app).context,
                                      switch=lambda kind, request, rest: (switched.append((kind, rest)),
                                                                          connection.detach()))
        connection.makeConnection(StringTransport())
        connection._start = lambda stream: None  # type: ignore[method-assign]
        self.addCleanup(connection.connectionLost)
        connection.dataReceived(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
                                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe")
        self.assertEqual(self.state(connection), State.SWITCHING)
        connection.dataReceived(b"more")  # arrived while switching: the next protocol's
        connection.write_response(connection._streams[0], 200, [], b"one", True)
        self.assertEqual(self.state(connection), State.SWITCHED)
        self.assertEqual(switched, [("websocket", b"framemore")])


class ParserKeptTests(InMemoryTests):
    """Idle after its first request a connection holds no parser (0.9 KiB, on each of what may
    be thousands of idle connections); from its second on it keeps the one it has."""

    def answer(self, connection: HTTP11Connection, path: bytes) -> None:
        connection.dataReceived(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        connection.write_response(connection._streams[0], 200, [], b"ok", True)
        self.assertEqual(self.state(connection), State.IDLE)

    def test_a_connection_idle_after_one_request_holds_no_parser(self) -> None:
        connection, _ = self.connection()
        self.answer(connection, b"/1")
        self.assertIsNone(connection._parser)

    def test_a_connection_carrying_requests_keeps_its_parser(self) -> None:
        connection, transport = self.connection()
        self.answer(connection, b"/1")
        self.answer(connection, b"/2")
        kept = connection._parser
        self.assertIsNotNone(kept)
        self.answer(connection, b"/3")
        self.assertIs(connection._parser, kept)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK\r\n"), 3)
