"""HTTP/1.1 over real loopback sockets: the scope, framing, keep-alive, pipelining, flow control."""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any

import anyio
import httpx
from twisted.trial import unittest

from hello_asgi import demo, http1
from hello_asgi.context import HTTP_TASK
from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, connect, exchange, header, hello_app, parse_responses


class ScopeTests(unittest.TestCase):
    @asyncio_test
    async def test_hello_world_demo_answers_its_scope(self) -> None:
        server = await serve(self, demo.asgi)
        url = server.url
        async with httpx.AsyncClient() as client:
            response = await client.get(url + "/caf%C3%A9/a%20b?x=1&y=%20", headers={"X-Test": "v"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.headers["content-type"], "application/json")
        scope = response.json()
        self.assertEqual(scope["type"], "http")
        self.assertEqual(scope["asgi"], {"version": "2.0", "spec_version": "2.5"})
        self.assertEqual(scope["http_version"], "1.1")
        self.assertEqual(scope["method"], "GET")
        self.assertEqual(scope["scheme"], "http")
        self.assertEqual(scope["path"], "/café/a b")
        self.assertEqual(scope["raw_path"], "/caf%C3%A9/a%20b")
        self.assertEqual(scope["query_string"], "x=1&y=%20")
        self.assertEqual(scope["root_path"], "")
        self.assertIn(["x-test", "v"], scope["headers"])
        self.assertEqual(scope["headers"][0], ["host", f"127.0.0.1:{server.port}"])
        self.assertEqual(scope["client"][0], "127.0.0.1")
        self.assertEqual(scope["server"], ["127.0.0.1", server.port])
        self.assertEqual(scope["state"], {})
        self.assertEqual(scope["extensions"], {"http.response.early_hint": {}, "http.response.pathsend": {}})

    @asyncio_test
    async def test_asgi3_app_and_bytes_in_scope(self) -> None:
        scopes: list[dict[str, Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != 'http':
                return
            scopes.append(scope)
            await hello_app(scope, receive, send)

        url = (await serve(self, app, root_path="/api")).url
        async with httpx.AsyncClient() as client:
            response = await client.get(url + "/x?q")
        self.assertEqual(response.text, "hello /api/x ")
        scope = scopes[0]
        self.assertEqual(scope["asgi"]["version"], "3.0")
        self.assertEqual(scope["root_path"], "/api")
        self.assertEqual(scope["raw_path"], b"/api/x")
        self.assertEqual(scope["query_string"], b"q")
        self.assertIsInstance(scope["headers"][0][0], bytes)
        for name, _ in scope["headers"]:
            self.assertEqual(name, name.lower())
        json.dumps(scope, default=bytes.decode)

    @asyncio_test
    async def test_absolute_form_and_asterisk_targets(self) -> None:
        paths: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != 'http':
                return
            paths.append((scope["path"], scope["query_string"]))
            await hello_app(scope, receive, send)

        server = await serve(self, app)
        await exchange(server.port, b"GET http://example.com/abs?z=1 HTTP/1.1\r\nHost: example.com\r\n"
                                    b"Connection: close\r\n\r\n")
        await exchange(server.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(paths, [("/abs", b"z=1"), ("*", b"")])


class FramingTests(unittest.TestCase):
    @asyncio_test
    async def test_keep_alive_serves_many_requests_on_one_connection(self) -> None:
        server = await serve(self, hello_app)
        reader, writer = await connect(server.port)
        for path in (b"/one", b"/two", b"/three"):
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"))
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            self.assertEqual(body, b"hello " + path + b" ")
        writer.close()
        self.assertEqual(len(server.service.factory.connections), 1)

    @asyncio_test
    async def test_pipelined_responses_come_in_request_order(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != 'http':
                return
            if scope["path"] == "/slow":
                await asyncio.sleep(0.05)  # finish last if responses were not ordered
            await hello_app(scope, receive, send)

        server = await serve(self, app)
        data = await exchange(server.port,
                              b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
                              b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        responses = parse_responses(data, [b"GET", b"POST", b"GET"])
        self.assertEqual([body for _, body in responses], [b"hello /slow ", b"hello /post body", b"hello /last "])

    @asyncio_test
    async def test_chunked_request_body_is_dechunked_and_streamed(self) -> None:
        messages: list[dict[str, Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != 'http':
                return
            while True:
                message = await receive()
                messages.append(message)
                if not message["more_body"]:
                    break
            await send({"type": "http.response.start", "status": 204})
            await send({"type": "http.response.body"})

        server = await serve(self, app)
        reader, writer = await connect(server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n")
        while not messages:
            await asyncio.sleep(0)  # let the app take the first chunk before the rest is sent
        writer.write(b"6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        writer.close()
        self.assertTrue(head.startswith(b"HTTP/1.1 204 No Content\r\n"))
        self.assertNotIn(b"content-length", head.lower())
        self.assertEqual(b"".join(m["body"] for m in messages), b"hello world")
        self.assertEqual(messages[0], {"type": "http.request", "body": b"hello", "more_body": True})
        self.assertFalse(messages[-1]["more_body"])

    @asyncio_test
    async def test_response_without_length_is_chunked_and_with_one_body_gets_a_length(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != 'http':
                return
            await send({"type": "http.response.start", "status": 200})
            if scope["path"] == "/stream":
                for part in (b"a", b"", b"bc"):
                    await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"end"})

        server = await serve(self, app)
        data = await exchange(server.port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
                                           b"GET /one HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        (streamed, streamed_body), (single, single_body) = parse_responses(data, [b"GET", b"GET"])
        self.assertEqual(header(streamed, b"transfer-encoding"), b"chunked")
        self.assertEqual(streamed_body, b"abcend")
        self.assertEqual(header(single, b"content-length"), b"3")
        self.assertEqual(single_body, b"end")
        self.assertEqual(header(single, b"connection"), b"close")

    @asyncio_test
    async def test_head_sends_no_body(self) -> None:
        server = await serve(self, hello_app)
        data = await exchange(server.port, b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, rest = data.partition(b"\r\n\r\n")
        self.assertIn(b"content-length: 9", head)
        self.assertEqual(rest, b"")

    @asyncio_test
    async def test_http10_client_gets_close_delimited_or_keep_alive_when_asked(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != 'http':
                return
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await send({"type": "http.response.body", "body": b"y"})

        server = await serve(self, app)
        data = await exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertNotIn(b"chunked", data)
        self.assertTrue(data.endswith(b"\r\n\r\nxy"))

        server2 = await serve(self, hello_app)
        reader, writer = await connect(server2.port)
        writer.write(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        self.assertIn(b"connection: keep-alive", head)
        await reader.readexactly(9)
        writer.write(b"GET /b HTTP/1.0\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        self.assertTrue(rest.endswith(b"hello /b "))

    @asyncio_test
    async def test_connection_close_closes(self) -> None:
        server = await serve(self, hello_app)
        data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                           b"GET /ignored HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(data.count(b"HTTP/1.1 200"), 1)

    @asyncio_test
    async def test_date_and_server_headers_are_configurable(self) -> None:
        server = await serve(self, hello_app)
        data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response, _ = parse_responses(data)[0]
        self.assertEqual(header(response, b"server"), b"hello-asgi")
        self.assertRegex(header(response, b"date").decode(), r"^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$")

        quiet = await serve(self, hello_app, server_header=None, date_header=False)
        data = await exchange(quiet.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response, _ = parse_responses(data)[0]
        self.assertIsNone(header(response, b"server"))
        self.assertIsNone(header(response, b"date"))

    @asyncio_test
    async def test_app_server_header_replaces_ours(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != 'http':
                return
            await send({"type": "http.response.start", "status": 200, "headers": [(b"Server", b"mine")]})
            await send({"type": "http.response.body", "body": b""})

        server = await serve(self, app)
        data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(data.lower().count(b"server:"), 1)
        self.assertIn(b"Server: mine", data)


class ContinueTests(unittest.TestCase):
    @asyncio_test
    async def test_100_continue_only_when_the_app_reads(self) -> None:
        server = await serve(self, hello_app)
        reader, writer = await connect(server.port)
        writer.write(b"POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"abc")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"))
        self.assertEqual(await reader.readexactly(12), b"hello /c abc")
        writer.close()

    @asyncio_test
    async def test_no_100_continue_when_the_app_answers_without_reading(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != 'http':
                return
            await send({"type": "http.response.start", "status": 413})
            await send({"type": "http.response.body", "body": b"no"})

        server = await serve(self, app)
        reader, writer = await connect(server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        writer.close()
        self.assertTrue(head.startswith(b"HTTP/1.1 413"))


class FlowControlTests(unittest.TestCase):
    @asyncio_test
    async def test_app_not_reading_pauses_the_socket(self) -> None:
        """An upload to an app that does not call receive() stops at the body buffer."""
        release = asyncio.Event()
        received = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != 'http':
                return
            await release.wait()
            total = 0
            while True:
                message = await receive()
                total += len(message["body"])
                if not message["more_body"]:
                    break
            received.append(total)
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"%d" % total})

        size = 64 * 1024 * 1024
        server = await serve(self, app)
        reader, writer = await connect(server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        chunk = b"x" * (1024 * 1024)
        sent = 0
        while sent < size:
            writer.write(chunk)
            sent += len(chunk)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                break  # the server stopped reading: the kernel buffers are full
        self.assertLess(sent, size, "the server read a 64 MiB upload the app never asked for")
        (connection,) = server.service.factory.connections
        buffered = connection.inner._parsing.buffered
        self.assertLessEqual(buffered, server.service.config.body_buffer_size + 256 * 1024)
        release.set()
        while sent < size:
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"))
        self.assertEqual(received, [size])
        writer.close()

    @asyncio_test
    async def test_slow_client_makes_send_wait(self) -> None:
        """The app's send() waits while the client is not reading the response."""
        progress = []
        chunk = b"y" * 65536
        count = 1024  # 64 MiB: far more than socket buffers hold

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != 'http':
                return
            await send({"type": "http.response.start", "status": 200})
            for i in range(count):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                progress.append(i)
            await send({"type": "http.response.body", "body": b""})

        server = await serve(self, app)
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.5)  # ample time for the app to send everything if nothing held it back
        self.assertLess(len(progress), count // 4)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        total = 0
        while True:
            size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), TIMEOUT)
            size = int(size_line, 16)
            await reader.readexactly(size + 2)
            total += size
            if size == 0:
                break
        writer.close()
        self.assertEqual(total, len(chunk) * count)
        self.assertEqual(len(progress), count)


class AppTaskTests(unittest.TestCase):
    """Each request's app runs as one asyncio task, in a context of its own, from its first
    line (what anyio, under Starlette and FastAPI, relies on), and pipelined requests start
    one after another however many arrive in one read."""

    @asyncio_test
    async def test_the_app_is_one_task_in_a_context_of_its_own_from_its_first_line(self) -> None:
        seen: list[tuple[object, object, str | None]] = []
        request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var")

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            first = asyncio.current_task()
            leaked = request_var.get(None)  # set by the request before, in its own context only
            request_var.set(scope["path"])
            await receive()
            await asyncio.sleep(0)  # a real wait: the rest runs from the loop
            seen.append((first, asyncio.current_task(), leaked))
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"hello %s " % scope["path"].encode()})

        server = await serve(self, app)
        reader, writer = await connect(server.port)
        for path in (b"/a", b"/b"):
            writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            await asyncio.wait_for(reader.readuntil(b"hello %s " % path), TIMEOUT)
        writer.close()
        for first, later, leaked in seen:
            self.assertIsInstance(first, asyncio.Task)
            self.assertIs(first, later)
            self.assertIsNone(leaked)
        self.assertEqual(len(seen), 2)

    @asyncio_test
    async def test_a_thousand_pipelined_requests_in_one_read_are_answered_in_order(self) -> None:
        # Each next one is started from the task before it, as that one's response completes.
        server = await serve(self, hello_app)
        paths = [b"/%d" % i for i in range(1000)]
        data = await exchange(server.port, b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path for path in paths)
                              + b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        bodies = [body for _, body in parse_responses(data, [b"GET"] * 1001)]
        self.assertEqual(bodies, [b"hello %s " % path for path in [*paths, b"/end"]])

    @asyncio_test
    async def test_an_anyio_app_runs_from_its_first_line(self) -> None:
        # anyio's cancel scopes (Starlette, FastAPI) need the current task from the first line on.
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            with anyio.CancelScope():
                async with anyio.create_task_group() as group:
                    group.start_soon(anyio.sleep, 0)
                await hello_app(scope, receive, send)

        server = await serve(self, app)
        data = await exchange(server.port, b"GET /anyio HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual([body for _, body in parse_responses(data)], [b"hello /anyio "])


    @asyncio_test
    async def test_the_app_task_is_named_and_made_by_the_loops_task_factory_if_set(self) -> None:
        names: list[str] = []
        made: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                task = asyncio.current_task()
                assert task is not None
                names.append(task.get_name())
                await hello_app(scope, receive, send)

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            made.append(coro.__qualname__)
            return asyncio.Task(coro, loop=loop, **kwargs)

        server = await serve(self, app)
        request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        await exchange(server.port, request)
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        self.addCleanup(loop.set_task_factory, None)
        await exchange(server.port, request)
        self.assertEqual(names, [HTTP_TASK, HTTP_TASK])
        self.assertEqual(made.count("HTTPStream.run"), 1)  # the second request's, by the factory


class HostCheckTests(unittest.TestCase):
    """Host values found good are remembered, in a set bounded in count and in value size."""

    def test_good_hosts_are_remembered_boundedly_and_bad_ones_never(self) -> None:
        hosts = [b"host-%d.example:80" % i for i in range(http1._good_hosts.most + 50)]
        for host in hosts:
            http1._check_host(host, "1.1")
            self.assertLessEqual(len(http1._good_hosts), http1._good_hosts.most)
        self.assertIn(hosts[-1], http1._good_hosts)
        long_host = b"a" * (http1._good_hosts.longest + 1)
        http1._check_host(long_host, "1.1")  # good, but too long to keep
        self.assertNotIn(long_host, http1._good_hosts)
        for bad in (b"a b", b"u@a", hosts[-1] + b"\n" + hosts[-1]):
            self.assertRaises(http1._BadRequest, http1._check_host, bad, "1.1")
            self.assertNotIn(bad, http1._good_hosts)
