"""The ASGI HTTP state machine and app errors, seen from a real client."""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from hello_asgi import ClientDisconnected, stream
from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, connect, exchange, hello_app

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def app_raising(at: str):  # type: ignore[no-untyped-def]
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if at == "start":
            raise ValueError("boom before start")
        await send({"type": "http.response.start", "status": 200})
        if at == "after start":
            raise ValueError("boom after start")
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom mid-body")

    return app


class AppErrorTests(unittest.TestCase):
    def _collect_errors(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []

        def observer(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "hello_asgi.app":
                events.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events

    @asyncio_test
    async def test_exception_before_start_gives_500_and_one_traceback(self) -> None:
        events = self._collect_errors()
        server = await serve(self, app_raising("start"))
        response = await exchange(server.port, REQUEST)
        self.assertTrue(response.startswith(b"HTTP/1.1 500 Internal Server Error\r\n"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(events), 1)
        self.assertIn("boom before start", events[0]["log_failure"].getTraceback())

    @asyncio_test
    async def test_exception_after_start_before_body_still_gives_500(self) -> None:
        server = await serve(self, app_raising("after start"))
        response = await exchange(server.port, REQUEST)
        self.assertTrue(response.startswith(b"HTTP/1.1 500 "))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    @asyncio_test
    async def test_exception_mid_body_truncates_the_response(self) -> None:
        server = await serve(self, app_raising("mid body"))
        response = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"))
        self.assertIn(b"transfer-encoding: chunked", response)
        self.assertTrue(response.endswith(b"7\r\npartial\r\n"), "no last chunk: the client sees a cut response")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    @asyncio_test
    async def test_returning_without_a_response_gives_500(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            return None

        server = await serve(self, app)
        response = await exchange(server.port, REQUEST)
        self.assertTrue(response.startswith(b"HTTP/1.1 500 "))

    @asyncio_test
    async def test_app_error_does_not_stop_the_next_request(self) -> None:
        server = await serve(self, app_raising("start"))
        await exchange(server.port, REQUEST)
        second = await exchange(server.port, REQUEST)
        self.assertTrue(second.startswith(b"HTTP/1.1 500 "))
        self.flushLoggedErrors(ValueError)


class StateMachineTests(unittest.TestCase):
    async def _run_app_steps(self, steps: Any) -> tuple[list[Any], bytes]:
        outcomes: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            for message in steps:
                try:
                    await send(message)
                    outcomes.append("ok")
                except Exception as error:
                    outcomes.append(type(error))

        server = await serve(self, app)
        response = await exchange(server.port, REQUEST)
        return outcomes, response

    @asyncio_test
    async def test_body_before_start_raises(self) -> None:
        outcomes, response = await self._run_app_steps([{"type": "http.response.body", "body": b"x"}])
        self.assertEqual(outcomes, [RuntimeError])
        self.assertTrue(response.startswith(b"HTTP/1.1 500 "))

    @asyncio_test
    async def test_start_twice_and_body_after_end_raise(self) -> None:
        start = {"type": "http.response.start", "status": 200}
        body = {"type": "http.response.body", "body": b"x"}
        outcomes, response = await self._run_app_steps([start, start, body, body])
        self.assertEqual(outcomes, ["ok", RuntimeError, "ok", RuntimeError])
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "))

    @asyncio_test
    async def test_unknown_message_and_bad_headers_raise(self) -> None:
        outcomes, _ = await self._run_app_steps([
            {"type": "http.response.bogus"},
            {"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\r\nInjected: 1")]},
            {"type": "http.response.start", "status": 200, "headers": [(b"bad name", b"v")]},
            {"type": "http.response.start", "status": 200, "headers": [("str", "str")]},
            {"type": "http.response.start", "status": "200"},
            {"type": "http.response.start", "status": 200},
            {"type": "http.response.body", "body": b"fine"},
        ])
        self.assertEqual(outcomes, [RuntimeError, ValueError, ValueError, TypeError, ValueError, "ok", "ok"])

    @asyncio_test
    async def test_stray_disconnect_after_body_is_tolerated(self) -> None:
        outcomes, response = await self._run_app_steps([
            {"type": "http.response.start", "status": 200},
            {"type": "http.response.body", "body": b"done"},
            {"type": "http.disconnect"},
        ])
        self.assertEqual(outcomes, ["ok", "ok", "ok"])
        self.assertTrue(response.endswith(b"\r\n\r\ndone"))

    @asyncio_test
    async def test_after_client_disconnect_receive_says_so_and_send_raises_oserror(self) -> None:
        entered = asyncio.Event()
        seen: list[Any] = []
        done = asyncio.get_running_loop().create_future()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await receive()
            entered.set()
            seen.append(await receive())  # waits until the client goes away
            try:
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": b"late"})
            except OSError as error:
                seen.append(error)
            done.set_result(None)

        server = await serve(self, app)
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(entered.wait(), TIMEOUT)
        writer.close()
        await asyncio.wait_for(done, TIMEOUT)
        self.assertEqual(seen[0], {"type": "http.disconnect"})
        self.assertIsInstance(seen[1], ClientDisconnected)
        self.assertIsInstance(seen[1], OSError)

    @asyncio_test
    async def test_receive_after_response_returns_disconnect(self) -> None:
        seen: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await receive()
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"ok"})
            seen.append(await receive())

        server = await serve(self, app)
        await exchange(server.port, REQUEST)
        self.assertEqual(seen, [{"type": "http.disconnect"}])

    @asyncio_test
    async def test_content_length_mismatch_closes_the_connection(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"short"})

        server = await serve(self, app)
        response = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive asked
        # Nothing was written yet: a 500, never a head promising ten bytes and five sent.
        self.assertTrue(response.startswith(b"HTTP/1.1 500 "), response)
        self.assertNotIn(b"short", response)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class AccessLogTests(unittest.TestCase):
    @asyncio_test
    async def test_one_access_line_per_request(self) -> None:
        lines: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, lines.append)
        server = await serve(self, hello_app)
        await exchange(server.port, b"POST /logged?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                    b"Connection: close\r\n\r\nab")
        access = [event for event in lines if event.get("log_namespace") == "hello_asgi.access"]
        self.assertEqual(len(access), 1)
        event = access[0]
        self.assertEqual((event["method"], event["path"], event["query"], event["status"]),
                         ("POST", "/logged", "?q=1", 200))
        self.assertEqual(event["bytes_sent"], len(b"hello /logged ab"))
        self.assertTrue(event["client"].startswith("127.0.0.1:"))
        self.assertGreaterEqual(event["duration"], 0)

    @asyncio_test
    async def test_access_log_off_and_to_a_file(self) -> None:
        lines: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, lines.append)
        off = await serve(self, hello_app, access_log=None)
        await exchange(off.port, REQUEST)
        path = self.mktemp()
        to_file = await serve(self, hello_app, access_log=path)
        await exchange(to_file.port, REQUEST)
        self.assertEqual([e for e in lines if e.get("log_namespace") == "hello_asgi.access"], [])
        with open(path) as log_file:
            self.assertIn('"GET / HTTP/1.1" 200 8', log_file.read())


class ResponseHeaderCheckTests(unittest.TestCase):
    """``checked_headers`` remembers the fields it found good, in a set bounded in count and
    in value size; what it refused it never remembers."""

    def test_good_fields_are_remembered_boundedly_and_bad_ones_never(self) -> None:
        fields = [(b"x-name-%d" % i, b"v") for i in range(stream._good_fields.most + 100)]
        for field in fields:
            self.assertEqual(stream.checked_headers([field]), [field])
            self.assertLessEqual(len(stream._good_fields), stream._good_fields.most)
        self.assertIn(fields[-1], stream._good_fields)
        long_value = (b"x-long", b"v" * (stream._good_fields.longest + 1))
        self.assertEqual(stream.checked_headers([long_value]), [long_value])
        self.assertNotIn(long_value, stream._good_fields)
        for bad in ((b"bad name", b"v"), (b"", b"v"), (b"x:y", b"v"), (fields[-1][0] + b"\n", b"v"),
                    (fields[-1][0], b"a\r\nb"), (fields[-1][0], b"a\x00")):
            self.assertRaises(ValueError, stream.checked_headers, [bad])
            self.assertNotIn(bad, stream._good_fields)


class _RecordingWriter:
    """A ``ResponseWriter`` that records what ``HTTPStream`` asks of it; ``drained`` gives
    ``self.drain`` (``None``: the client keeps up)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.drain: asyncio.Future[None] | None = None

    def write_response(self, s: Any, status: int, headers: Any, body: bytes, end: bool) -> None:
        self.calls.append(("response", status, list(headers), body, end))

    def write_body(self, s: Any, body: bytes, end: bool) -> None:
        self.calls.append(("body", body, end))

    def write_informational(self, s: Any, status: int, headers: Any) -> None:
        self.calls.append(("informational", status, headers))

    def write_trailers(self, s: Any, headers: Any) -> None:
        self.calls.append(("trailers", list(headers)))

    def push(self, s: Any, path: str, headers: Any) -> None:
        self.calls.append(("push", path, headers))

    def body_consumed(self, s: Any) -> None:
        pass

    def drained(self, s: Any) -> Any:
        return self.drain

    def abort(self, s: Any) -> None:
        self.calls.append(("abort",))

    def finished(self, s: Any) -> None:
        self.calls.append(("finished",))


class SendInMemoryTests(unittest.TestCase):
    """``HTTPStream.send`` over a recording writer, no sockets: each message kind, what it
    writes, and the error for each message sent out of order."""

    def stream(self, method: str = "GET", **extensions: Any) -> tuple[stream.HTTPStream, _RecordingWriter]:
        writer = _RecordingWriter()
        scope = {"type": "http", "method": method, "path": "/", "extensions": dict(extensions)}
        return stream.HTTPStream(scope, writer, body_complete=True), writer  # type: ignore[arg-type]

    @asyncio_test
    async def test_the_head_goes_with_the_first_chunk_and_the_last_ends_it(self) -> None:
        http, writer = self.stream()
        await http.send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"1")]})
        self.assertEqual(writer.calls, [])
        await http.send({"type": "http.response.body", "body": b"x", "more_body": True})
        await http.send({"type": "http.response.body", "body": b"yz"})
        self.assertEqual(writer.calls, [("response", 200, [(b"a", b"1")], b"x", False), ("body", b"yz", True)])
        self.assertEqual((http.response_done, http.bytes_sent), (True, 3))

    @asyncio_test
    async def test_messages_out_of_order(self) -> None:
        start = {"type": "http.response.start", "status": 200}
        body = {"type": "http.response.body", "body": b""}
        http, _ = self.stream()
        with self.assertRaisesRegex(RuntimeError, "^'http.response.body' sent before the response was started"):
            await http.send(body)
        await http.send(start)
        with self.assertRaisesRegex(RuntimeError, "^'http.response.start' sent twice$"):
            await http.send(start)
        with self.assertRaisesRegex(RuntimeError, "^'http.response.trailers' sent without 'trailers'"):
            await http.send({"type": "http.response.trailers", "headers": []})
        await http.send(body)
        with self.assertRaisesRegex(RuntimeError, "^'http.response.body' sent after the response was started"):
            await http.send(body)
        with self.assertRaisesRegex(RuntimeError, "^'http.response.early_hint' sent after the response began$"):
            await http.send({"type": "http.response.early_hint", "links": [b"</a>; rel=preload"]})
        with self.assertRaisesRegex(RuntimeError, "^unexpected ASGI message 'http.response.nope' in an HTTP"):
            await http.send({"type": "http.response.nope"})
        await http.send({"type": "http.disconnect"})  # asks nothing

    @asyncio_test
    async def test_trailers_gather_until_the_last(self) -> None:
        http, writer = self.stream()
        await http.send({"type": "http.response.start", "status": 200, "trailers": True})
        await http.send({"type": "http.response.body", "body": b"x"})
        await http.send({"type": "http.response.trailers", "headers": [(b"a", b"1")], "more_trailers": True})
        await http.send({"type": "http.response.trailers", "headers": [(b"b", b"2")]})
        self.assertEqual(writer.calls, [("response", 200, [], b"x", False), ("trailers", [(b"a", b"1"), (b"b", b"2")])])

    @asyncio_test
    async def test_early_hints_and_push_only_where_offered(self) -> None:
        hint = {"type": "http.response.early_hint", "links": [b"</a>; rel=preload"]}
        push = {"type": "http.response.push", "path": "/a", "headers": []}
        http, writer = self.stream()
        await http.send(hint)
        await http.send(push)
        self.assertEqual(writer.calls, [])
        http, writer = self.stream(**{"http.response.early_hint": {}, "http.response.push": {}})
        await http.send(hint)
        await http.send(push)
        self.assertEqual(writer.calls, [("informational", 103, [(b"link", b"</a>; rel=preload")]), ("push", "/a", [])])

    @asyncio_test
    async def test_a_slow_client_makes_send_wait_and_its_leaving_raises(self) -> None:
        http, writer = self.stream()
        writer.drain = asyncio.get_running_loop().create_future()
        await http.send({"type": "http.response.start", "status": 200})
        sending = asyncio.ensure_future(http.send({"type": "http.response.body", "body": b"x", "more_body": True}))
        await asyncio.sleep(0)
        self.assertFalse(sending.done())
        http.disconnect()
        writer.drain.set_result(None)
        with self.assertRaisesRegex(ClientDisconnected, "client disconnected while the response was sent"):
            await sending
        await http.send({"type": "http.disconnect"})  # still asks nothing
        with self.assertRaisesRegex(ClientDisconnected, "cannot send 'http.response.body'"):
            await http.send({"type": "http.response.body", "body": b""})
