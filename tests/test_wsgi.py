"""WSGI apps (issue 18): the hello world over every way into the server, the environ,
start_response, write(), close(), errors, the thread pool, shutdown and embedding, over
real loopback connections."""

from __future__ import annotations

import asyncio
import io
import json
import os
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import globalLogPublisher, formatEvent
from twisted.trial import unittest

from hello_asgi import demo
from hello_asgi.config import Config
from hello_asgi.factory import ASGIServerFactory
from hello_asgi.loading import as_asgi3
from hello_asgi.testing import asyncio_test, serve
from hello_asgi.tls import development_certificate
from hello_asgi.wsgi import WSGIApp

from .support import TIMEOUT, H2Client, connect, cut_off, exchange, parse_responses

PEP_3333_KEYS = {
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
    "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "wsgi.version",
    "wsgi.url_scheme", "wsgi.input", "wsgi.input_terminated", "wsgi.errors", "wsgi.multithread",
    "wsgi.multiprocess", "wsgi.run_once", "wsgi.file_wrapper",
}


class Signal:
    """Fired from a worker thread, awaited on the loop: how a test knows where the app is."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self.loop.create_future()

    def fire(self, value: Any = None) -> None:
        self.loop.call_soon_threadsafe(lambda: self.future.done() or self.future.set_result(value))

    async def wait(self) -> Any:
        return await asyncio.wait_for(asyncio.shield(self.future), TIMEOUT)


def logged(test: unittest.TestCase) -> list[str]:
    """The text of every log event from now until the test ends."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        lines.append(text)

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


def tls_pair(test: unittest.TestCase) -> tuple[dict[str, str], ssl.SSLContext]:
    cert, key, _ = development_certificate(Path(test.mktemp()))
    return {"certfile": str(cert), "keyfile": str(key)}, ssl.create_default_context(cafile=str(cert))


class HelloWorldTests(unittest.TestCase):
    """``hello_asgi.demo:wsgi``, the issue's app as written, on every way in."""

    def check_environ(self, environ: dict[str, Any], protocol: str, scheme: str = "http") -> None:
        self.assertLessEqual(PEP_3333_KEYS, set(environ))
        self.assertEqual(environ["SERVER_PROTOCOL"], protocol)
        self.assertEqual(environ["wsgi.url_scheme"], scheme)
        self.assertEqual(environ["wsgi.version"], [1, 0])
        self.assertEqual(environ["REMOTE_ADDR"], "127.0.0.1")
        self.assertTrue(environ["REMOTE_PORT"].isdigit())
        self.assertEqual(environ["SERVER_NAME"], "127.0.0.1")
        self.assertIs(environ["wsgi.input_terminated"], True)
        self.assertIs(environ["wsgi.multithread"], True)
        self.assertIs(environ["wsgi.multiprocess"], False)
        self.assertIs(environ["wsgi.run_once"], False)
        self.assertIn("FileWrapper", environ["wsgi.file_wrapper"])

    @asyncio_test
    async def test_http11_every_pep_3333_key(self) -> None:
        server = await serve(self, demo.wsgi)
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{server.url}/caf%C3%A9/a%2Fb?q=1&r=%20", content=b"x" * 5,
                headers=[("Content-Type", "text/plain"), ("X-Many", "one"), ("X-Many", "two"),
                         ("Cookie", "a=1"), ("Cookie", "b=2"), ("X_Sneaky", "dropped")])
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.headers["content-type"], "application/json")
        environ = response.json()
        self.check_environ(environ, "HTTP/1.1")
        self.assertEqual(environ["REQUEST_METHOD"], "POST")
        self.assertEqual(environ["SCRIPT_NAME"], "")
        self.assertEqual(environ["PATH_INFO"], "/caf\u00c3\u00a9/a/b")  # %-decoded bytes, as latin-1
        self.assertEqual(environ["QUERY_STRING"], "q=1&r=%20")
        self.assertEqual(environ["CONTENT_TYPE"], "text/plain")
        self.assertEqual(environ["CONTENT_LENGTH"], "5")
        self.assertEqual(environ["SERVER_PORT"], str(server.port))
        self.assertEqual(environ["HTTP_HOST"], f"127.0.0.1:{server.port}")
        self.assertEqual(environ["HTTP_X_MANY"], "one,two")
        self.assertEqual(environ["HTTP_COOKIE"], "a=1; b=2")
        self.assertNotIn("HTTP_X_SNEAKY", environ)  # "_" would pass for "-": dropped
        self.assertNotIn("HTTP_CONTENT_TYPE", environ)

    @asyncio_test
    async def test_http2_prior_knowledge(self) -> None:
        server = await serve(self, demo.wsgi)
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            response = await client.get(f"{server.url}/h2?x=1")
        self.assertEqual(response.http_version, "HTTP/2")
        environ = response.json()
        self.check_environ(environ, "HTTP/2")
        self.assertEqual(environ["PATH_INFO"], "/h2")
        self.assertEqual(environ["CONTENT_LENGTH"], "")

    @asyncio_test
    async def test_h2c_upgrade(self) -> None:
        server = await serve(self, demo.wsgi)
        process = await asyncio.create_subprocess_exec(
            "curl", "-s", "--http2", "-o", "-", "-w", "\n%{http_version}", f"{server.url}/up",
            stdout=asyncio.subprocess.PIPE)
        output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
        body, version = output.rsplit(b"\n", 1)
        self.assertEqual(version, b"2")
        self.check_environ(json.loads(body), "HTTP/2")

    @asyncio_test
    async def test_tls_alpn_h2_and_tls_http11(self) -> None:
        files, context = tls_pair(self)
        server = await serve(self, demo.wsgi, **files)
        url = f"https://localhost:{server.port}/tls"
        async with httpx.AsyncClient(http2=True, verify=context) as client:
            response = await client.get(url)
        self.assertEqual(response.http_version, "HTTP/2")
        self.check_environ({**response.json(), "SERVER_NAME": "127.0.0.1"}, "HTTP/2", "https")
        async with httpx.AsyncClient(verify=context) as client:
            response = await client.get(url)
        self.assertEqual(response.http_version, "HTTP/1.1")
        self.check_environ(response.json(), "HTTP/1.1", "https")

    @asyncio_test
    async def test_proxy_headers_rewrite_remote_addr_and_scheme(self) -> None:
        server = await serve(self, demo.wsgi, proxy_headers=True)
        async with httpx.AsyncClient() as client:
            response = await client.get(server.url, headers={"X-Forwarded-For": "203.0.113.9",
                                                             "X-Forwarded-Proto": "https"})
        environ = response.json()
        self.assertEqual(environ["REMOTE_ADDR"], "203.0.113.9")
        self.assertEqual(environ["wsgi.url_scheme"], "https")

    @asyncio_test
    async def test_the_proxy_protocol_rewrites_remote_addr(self) -> None:
        server = await serve(self, demo.wsgi, proxy_protocol=True)
        data = await exchange(server.port, b"PROXY TCP4 203.0.113.5 192.0.2.1 51234 443\r\n"
                                           b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ((response, body),) = parse_responses(data)
        environ = json.loads(body)
        self.assertEqual((environ["REMOTE_ADDR"], environ["REMOTE_PORT"]), ("203.0.113.5", "51234"))
        self.assertEqual((environ["SERVER_NAME"], environ["SERVER_PORT"]), ("192.0.2.1", "443"))

    @asyncio_test
    async def test_root_path_is_script_name(self) -> None:
        server = await serve(self, demo.wsgi, root_path="/mount")
        async with httpx.AsyncClient() as client:
            environ = (await client.get(f"{server.url}/page")).json()
        self.assertEqual((environ["SCRIPT_NAME"], environ["PATH_INFO"]), ("/mount", "/page"))

    @asyncio_test
    async def test_head_sends_no_body(self) -> None:
        server = await serve(self, demo.wsgi)
        data = await exchange(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ((response, body),) = parse_responses(data, [b"HEAD"])
        self.assertEqual((response.status_code, body), (200, b""))


def environ_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr(sorted(environ)).encode()]


class DetectionTests(unittest.TestCase):
    """How an app is told apart: ASGI 3, ASGI 2, WSGI, and classes of each."""

    def kind(self, app: Any, interface: str = "auto") -> str:
        adapted = as_asgi3(app, interface)
        if isinstance(adapted, WSGIApp):
            return "wsgi"
        return "asgi2" if type(adapted).__name__ == "ASGI2Adapter" else "asgi3"

    def test_each_kind(self) -> None:
        class WSGIClass:  # the class is the app: its instance is the iterable
            def __init__(self, environ: Any, start_response: Any) -> None:
                pass

            def __iter__(self) -> Any:
                return iter([])

        class WSGICallable:
            def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
                return []

        class ASGI3Callable:
            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                pass

        class ASGI2Class:
            def __init__(self, scope: Any) -> None:
                pass

        async def asgi3(scope: Any, receive: Any, send: Any) -> None:
            pass

        self.assertEqual(self.kind(demo.wsgi), "wsgi")
        self.assertEqual(self.kind(environ_app), "wsgi")
        self.assertEqual(self.kind(WSGIClass), "wsgi")
        self.assertEqual(self.kind(WSGICallable()), "wsgi")
        self.assertEqual(self.kind(ASGI3Callable()), "asgi3")
        self.assertEqual(self.kind(asgi3), "asgi3")
        self.assertEqual(self.kind(demo.asgi), "asgi2")
        self.assertEqual(self.kind(ASGI2Class), "asgi2")

    def test_frameworks(self) -> None:
        import flask
        from django.core.handlers.asgi import ASGIHandler
        from django.core.handlers.wsgi import WSGIHandler

        self.assertEqual(self.kind(flask.Flask("detect")), "wsgi")
        self.assertEqual(self.kind(WSGIHandler.__call__.__get__(object.__new__(WSGIHandler))), "wsgi")
        self.assertEqual(self.kind(object.__new__(ASGIHandler)), "asgi3")

    def test_ambiguous_callables_are_asgi3_unless_forced(self) -> None:
        def anything(*args: Any) -> list[bytes]:
            args[1]("200 OK", [])
            return [b"forced"]

        self.assertEqual(self.kind(anything), "asgi3")
        self.assertEqual(self.kind(anything, "wsgi"), "wsgi")
        adapted = as_asgi3(anything, "wsgi")
        self.assertIs(as_asgi3(adapted, "wsgi"), adapted)  # the command loads, then the factory: once

    @asyncio_test
    async def test_forced_wsgi_serves(self) -> None:
        def anything(*args: Any) -> list[bytes]:
            args[1]("200 OK", [])
            return [b"forced"]

        server = await serve(self, anything, interface="wsgi")
        async with httpx.AsyncClient() as client:
            self.assertEqual((await client.get(server.url)).text, "forced")

    @asyncio_test
    async def test_lifespan_is_answered_quietly(self) -> None:
        lines = logged(self)
        server = await serve(self, environ_app, lifespan="on")  # "on" fails the start if unanswered
        async with httpx.AsyncClient() as client:
            self.assertEqual((await client.get(server.url)).status_code, 200)
        await server.service.stopService().asFuture(asyncio.get_running_loop())
        self.assertFalse([line for line in lines if "lifespan" in line.lower() or "Traceback" in line], lines)

    @asyncio_test
    async def test_websocket_is_denied(self) -> None:
        server = await serve(self, environ_app)
        data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                           b"Sec-WebSocket-Version: 13\r\n\r\n", until=b"\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 403"), data)


class ResponseTests(unittest.TestCase):
    """start_response, write(), exc_info, close(), Content-Length, file_wrapper."""

    async def get(self, app: Any, path: str = "/", **settings: Any) -> httpx.Response:
        server = await serve(self, app, **settings)
        async with httpx.AsyncClient() as client:
            return await client.get(server.url + path)

    @asyncio_test
    async def test_write_callable(self) -> None:
        def app(environ: Any, start_response: Any) -> list[bytes]:
            write = start_response("201 Created", [("X-Legacy", "yes")])
            write(b"written ")
            write(b"twice ")
            return [b"then returned"]

        response = await self.get(app)
        self.assertEqual((response.status_code, response.headers["x-legacy"]), (201, "yes"))
        self.assertEqual(response.text, "written twice then returned")

    @asyncio_test
    async def test_exc_info_before_the_head_replaces_it(self) -> None:
        def app(environ: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [("X-First", "1")])
            try:
                raise KeyError("boom")
            except KeyError:
                start_response("503 Service Unavailable", [("X-Second", "2")], sys.exc_info())
            return [b"sorry"]

        response = await self.get(app)
        self.assertEqual((response.status_code, response.text), (503, "sorry"))
        self.assertNotIn("x-first", response.headers)

    @asyncio_test
    async def test_exc_info_after_the_head_reraises_and_cuts(self) -> None:
        lines = logged(self)
        closed = Signal()

        class Body:
            def __init__(self, start_response: Any) -> None:
                self.start_response = start_response

            def __iter__(self) -> Any:
                yield b"first part"
                try:
                    raise KeyError("late failure")
                except KeyError:
                    self.start_response("500 Oops", [], sys.exc_info())
                yield b"never"

            def close(self) -> None:
                closed.fire()

        def app(environ: Any, start_response: Any) -> Body:
            start_response("200 OK", [])
            return Body(start_response)

        server = await serve(self, app)
        data, _ = await cut_off(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await closed.wait()
        self.assertIn(b"first part", data)
        self.assertNotIn(b"never", data)
        self.assertFalse(data.endswith(b"0\r\n\r\n"))  # cut: no last chunk
        self.assertTrue(any("late failure" in line for line in lines))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    @asyncio_test
    async def test_start_response_twice_without_exc_info_is_an_error(self) -> None:
        def app(environ: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [])
            start_response("200 OK", [])
            return [b""]

        lines = logged(self)
        self.assertEqual((await self.get(app)).status_code, 500)
        self.assertTrue(any("second time without exc_info" in line for line in lines))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @asyncio_test
    async def test_content_length_caps_the_body(self) -> None:
        closed = Signal()

        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [("Content-Length", "5")])

            def body() -> Any:
                try:
                    yield b"abc"
                    yield b"defgh"
                    yield b"never reached"
                finally:
                    closed.fire()
            return body()

        response = await self.get(app)
        self.assertEqual(response.content, b"abcde")
        await closed.wait()

    @asyncio_test
    async def test_empty_items_do_not_send_the_head_early(self) -> None:
        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [])
            yield b""  # PEP 3333: the head waits for the first non-empty item
            try:
                raise KeyError("changed my mind")
            except KeyError:
                start_response("404 Not Found", [], sys.exc_info())  # still allowed: nothing went out
            yield b"x"

        response = await self.get(app)
        self.assertEqual((response.status_code, response.content), (404, b"x"))

    @asyncio_test
    async def test_file_wrapper_by_path_over_http11(self) -> None:
        from hello_asgi.transport import SendfileCounter

        path = Path(self.mktemp())
        content = os.urandom(300_000)
        path.write_bytes(content)

        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return environ["wsgi.file_wrapper"](open(path, "rb"), 4096)

        before = SendfileCounter.sent
        response = await self.get(app)
        self.assertEqual(response.content, content)
        self.assertEqual(response.headers["content-length"], str(len(content)))
        self.assertEqual(SendfileCounter.sent - before, len(content))  # by os.sendfile, not 4 KiB reads

    @asyncio_test
    async def test_file_wrapper_without_a_path_is_read(self) -> None:
        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [])
            return environ["wsgi.file_wrapper"](io.BytesIO(b"in memory" * 1000), 100)

        self.assertEqual((await self.get(app)).content, b"in memory" * 1000)

    @asyncio_test
    async def test_file_wrapper_over_http2_is_read_in_chunks(self) -> None:
        path = Path(self.mktemp())
        content = os.urandom(200_000)
        path.write_bytes(content)

        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [])
            return environ["wsgi.file_wrapper"](open(path, "rb"))

        server = await serve(self, app)
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            self.assertEqual((await client.get(server.url)).content, content)

    @asyncio_test
    async def test_wsgi_errors_is_logged(self) -> None:
        lines = logged(self)
        said = Signal()

        def app(environ: Any, start_response: Any) -> list[bytes]:
            environ["wsgi.errors"].write("first line\nsecond ")
            environ["wsgi.errors"].write("line\n")
            environ["wsgi.errors"].flush()
            said.fire()
            start_response("200 OK", [])
            return [b""]

        await self.get(app)
        await said.wait()
        await asyncio.sleep(0)  # the lines cross to the loop with call_soon_threadsafe
        self.assertIn("first line", lines)
        self.assertIn("second line", lines)


class ErrorTests(unittest.TestCase):
    @asyncio_test
    async def test_exception_before_start_response_is_a_500_with_the_traceback(self) -> None:
        lines = logged(self)

        def app(environ: Any, start_response: Any) -> list[bytes]:
            raise ZeroDivisionError("before anything")

        server = await serve(self, app)
        async with httpx.AsyncClient() as client:
            response = await client.get(server.url + "/fail")
        self.assertEqual(response.status_code, 500)
        (line,) = [line for line in lines if "before anything" in line]
        self.assertIn("Traceback", line)
        self.assertIn("in app", line)  # the app's own frame, from the worker thread
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @asyncio_test
    async def test_exception_before_the_first_body_byte_is_a_500(self) -> None:
        closed = Signal()

        class Body:
            def __iter__(self) -> Any:
                yield b""
                raise ValueError("no body after all")

            def close(self) -> None:
                closed.fire()

        def app(environ: Any, start_response: Any) -> Body:
            start_response("200 OK", [("X-Never", "seen")])
            return Body()

        server = await serve(self, app)
        async with httpx.AsyncClient() as client:
            response = await client.get(server.url)
        self.assertEqual(response.status_code, 500)
        self.assertNotIn("x-never", response.headers)
        await closed.wait()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    @asyncio_test
    async def test_exception_after_the_first_byte_cuts_http11_and_resets_http2(self) -> None:
        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [])
            yield b"partial"
            raise ValueError("mid-body")

        server = await serve(self, app)
        data, _ = await cut_off(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"partial", data)
        self.assertFalse(data.endswith(b"0\r\n\r\n"))
        client = await H2Client.open(server.port)
        self.addCleanup(client.close)
        stream_id = client.request("/")
        while stream_id not in client.resets and stream_id not in client.ended:
            await client.pump()
        self.assertIn(stream_id, client.resets)
        self.assertEqual(client.bodies.get(stream_id), b"partial")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)

    @asyncio_test
    async def test_bad_status_and_headers_never_reach_the_wire(self) -> None:
        lines = logged(self)
        cases = {
            "/int": (200, []),
            "/digits": ("2000 OK", []),
            "/crlf": ("200 OK", [("X-Bad", "a\r\nInjected: yes")]),
            "/name": ("200 OK", [("Bad Name", "x")]),
            "/bytes": ("200 OK", [(b"X-Bytes", b"x")]),
            "/unicode": ("200 OK", [("X-Snow", "\u2603")]),
        }

        def app(environ: Any, start_response: Any) -> list[bytes]:
            status, headers = cases[environ["PATH_INFO"]]
            start_response(status, headers)
            return [b"body"]

        server = await serve(self, app)
        async with httpx.AsyncClient() as client:
            for path in cases:
                response = await client.get(server.url + path)
                self.assertEqual(response.status_code, 500, path)
                self.assertNotIn("injected", response.headers)
                self.assertNotEqual(response.text, "body")
        refused = [line for line in lines if "WSGI start_response" in line]
        self.assertEqual(len(refused), len(cases), lines)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), len(cases))

    @asyncio_test
    async def test_hop_by_hop_headers_are_dropped(self) -> None:
        def app(environ: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Transfer-Encoding", "gzip"), ("Keep-Alive", "timeout=1"),
                                      ("X-Kept", "1")])
            return [b"body"]

        server = await serve(self, app)
        async with httpx.AsyncClient() as client:
            response = await client.get(server.url)
        self.assertEqual((response.text, response.headers["x-kept"]), ("body", "1"))
        self.assertNotIn("keep-alive", response.headers)


class StreamingTests(unittest.TestCase):
    @asyncio_test
    async def test_input_read_readline_readlines_and_iteration(self) -> None:
        def app(environ: Any, start_response: Any) -> list[bytes]:
            stream = environ["wsgi.input"]
            parts = [stream.read(3), stream.readline(), stream.readline(4), stream.readline()]
            parts += stream.readlines(1)
            parts += list(stream)
            parts.append(stream.read())
            parts.append(stream.read(10))
            start_response("200 OK", [])
            return [json.dumps([part.decode() for part in parts]).encode()]

        server = await serve(self, app)
        body = b"abcdef\nline two\nthree\nfour\nfive\nsix"
        async def chunks() -> Any:  # chunked, in pieces that cut lines
            for start in range(0, len(body), 5):
                yield body[start:start + 5]

        async with httpx.AsyncClient() as client:
            response = await client.post(server.url, content=chunks())
        self.assertEqual(response.json(), ["abc", "def\n", "line", " two\n", "three\n", "four\n", "five\n",
                                           "six", "", ""])

    @asyncio_test
    async def test_an_http2_body_that_comes_after_its_head(self) -> None:
        def app(environ: Any, start_response: Any) -> list[bytes]:
            body = environ["wsgi.input"].read()
            start_response("200 OK", [])
            return [b"%d %s" % (len(body), body[:5])]

        server = await serve(self, app)
        client = await H2Client.open(server.port)
        self.addCleanup(client.close)
        stream_id = client.request("/", "POST", end=False)  # the head alone: the body follows
        await asyncio.sleep(0.1)  # an observation window: the call starts before any body
        client.conn.send_data(stream_id, b"hello ", end_stream=False)
        client.conn.send_data(stream_id, b"world", end_stream=True)
        client.flush()
        _, body = await client.response(stream_id)
        self.assertEqual(body, b"11 hello")

    @asyncio_test
    async def test_100_continue_only_when_the_app_reads(self) -> None:
        def app(environ: Any, start_response: Any) -> list[bytes]:
            if environ["PATH_INFO"] == "/read":
                environ["wsgi.input"].read()
            start_response("200 OK", [])
            return [b"done"]

        server = await serve(self, app)
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        reader, writer = await connect(server.port)
        self.addCleanup(writer.close)
        writer.write(head % b"/read")
        self.assertEqual(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT),
                         b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"12345")
        self.assertIn(b"200 OK", await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT))
        data = await exchange(server.port, head % b"/ignore", until=b"done")
        self.assertNotIn(b"100 Continue", data)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"), data)

    @asyncio_test
    async def test_a_slow_reader_holds_the_app_back(self) -> None:
        yielded = []

        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [])
            for _ in range(4000):  # 256 MB if nothing held it back
                yielded.append(1)
                yield b"x" * 65536

        server = await serve(self, app)
        reader, writer = await connect(server.port)
        self.addCleanup(writer.close)
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(3):
            before = len(yielded)
            await asyncio.sleep(0.3)  # an observation window: the app would race on if nothing held it
        self.assertEqual(len(yielded), before)  # it stopped
        self.assertLess(len(yielded) * 65536, 32 * 1024 * 1024)  # socket buffers and two windows, not more
        writer.transport.resume_reading()  # type: ignore[attr-defined]
        total = 0
        while total < 4000 * 65536:
            chunk = await asyncio.wait_for(reader.read(1 << 20), TIMEOUT)
            self.assertTrue(chunk)
            total += len(chunk)
        self.assertEqual(len(yielded), 4000)

    @asyncio_test
    async def test_close_is_called_when_the_client_goes_away(self) -> None:
        closed = Signal()
        started = Signal()

        class Endless:
            def __iter__(self) -> Any:
                while True:
                    started.fire()
                    yield b"y" * 65536

            def close(self) -> None:
                closed.fire()

        def app(environ: Any, start_response: Any) -> Endless:
            start_response("200 OK", [])
            return Endless()

        server = await serve(self, app)
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.read(1000)
        await started.wait()
        writer.transport.abort()  # type: ignore[attr-defined]
        await closed.wait()
        await asyncio.wait_for(self._slot_back(server), TIMEOUT)

    async def _slot_back(self, server: Any) -> None:
        pool = server.service.factory.app.pool
        while pool.busy:
            await asyncio.sleep(0.01)

    @asyncio_test
    async def test_a_body_read_after_the_client_left_raises(self) -> None:
        outcome = Signal()

        def app(environ: Any, start_response: Any) -> list[bytes]:
            try:
                while environ["wsgi.input"].read(1024):
                    pass
            except OSError as error:
                outcome.fire(error)
                raise
            outcome.fire(None)
            start_response("200 OK", [])
            return [b""]

        server = await serve(self, app)
        reader, writer = await connect(server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()  # type: ignore[attr-defined]
        self.assertIsInstance(await outcome.wait(), OSError)


class PoolTests(unittest.TestCase):
    @asyncio_test
    async def test_calls_run_on_threads_of_their_own_all_at_once(self) -> None:
        barrier = threading.Barrier(3, timeout=TIMEOUT)  # broken unless three calls run at once
        seen: list[int] = []

        def app(environ: Any, start_response: Any) -> list[bytes]:
            seen.append(threading.get_ident())
            barrier.wait()
            start_response("200 OK", [])
            return [b"met"]

        server = await serve(self, WSGIApp(app, threads=3))
        async with httpx.AsyncClient() as client:
            responses = await asyncio.gather(*(client.get(server.url) for _ in range(3)))
        self.assertEqual([response.text for response in responses], ["met"] * 3)
        self.assertEqual(len(set(seen)), 3)
        self.assertNotIn(threading.get_ident(), seen)  # never the reactor's (and the app loop's) thread

    @asyncio_test
    async def test_beyond_the_threads_a_request_waits_for_one(self) -> None:
        release = threading.Event()
        entered: list[str] = []
        first_in = Signal()

        def app(environ: Any, start_response: Any) -> list[bytes]:
            entered.append(environ["PATH_INFO"])
            if environ["PATH_INFO"] == "/first":
                first_in.fire()
                release.wait(TIMEOUT)
            start_response("200 OK", [])
            return [environ["PATH_INFO"].encode()]

        server = await serve(self, WSGIApp(app, threads=1))
        async with httpx.AsyncClient() as client:
            first = asyncio.ensure_future(client.get(server.url + "/first"))
            await first_in.wait()
            second = asyncio.ensure_future(client.get(server.url + "/second"))
            await asyncio.sleep(0.2)  # an observation window: the second must not get a thread
            self.assertEqual(entered, ["/first"])
            self.assertFalse(second.done())
            release.set()
            self.assertEqual((await first).text, "/first")
            self.assertEqual((await second).text, "/second")
        self.assertEqual(entered, ["/first", "/second"])

    @asyncio_test
    async def test_a_request_waiting_past_the_request_timeout_gets_504(self) -> None:
        release = threading.Event()
        self.addCleanup(release.set)
        first_in = Signal()

        def app(environ: Any, start_response: Any) -> list[bytes]:
            first_in.fire()
            release.wait(TIMEOUT)
            start_response("200 OK", [])
            return [b"late"]

        server = await serve(self, WSGIApp(app, threads=1), request_timeout=0.3)
        async with httpx.AsyncClient() as client:
            first = asyncio.ensure_future(client.get(server.url + "/first"))
            await first_in.wait()
            response = await client.get(server.url + "/second")
            self.assertEqual(response.status_code, 504)
            self.assertEqual((await first).status_code, 504)  # the busy one timed out too
        release.set()
        pool = server.service.factory.app.pool
        while pool.busy:  # the stuck thread gives its slot back once it ends
            await asyncio.sleep(0.01)


class ShutdownAndEmbeddingTests(unittest.TestCase):
    @asyncio_test
    async def test_graceful_shutdown_finishes_requests_in_flight(self) -> None:
        release = threading.Event()
        inside = Signal()

        def app(environ: Any, start_response: Any) -> Any:
            inside.fire()
            release.wait(TIMEOUT)
            start_response("200 OK", [])
            yield b"finished"

        server = await serve(self, app, graceful_timeout=5)
        async with httpx.AsyncClient() as client:
            request = asyncio.ensure_future(client.get(server.url))
            await inside.wait()
            stopping = server.service.stopService().asFuture(asyncio.get_running_loop())
            await asyncio.sleep(0.1)  # an observation window: the stop waits for the request
            self.assertFalse(stopping.done())
            release.set()
            response = await request
        self.assertEqual(response.text, "finished")
        await asyncio.wait_for(stopping, TIMEOUT)

    @asyncio_test
    async def test_a_factory_takes_a_wsgi_app(self) -> None:
        factory = ASGIServerFactory(demo.wsgi, Config())
        listening = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        port = await listening.asFuture(asyncio.get_running_loop())
        self.addCleanup(port.stopListening)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port.getHost().port}/embedded")
        self.assertEqual(response.json()["PATH_INFO"], "/embedded")
        for connection in list(factory.connections):
            connection.transport.loseConnection()

    def test_an_embedded_wsgi_app_gets_the_configured_threads(self) -> None:
        """``Config.wsgi_threads`` reaches a WSGI app given to the factory, as to the command's."""
        factory = ASGIServerFactory(demo.wsgi, Config(wsgi_threads=3))
        self.assertEqual(factory.app.pool.size, 3)  # type: ignore[attr-defined]  # (an ASGIApp: WSGIApp's pool)


ISSUE_APP = '''import json

def wsgi(environ, start_response):
    start_response('200 OK', [
        ('Content-Type', 'application/json'),
    ])
    yield json.dumps(environ, default=repr).encode()
'''


class CommandTests(unittest.TestCase):
    """``twist hello-asgi --app app:wsgi``, the issue's app.py as written, as a process."""

    async def serve_process(self, *options: str) -> tuple[Any, Any, int]:
        from twisted.internet.defer import Deferred

        from .test_cli import TWIST, _Server, free_port

        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "app.py").write_text(ISSUE_APP)
        port = free_port()
        server = _Server()
        args = [*TWIST, "hello-asgi", "--app", "app:wsgi", "--port", str(port), *options]
        process = reactor.spawnProcess(server, TWIST[0], args, env=os.environ, path=str(directory))

        async def stop() -> None:
            if not server.ended.called:
                process.signalProcess("TERM")
                await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 30)

        self.addCleanup(lambda: Deferred.fromFuture(asyncio.ensure_future(stop())))
        self.stop = stop
        return server, process, port

    async def get(self, url: str, **client: Any) -> httpx.Response:
        async with httpx.AsyncClient(**client) as http:
            for _ in range(400):
                try:
                    return await http.get(url)
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)  # the process is still starting
            return await http.get(url)

    @asyncio_test
    async def test_twist_serves_the_issue_app(self) -> None:
        server, _, port = await self.serve_process()
        response = await self.get(f"http://127.0.0.1:{port}/cmd")
        environ = response.json()
        self.assertLessEqual(PEP_3333_KEYS, set(environ))
        self.assertEqual((environ["PATH_INFO"], environ["SERVER_PROTOCOL"]), ("/cmd", "HTTP/1.1"))
        await self.stop()
        self.assertNotIn(b"Traceback", server.output)
        self.assertNotIn(b"lifespan", server.output.lower())  # nothing about lifespan, alarming or not

    @asyncio_test
    async def test_twist_tls_serves_http2(self) -> None:
        server, _, port = await self.serve_process("--tls")
        response = await self.get(f"https://127.0.0.1:{port}/tls", http2=True, verify=False)
        self.assertEqual(response.http_version, "HTTP/2")
        self.assertEqual(response.json()["wsgi.url_scheme"], "https")
        self.assertEqual(response.json()["SERVER_PROTOCOL"], "HTTP/2")

    @asyncio_test
    async def test_workers_say_multiprocess(self) -> None:
        server, _, port = await self.serve_process("--workers", "2", "--wsgi-threads", "3")
        environ = (await self.get(f"http://127.0.0.1:{port}/")).json()
        self.assertIs(environ["wsgi.multiprocess"], True)
        self.assertIs(environ["wsgi.multithread"], True)


class SettingTests(unittest.TestCase):
    def test_wsgi_threads_and_interface_from_the_command_line(self) -> None:
        from hello_asgi.cli import Options

        options = Options()
        options.parseOptions(["--app", "hello_asgi.demo:wsgi", "--wsgi-threads", "3", "--interface", "wsgi"])
        app = options["loaded_app"]
        self.assertIsInstance(app, WSGIApp)
        self.assertEqual((app.threads, app.pool.size, options["config"].interface), (3, 3, "wsgi"))

    def test_wsgi_threads_must_be_at_least_one(self) -> None:
        with self.assertRaises(ValueError):
            Config(wsgi_threads=0).validate()
        with self.assertRaises(ValueError):
            WSGIApp(demo.wsgi, threads=0)
        Config(interface="wsgi", wsgi_threads=1).validate()
