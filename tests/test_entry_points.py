"""``python -m hello_asgi``, ``hello_asgi.run()``, and the Uvicorn habits: --uds, --fd,
--factory, proxy headers trusted from loopback by default."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test

from .support import get_when_up, parse_responses
from .test_cli import TWIST, _Server, free_port
from .test_workers import PID_APP, get


class EntryPointTests(unittest.TestCase):
    def directory(self) -> Path:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "app.py").write_text("VERSION = 'one'\n" + PID_APP + "\ndef create():\n    return app\n")
        return directory

    def spawn(self, args: list[str], directory: Path, childFDs: dict[int, Any] | None = None) -> tuple[_Server, Any]:
        server = _Server()
        process = reactor.spawnProcess(server, args[0], args, env=os.environ, path=str(directory),
                                       childFDs=childFDs)
        self.addCleanup(lambda: None if server.ended.called else (process.signalProcess("KILL"), server.ended)[1])
        return server, process

    async def stop(self, server: _Server, process: Any, how: int = signal.SIGINT) -> None:
        """Stop it by ``how``: a graceful stop, status 0, lifespan shutdown run."""
        process.signalProcess(how)
        code = await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 30)
        self.assertEqual(code, (0, None), server.output)
        self.assertIn(b"lifespan shutdown", server.output)
        self.assertNotIn(b"Traceback", server.output)

    @asyncio_test
    async def test_python_dash_m_hello_asgi_is_the_command(self) -> None:
        directory = self.directory()
        port = free_port()
        server, process = self.spawn([sys.executable, "-m", "hello_asgi", "--app", "app:app", "--port", str(port)],
                                     directory)
        response = await get_when_up(f"http://127.0.0.1:{port}/m")
        self.assertTrue(response.text.startswith("one "))
        self.assertIn(b"[hello_asgi.service#info] Serving http://127.0.0.1:", server.output)
        await self.stop(server, process)

    def run_script(self, source: str) -> tuple[_Server, Any]:
        """``python main.py`` beside app.py, ``main.py`` being ``source``."""
        directory = self.directory()
        (directory / "main.py").write_text(source)
        server, process = self.spawn([sys.executable, "main.py"], directory)
        server.directory = str(directory)  # type: ignore[attr-defined]
        return server, process

    @asyncio_test
    async def test_run_serves_an_app_object_with_config_names(self) -> None:
        port = free_port()
        server, process = self.run_script(
            "import hello_asgi\nfrom app import app\n\n"
            "if __name__ == '__main__':\n"
            f"    hello_asgi.run(app, host='127.0.0.1', port={port}, server_header=b'from-run', log_level='debug',"
            " loop='asyncio')\n")
        response = await get_when_up(f"http://127.0.0.1:{port}/run")
        self.assertEqual(response.headers["server"], "from-run")
        self.assertIn(b"Running on the asyncio reactor, on asyncio's event loop", server.output)
        self.assertIn(b"Serving http://127.0.0.1:%d" % port, server.output)
        await self.stop(server, process)

    @asyncio_test
    async def test_run_takes_a_string_and_listen(self) -> None:
        port = free_port()
        server, process = self.run_script(
            "import hello_asgi\n\n"
            f"hello_asgi.run('app:app', listen=['tcp:{port}:interface=127.0.0.1'], log_format='json')\n")
        await get_when_up(f"http://127.0.0.1:{port}/run")
        await self.stop(server, process, signal.SIGTERM)
        messages = [json.loads(line)["message"] for line in server.output.decode().splitlines()
                    if line.startswith("{")]
        self.assertIn("Received SIGTERM, shutting down.", messages)

    async def seen(self, server: _Server, text: bytes, times: int = 1) -> None:
        """Until ``text`` is in the output ``times`` times."""
        while server.output.count(text) < times:
            if server.ended.called:
                self.fail(f"ended before {text!r} x{times}: {server.output.decode(errors='replace')}")
            appeared: Deferred[None] = Deferred()
            server.watch_for(text, appeared)
            await asyncio.wait_for(appeared.asFuture(asyncio.get_running_loop()), 30)

    @asyncio_test
    async def test_run_with_workers_serves_from_that_many_processes(self) -> None:
        port = free_port()
        server, process = self.run_script(
            "import hello_asgi\n\n"
            "if __name__ == '__main__':\n"
            f"    hello_asgi.run('app:app', port={port}, workers=2, server_header=b'from-workers')\n")
        await self.seen(server, b"lifespan startup", 2)
        workers = {int(pid) for pid in re.findall(rb"Started worker (\d+)", server.output)}
        self.assertEqual(len(workers), 2, server.output)
        served: set[int] = set()
        for _ in range(50):  # rounds of 8 at once: the kernel hands connections to either worker
            bodies = await asyncio.gather(*(get(port) for _ in range(8)))
            served |= {int(body.split()[1]) for body in bodies}
            if len(served) == 2:
                break
        self.assertEqual(served, workers)
        for pid in workers:  # each its own lines, with the settings run() was given
            self.assertIn(b"[worker %d] Serving http://127.0.0.1:%d" % (pid, port), server.output)
        self.assertEqual((await get_when_up(f"http://127.0.0.1:{port}/")).headers["server"], "from-workers")
        await self.stop(server, process, signal.SIGTERM)
        self.assertEqual(sorted(int(pid) for pid in re.findall(rb"lifespan shutdown (\d+)", server.output)),
                         sorted(workers))

    @asyncio_test
    async def test_run_with_reload_serves_an_edit(self) -> None:
        port = free_port()
        server, process = self.run_script(
            "import hello_asgi\n\n"
            "if __name__ == '__main__':\n"
            f"    hello_asgi.run('app:app', port={port}, reload=True)\n")
        self.assertTrue((await get_when_up(f"http://127.0.0.1:{port}/")).text.startswith("one "))
        directory = Path(server.directory)
        (directory / "app.py").write_text("VERSION = 'two'\n" + PID_APP)
        await self.seen(server, b"Restarted 1 worker(s)")
        self.assertTrue((await get(port)).startswith(b"two "))
        self.assertIn(b"app.py changed", server.output)
        await self.stop(server, process, signal.SIGTERM)

    def test_workers_and_reload_need_an_import_string(self) -> None:
        from hello_asgi import run

        async def app(scope: Any, receive: Any, send: Any) -> None:
            pass

        for options in ({"workers": 2}, {"reload": True}):
            with self.assertRaisesRegex(ValueError, r"need the app as an import string, run\('module:attr', ...\)"):
                run(app, **options)
        with self.assertRaisesRegex(ValueError, "workers must be a whole number, at least 1, not 0"):
            run("app:app", workers=0)

    def test_run_refuses_a_name_that_is_no_option(self) -> None:
        from hello_asgi import run

        with self.assertRaisesRegex(TypeError, "not Config fields: keepalive"):
            run("hello_asgi.demo:asgi", keepalive=3)

    @asyncio_test
    async def test_uds_and_factory(self) -> None:
        directory = self.directory()
        sockets = tempfile.mkdtemp(prefix="ha-")  # a UNIX socket's path must stay under 108 bytes
        self.addCleanup(shutil.rmtree, sockets, True)
        path = os.path.join(sockets, "app.sock")
        server, process = self.spawn([*TWIST, "hello-asgi", "--app", "app:create", "--factory", "--uds", path],
                                     directory)
        for _ in range(400):
            if b"Serving" in server.output or server.ended.called:
                break
            await asyncio.sleep(0.05)  # starting
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"GET /uds HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        [(response, body)] = parse_responses(await asyncio.wait_for(reader.read(), 10))
        writer.close()
        self.assertEqual(response.status_code, 200)
        self.assertTrue(body.startswith(b"one "))
        self.assertIn(b"(UNIX socket " + path.encode(), server.output)
        await self.stop(server, process)

    @asyncio_test
    async def test_fd_serves_an_inherited_socket(self) -> None:
        directory = self.directory()
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        server, process = self.spawn([*TWIST, "hello-asgi", "--app", "app:app", "--fd", "3"], directory,
                                     childFDs={0: "w", 1: "r", 2: "r", 3: listener.fileno()})
        response = await get_when_up(f"http://127.0.0.1:{port}/fd")
        self.assertTrue(response.text.startswith("one "))
        await self.stop(server, process)


async def one_response(*options: str, environment: dict[str, str] | None = None,
                       headers: dict[str, str] | None = None) -> Any:
    """Serve the demo with ``options``, GET / once (with ``headers``), stop: the response."""
    import httpx

    port = free_port()
    server = _Server()
    args = [*TWIST, "hello-asgi", "--app", "hello_asgi.demo:asgi", "--port", str(port), *options]
    process = reactor.spawnProcess(server, TWIST[0], args, env={**os.environ, **(environment or {})})
    try:
        await get_when_up(f"http://127.0.0.1:{port}/")
        async with httpx.AsyncClient() as client:
            return await client.get(f"http://127.0.0.1:{port}/", headers=headers)
    finally:
        process.signalProcess(signal.SIGTERM)
        await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 30)


class ProxyHeaderDefaultTests(unittest.TestCase):
    async def client_seen(self, *options: str) -> Any:
        response = await one_response(*options, headers={"x-forwarded-for": "203.0.113.7"})
        return response.json()["client"]

    @asyncio_test
    async def test_a_local_proxy_is_trusted_by_default_and_can_be_ignored(self) -> None:
        self.assertEqual((await self.client_seen())[0], "203.0.113.7")  # loopback is a trusted proxy
        self.assertEqual((await self.client_seen("--no-proxy-headers"))[0], "127.0.0.1")
        self.assertEqual((await self.client_seen("--forwarded-allow-ips", "10.0.0.1"))[0], "127.0.0.1")


HEADERS_VARIABLE = {"HELLO_ASGI_HEADER": "Cache-Control: no-store, max-age=0\nX-Two: 2"}


class DefaultHeaderTests(unittest.TestCase):
    @asyncio_test
    async def test_header_adds_response_headers_an_app_did_not_set(self) -> None:
        response = await one_response("--header", "X-Frame-Options: DENY", "--header", "server:behind-the-curtain",
                                      environment=HEADERS_VARIABLE)
        self.assertEqual(response.headers["x-frame-options"], "DENY")
        self.assertEqual(response.headers.get_list("server"), ["behind-the-curtain"])  # replaces the default
        self.assertNotIn("cache-control", response.headers)  # the command line's --header wins over the variable

    def test_parse_header_refuses_what_is_no_header(self) -> None:
        from hello_asgi.headers import parse_header

        self.assertEqual(parse_header("X-A: b c"), (b"x-a", b"b c"))
        for bad in ("no-colon", ": empty name", "X-A: b\r\nX-Injected: 1"):
            with self.assertRaises(ValueError):
                parse_header(bad)

    @asyncio_test
    async def test_headers_from_the_environment_one_a_line(self) -> None:
        response = await one_response(environment=HEADERS_VARIABLE)
        self.assertEqual((response.headers["cache-control"], response.headers["x-two"]), ("no-store, max-age=0", "2"))
