"""Embedding: the public API inside Twisted programs of one's own, on whichever reactor trial runs.

CI runs this module twice, on the asyncio reactor and on the epoll reactor (where apps run
on an asyncio loop in a companion thread). The clients are blocking ones (httpx, the
websockets sync client) run in trial's thread pool, so they work under any reactor.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.threads import deferToThread
from twisted.protocols.policies import WrappingFactory
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File
from websockets.sync.client import connect as websocket_connect

from hello_asgi import ASGIResource, ASGIServerFactory, ASGIService, Config
from hello_asgi.testing import serve
from hello_asgi.tls import development_certificate, server_options

ON_ASYNCIO = getattr(reactor, "_asyncioEventloop", None) is not None
APP_THREAD = "MainThread" if ON_ASYNCIO else "hello-asgi apps"


class Recorder:
    """An app that answers with what it saw, and remembers its lifespan."""

    def __init__(self) -> None:
        self.lifespan: list[str] = []
        self.arrived: Deferred[None] = Deferred()  # fired on the reactor's thread when /slow comes in
        self._gate: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open_gate(self) -> None:
        """From the reactor's thread: let /slow answer."""
        assert self._loop is not None and self._gate is not None
        self._loop.call_soon_threadsafe(self._gate.set)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                phase = message["type"].split(".")[1]
                self.lifespan.append(phase)
                if phase == "startup":
                    scope["state"]["started"] = True
                await send({"type": f"lifespan.{phase}.complete"})
                if phase == "shutdown":
                    return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps(self.seen(scope))})
            while (message := await receive())["type"] == "websocket.receive":
                await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
            return
        path = scope["path"]
        if path.endswith("/boom"):
            raise ZeroDivisionError("the app fails")
        messages, size = 0, 0
        while True:
            message = await receive()
            messages, size = messages + 1, size + len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        if path.endswith("/midway"):
            await send({"type": "http.response.body", "body": b"half", "more_body": True})
            raise ZeroDivisionError("the app fails midway")
        if path.endswith("/stream"):
            for part in (b"one ", b"two ", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body"})
            return
        if path.endswith("/slow"):
            self._loop, self._gate = asyncio.get_running_loop(), asyncio.Event()
            reactor.callFromThread(self.arrived.callback, None)
            await self._gate.wait()
        seen = self.seen(scope) | {"messages": messages, "size": size}
        await send({"type": "http.response.body", "body": json.dumps(seen).encode()})

    @staticmethod
    def seen(scope: dict[str, Any]) -> dict[str, Any]:
        return {
            "thread": threading.current_thread().name,
            "http_version": scope["http_version"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode(),
            "root_path": scope["root_path"],
            "query_string": scope["query_string"].decode(),
            "scheme": scope["scheme"],
            "state": scope["state"],
        }


def get(url: str, http2: bool = False, verify: Any = True, **kwargs: Any) -> httpx.Response:
    with httpx.Client(http1=not http2, http2=http2, verify=verify, headers={"connection": "close"}) as client:
        return client.request(kwargs.pop("method", "GET"), url, **kwargs)


def websocket_echo(url: str, context: ssl.SSLContext | None = None) -> tuple[dict[str, Any], str, bytes]:
    with websocket_connect(url, compression=None, ssl=context) as ws:
        seen = json.loads(ws.recv())
        ws.send("hello")
        text = ws.recv()
        ws.send(b"\x00\x01")
        data = ws.recv()
    return seen, text, data


class _Tracking(WrappingFactory):
    """A site's factory that can wait until every connection it served has closed."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._waiters: list[Deferred[None]] = []

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        if not self.protocols:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def closed(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if self.protocols:
            self._waiters.append(waiter)
        else:
            waiter.callback(None)
        return waiter


class ServerFactoryTests(unittest.TestCase):
    async def test_factory_on_an_endpoint_speaks_http1_http2_and_websockets(self) -> None:
        factory = ASGIServerFactory(Recorder(), Config(access_log=None))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(factory.whenDrained)
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}"

        http1 = (await deferToThread(get, base + "/one?x=1")).json()
        self.assertEqual((http1["http_version"], http1["path"], http1["query_string"]), ("1.1", "/one", "x=1"))
        self.assertEqual(http1["thread"], APP_THREAD)
        http2 = (await deferToThread(get, base + "/two", http2=True)).json()
        self.assertEqual(http2["http_version"], "2")
        seen, text, data = await deferToThread(websocket_echo, base.replace("http", "ws") + "/chat")
        self.assertEqual((seen["path"], seen["scheme"], text, data), ("/chat", "ws", "hello", b"\x00\x01"))


    async def test_slow_reader_makes_send_wait(self) -> None:
        app = Firehose()
        factory = ASGIServerFactory(app, Config(access_log=None))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(factory.whenDrained)
        self.addCleanup(port.stopListening)
        sent_while_paused, received = await deferToThread(
            read_slowly, f"http://127.0.0.1:{port.getHost().port}", "/", app.progress)
        self.assertLess(sent_while_paused, 32, "send() never waited for the client")
        self.assertGreater(received, 32 * 1048576)


    async def test_pathsend_is_read_on_twisted_transports(self) -> None:
        """Twisted's own TCP transport (and, under another reactor, the companion loop's
        crossing) cannot ``sendfile``: the file is read, and arrives whole over both versions."""
        from hello_asgi.transport import SendfileCounter

        app = FileSender(Path(self.mktemp()))
        factory = ASGIServerFactory(app, Config(access_log=None))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(factory.whenDrained)
        self.addCleanup(port.stopListening)
        before = SendfileCounter.sent
        for http2 in (False, True):
            response = await deferToThread(get, f"http://127.0.0.1:{port.getHost().port}/", http2=http2)
            self.assertEqual((response.status_code, response.content), (200, app.content))
            self.assertEqual(response.headers["content-length"], str(len(app.content)))
        self.assertEqual(SendfileCounter.sent, before)


class FileSender:
    """Sends a file of 3 MiB and a little by ``http.response.pathsend``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.content = os.urandom(3 * 1048576 + 5)
        path.write_bytes(self.content)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(self.path)})


class Firehose:
    """An app that sends 32 MiB in chunks of 1 MiB, counting the ``send()`` calls that returned."""

    def __init__(self) -> None:
        self.sent = 0

    def progress(self) -> int:
        return self.sent

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(32):
            await send({"type": "http.response.body", "body": b"x" * 1048576, "more_body": True})
            self.sent += 1
        await send({"type": "http.response.body"})


class ServiceTests(unittest.TestCase):
    async def test_service_beside_a_twisted_protocol_runs_lifespan_and_stops_gracefully(self) -> None:
        app = Recorder()
        services = MultiService()
        asgi = ASGIService(app, Config(listen=["tcp:0:interface=127.0.0.1"], access_log=None))
        asgi.setServiceParent(services)
        services.startService()
        ports = await asgi.whenListening()
        echo = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(_Echo))
        self.addCleanup(echo.stopListening)
        self.assertEqual(app.lifespan, ["startup"])

        slow = deferToThread(get, f"http://127.0.0.1:{ports[0].getHost().port}/slow")
        await app.arrived  # the request is in: stop while it is in flight
        stopping = services.stopService()
        app.open_gate()
        response = await slow
        await stopping
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["state"], {"started": True})
        self.assertEqual(app.lifespan, ["startup", "shutdown"])

    async def test_testing_helper_works_with_deferreds(self) -> None:
        server = await serve(self, Recorder(), lifespan="off").started
        response = await deferToThread(get, server.url + "/from-a-test")
        self.assertEqual(response.json()["path"], "/from-a-test")

    async def test_default_headers_in_front_of_an_asgi2_and_a_wsgi_app(self) -> None:
        """The service's wrappers (``default_headers`` here) sit in front of the app made ASGI 3:
        an ASGI 2 app keeps its ``asgi.version`` and a WSGI app runs on its threads."""
        from hello_asgi import demo

        for app, interface, read in ((demo.asgi, "auto", lambda body: body["asgi"]["version"]),
                                     (demo.asgi, "asgi2", lambda body: body["asgi"]["version"]),
                                     (demo.wsgi, "auto", lambda body: body["SERVER_PROTOCOL"]),
                                     (demo.wsgi, "wsgi", lambda body: body["SERVER_PROTOCOL"])):
            server = await serve(self, app, lifespan="off", access_log=None, wsgi_threads=2, interface=interface,
                                 default_headers=[(b"x-added", b"yes")]).started
            response = await deferToThread(get, server.url + "/")
            self.assertEqual(response.status_code, 200)
            self.assertEqual(response.headers["x-added"], "yes")
            self.assertIn(read(response.json()), ("2.0", "HTTP/1.1"))
            if app is demo.wsgi:
                self.assertEqual(server.service.factory.app.__wrapped__.pool.size, 2)  # type: ignore[attr-defined]


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class ResourceTests(unittest.TestCase):
    async def start_site(self, app: Any, tls: Path | None = None, **settings: Any) -> tuple[str, ASGIResource]:
        """A twisted.web site with static files at /static and ``app`` at /api; over TLS
        with the certificate ``tls`` and its key beside it (ALPN offers h2)."""
        static = self.mktemp()
        os.makedirs(static)
        with open(os.path.join(static, "hello.txt"), "w") as page:
            page.write("a static file")
        root = Resource()
        root.putChild(b"static", File(static))
        api = ASGIResource(app, Config(access_log=None, **settings))
        root.putChild(b"api", api)
        site = _Tracking(Site(root))
        if tls is None:
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
        else:
            options = server_options(str(tls), str(tls.with_name("dev-key.pem")))
            port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
        self.addCleanup(site.closed)
        self.addCleanup(port.stopListening)
        return f"{'https' if tls else 'http'}://127.0.0.1:{port.getHost().port}", api

    async def test_mounted_under_api_beside_static_files(self) -> None:
        base, _ = await self.start_site(Recorder())
        seen = (await deferToThread(get, base + "/api/items/42?x=1")).json()
        self.assertEqual(
            (seen["root_path"], seen["path"], seen["raw_path"], seen["query_string"], seen["http_version"]),
            ("/api", "/api/items/42", "/api/items/42", "x=1", "1.1"),
        )
        self.assertEqual(seen["thread"], APP_THREAD)
        static = await deferToThread(get, base + "/static/hello.txt")
        self.assertEqual(static.text, "a static file")

    async def test_request_body_reaches_the_app_in_chunks(self) -> None:
        base, _ = await self.start_site(Recorder())
        body = os.urandom(1024 * 1024)
        seen = (await deferToThread(get, base + "/api/upload", method="POST", content=body)).json()
        self.assertEqual(seen["size"], len(body))
        self.assertEqual(seen["messages"], 16)  # 64 KiB each, not one message of 1 MiB

    async def test_streamed_response(self) -> None:
        base, _ = await self.start_site(Recorder())
        response = await deferToThread(get, base + "/api/stream")
        self.assertEqual(response.text, "one two three")
        self.assertEqual(response.headers["transfer-encoding"], "chunked")
        self.assertEqual(response.headers["content-type"], "application/json")

    async def test_slow_reader_makes_send_wait(self) -> None:
        app = Firehose()
        base, _ = await self.start_site(app)
        sent_while_paused, received = await deferToThread(read_slowly, base, "/api/", app.progress)
        self.assertLess(sent_while_paused, 32, "send() never waited for the client")
        self.assertGreater(received, 32 * 1048576)  # all of it, once the client read

    async def test_pathsend_in_a_site(self) -> None:
        app = FileSender(Path(self.mktemp()))
        base, _ = await self.start_site(app)
        response = await deferToThread(get, base + "/api/file")
        self.assertEqual((response.status_code, response.content), (200, app.content))

    async def test_app_error_is_a_500_and_the_site_goes_on(self) -> None:
        base, _ = await self.start_site(Recorder())
        response = await deferToThread(get, base + "/api/boom")
        self.assertEqual(response.status_code, 500)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual((await deferToThread(get, base + "/api/after")).status_code, 200)

    async def test_app_error_once_the_response_started_cuts_it(self) -> None:
        cert, _, _ = development_certificate(Path(self.mktemp()))
        for base, http2 in [((await self.start_site(Recorder()))[0], False),
                            ((await self.start_site(Recorder(), tls=cert))[0], True)]:
            with self.assertRaises(httpx.TransportError):  # a reset, or a body cut short
                await deferToThread(get, base + "/api/midway", http2=http2, verify=str(cert))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    async def test_websocket_under_the_mount_point(self) -> None:
        base, _ = await self.start_site(Recorder())
        seen, text, data = await deferToThread(websocket_echo, base.replace("http", "ws") + "/api/chat?room=1")
        self.assertEqual((seen["root_path"], seen["path"], seen["query_string"]), ("/api", "/api/chat", "room=1"))
        self.assertEqual((text, data), ("hello", b"\x00\x01"))
        self.assertEqual(seen["thread"], APP_THREAD)

    async def test_bad_websocket_handshake_is_refused_by_the_resource(self) -> None:
        base, _ = await self.start_site(Recorder())
        response = await deferToThread(get, base + "/api/chat", headers={"upgrade": "websocket",
                                                                          "sec-websocket-version": "8"})
        self.assertEqual(response.status_code, 426)
        self.assertEqual(response.headers["sec-websocket-version"], "13")

    async def test_over_tls_with_http2_and_wss(self) -> None:
        cert, _, _ = development_certificate(Path(self.mktemp()))
        base, _ = await self.start_site(Recorder(), tls=cert)
        seen = (await deferToThread(get, base + "/api/secure", http2=True, verify=str(cert))).json()
        self.assertEqual((seen["scheme"], seen["http_version"], seen["root_path"]), ("https", "2", "/api"))
        context = ssl.create_default_context(cafile=str(cert))
        seen, text, _ = await deferToThread(websocket_echo, base.replace("https", "wss") + "/api/chat", context)
        self.assertEqual((seen["scheme"], seen["path"], text), ("wss", "/api/chat", "hello"))

    async def test_lifespan_service(self) -> None:
        app = Recorder()
        base, api = await self.start_site(app)
        lifespan = api.lifespan_service()
        lifespan.startService()
        seen = (await deferToThread(get, base + "/api/state")).json()
        self.assertEqual(seen["state"], {"started": True})
        await lifespan.stopService()
        self.assertEqual(app.lifespan, ["startup", "shutdown"])


EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


class _Twistd(ProcessProtocol):
    """``twistd -ny`` on an example: ``ports`` fires once its log names every port it listens on."""

    def __init__(self, wanted: list[str]) -> None:
        self.output = b""
        self._wanted = wanted
        self.ports: Deferred[dict[str, int]] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        found = dict(re.findall(rb"\] (\w+) starting on (\d+)", self.output))
        if not self.ports.called and all(name.encode() in found for name in self._wanted):
            self.ports.callback({name: int(found[name.encode()]) for name in self._wanted})

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.ports.called:
            self.ports.errback(RuntimeError(self.output.decode(errors="replace")))
        self.ended.callback(None)


class ExampleTests(unittest.TestCase):
    """Each example in docs/examples runs under twistd's default reactor (epoll here), as the docs say."""

    async def run_example(self, name: str, *wanted: str) -> dict[str, int]:
        process = _Twistd(list(wanted))
        environment = {**os.environ, "PORT": "0", "HTTP_PORT": "0", "ECHO_PORT": "0"}
        transport = reactor.spawnProcess(process, sys.executable,
                                         [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--pidfile=", "-ny",
                                          str(EXAMPLES / name)], env=environment, path=self.mktemp_dir())

        async def stop() -> None:
            transport.signalProcess("TERM")
            await process.ended

        self.addCleanup(stop)
        return await process.ports

    def mktemp_dir(self) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        return directory

    async def test_asgi_app_beside_a_twisted_protocol(self) -> None:
        ports = await self.run_example("beside_a_protocol.tac", "Factory", "ASGIServerFactory")
        response = await deferToThread(get, f"http://127.0.0.1:{ports['ASGIServerFactory']}/")
        self.assertEqual(response.text, "EPollReactor")
        self.assertEqual(await deferToThread(echo_once, ports["Factory"], b"ping"), b"ping")

    async def test_starlette_under_api_in_a_site_with_static_files(self) -> None:
        ports = await self.run_example("starlette_site.tac", "Site")
        base = f"http://127.0.0.1:{ports['Site']}"
        item = (await deferToThread(get, base + "/api/items/kettle")).json()
        self.assertEqual(item, {"item": "kettle", "root_path": "/api"})
        static = await deferToThread(get, base + "/static/starlette_site.tac")
        self.assertIn("Starlette", static.text)
        self.assertEqual(await deferToThread(websocket_text, base.replace("http", "ws") + "/api/echo", "hi"), "hi")

    async def test_django_under_api_in_a_site(self) -> None:
        ports = await self.run_example("django_site.tac", "Site")
        seen = (await deferToThread(get, f"http://127.0.0.1:{ports['Site']}/api/hello/")).json()
        self.assertEqual(seen, {"path": "/api/hello/", "path_info": "/hello/", "script_name": "/api"})


def read_slowly(base: str, path: str, progress: Any) -> tuple[int, int]:
    """GET ``path`` and read nothing for half a second (``progress()`` then), then read it all."""
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        client.sendall(f"GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n".encode())
        threading.Event().wait(0.5)  # the slow client, not a wait for the server
        seen = progress()
        received = 0
        while data := client.recv(1 << 20):
            received += len(data)
    return seen, received


def echo_once(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(data)
        return connection.recv(len(data))


def websocket_text(url: str, text: str) -> str:
    with websocket_connect(url, compression=None) as ws:
        ws.send(text)
        return str(ws.recv())
