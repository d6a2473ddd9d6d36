"""``twist hello-asgi`` as a user runs it: a real process, real requests, real exit codes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import signal
import socket
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test

from .support import get_when_up

TWIST = [sys.executable, "-m", "twisted"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def twist(*args: str, path: str | None = None) -> Deferred[tuple[bytes, bytes, int]]:
    return getProcessOutputAndValue(TWIST[0], [*TWIST[1:], *args], env=os.environ, path=path)


class StartupErrorTests(unittest.TestCase):
    async def assert_one_line_error(self, expected: str, *args: str) -> None:
        out, err, code = await twist("hello-asgi", *args).asFuture(asyncio.get_running_loop())
        self.assertEqual(code, 1, err)
        lines = err.decode().strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertIn(expected, lines[0])

    @asyncio_test
    async def test_help_lists_the_options(self) -> None:
        out, err, code = await twist("hello-asgi", "--help").asFuture(asyncio.get_running_loop())
        self.assertEqual(code, 0)
        for option in (b"--app", b"--listen", b"--root-path", b"--interface", b"--lifespan",
                       b"--access-log", b"--no-access-log", b"--timeout-keep-alive",
                       b"--limit-concurrency", b"--limit-request-head", b"--ws-max-size", b"--ws-ping-interval",
                       b"--no-websocket"):
            self.assertIn(option, out)

    def test_websocket_options_reach_the_config(self) -> None:
        from hello_asgi.cli import Options

        options = Options()
        options.parseOptions(["--app", "hello_asgi.demo:asgi", "--ws-max-size", "1000", "--ws-max-frame-size", "500",
                              "--ws-ping-interval", "0", "--ws-ping-timeout", "3", "--ws-handshake-timeout", "2",
                              "--ws-max-queue", "8", "--no-ws-per-message-deflate", "--no-websocket"])
        config = options["config"]
        self.assertEqual((config.ws_max_message_size, config.ws_max_frame_size, config.ws_ping_interval,
                          config.ws_ping_timeout, config.ws_handshake_timeout, config.ws_max_queue),
                         (1000, 500, 0.0, 3.0, 2.0, 8))
        self.assertFalse(config.ws_per_message_deflate)
        self.assertFalse(config.websocket)

    def test_hostile_client_options_reach_the_config(self) -> None:
        from hello_asgi.cli import Options

        options = Options()
        options.parseOptions(["--app", "hello_asgi.demo:asgi", "--timeout-close", "2.5", "--timeout-body", "7",
                              "--limit-body-drain", "4096", "--h2-max-empty-frames", "50"])
        config = options["config"]
        self.assertEqual((config.close_timeout, config.body_timeout, config.max_body_drain,
                          config.h2_max_empty_frames), (2.5, 7.0, 4096, 50))

    def test_deployment_options_reach_the_config(self) -> None:
        from hello_asgi.cli import Options
        from hello_asgi.tls import development_certificate

        cert, key, _ = development_certificate(Path(self.mktemp()))
        options = Options()
        options.parseOptions(["--app", "hello_asgi.demo:asgi", "--timeout-request", "7", "--proxy-headers",
                              "--forwarded-allow-ips", "10.0.0.0/8, unix", "--proxy-protocol", "--cert", str(cert),
                              "--key", str(key), "--tls-min-version", "1.3", "--tls-ciphers", "ECDHE+AESGCM",
                              "--ca", str(cert), "--require-client-cert"])
        config = options["config"]
        self.assertEqual((config.request_timeout, config.proxy_headers, config.forwarded_allow_ips,
                          config.proxy_protocol), (7.0, True, ["10.0.0.0/8", "unix"], True))
        self.assertEqual((config.tls_min_version, config.tls_ciphers, config.ca_certs, config.require_client_cert),
                         ("1.3", "ECDHE+AESGCM", str(cert), True))
        options = Options()
        options.parseOptions(["--app", "hello_asgi.demo:asgi"])
        self.assertIsNone(options["config"].request_timeout)  # 0, the default, is no limit

    def test_workers_get_the_command_less_what_the_supervisor_does(self) -> None:
        from hello_asgi.cli import worker_command

        command = worker_command(["--app", "app:asgi", "--workers", "4", "-w2", "--reload", "--listen", "tcp:80",
                                  "--port=8000", "-p", "9000", "--host", "0.0.0.0", "--backlog", "10",
                                  "--proxy-headers", "--timeout-request", "5"])
        self.assertEqual(command[command.index("hello-asgi") + 1:],
                         ["--app", "app:asgi", "--proxy-headers", "--timeout-request", "5"])

    @asyncio_test
    async def test_missing_module(self) -> None:
        await self.assert_one_line_error("no module named 'nosuchmodule'", "--app", "nosuchmodule:app")

    @asyncio_test
    async def test_missing_attribute(self) -> None:
        await self.assert_one_line_error("module 'hello_asgi.demo' has no attribute 'nope'",
                                         "--app", "hello_asgi.demo:nope")

    @asyncio_test
    async def test_not_an_app(self) -> None:
        await self.assert_one_line_error("str object is not an ASGI app", "--app", "os:sep")

    @asyncio_test
    async def test_bad_endpoint_string(self) -> None:
        await self.assert_one_line_error("--listen bogus:1", "--app", "hello_asgi.demo:asgi",
                                         "--listen", "bogus:1")

    @asyncio_test
    async def test_port_in_use(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            out, err, code = await twist("--log-format=text", "hello-asgi", "--app", "hello_asgi.demo:asgi",
                                         "--port", str(port)).asFuture(asyncio.get_running_loop())
        self.assertEqual(code, 1)
        self.assertIn(b"Address already in use", out + err)

    @asyncio_test
    async def test_lifespan_startup_failure_exits_nonzero(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "failing.py"), "w") as module:
            module.write(
                "async def app(scope, receive, send):\n"
                "    await receive()\n"
                "    await send({'type': 'lifespan.startup.failed', 'message': 'database unreachable'})\n"
            )
        out, err, code = await twist("--log-format=text", "hello-asgi", "--app", "failing:app",
                                     "--port", str(free_port()), path=directory).asFuture(
            asyncio.get_running_loop())
        self.assertEqual(code, 1, out + err)
        self.assertIn(b"database unreachable", out)


class _Server(ProcessProtocol):
    """A server process: its output, a Deferred of its end, and waits for lines in its log."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[Any] = Deferred()
        self._watches: list[tuple[bytes, Deferred[None]]] = []

    def watch_for(self, text: bytes, seen: Deferred[None]) -> None:
        """Fire ``seen`` once ``text`` appears in output still to come."""
        self._watches.append((text, seen))

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for watch in list(self._watches):
            if watch[0] in data:
                self._watches.remove(watch)
                watch[1].callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback((reason.value.exitCode, reason.value.signal))


class ServeTests(unittest.TestCase):
    @asyncio_test
    async def test_serves_app_py_from_the_working_directory_and_stops_on_sigterm(self) -> None:
        await self.serve_and_stop()

    @asyncio_test
    async def test_serves_on_the_epoll_reactor_with_apps_in_a_companion_thread(self) -> None:
        output = await self.serve_and_stop("--reactor=epoll")
        self.assertIn(b"EPollReactor is not the asyncio reactor: apps run on an asyncio loop in a companion thread",
                      output)

    async def serve_and_stop(self, *before: str) -> bytes:
        """Serve app.py with ``twist [before] hello-asgi``, GET a page, SIGTERM: the output."""
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "app.py"), "w") as module:
            module.write("from hello_asgi.demo import asgi\n")
        port = free_port()
        server = _Server()
        args = [*TWIST, "--log-format=text", *before, "hello-asgi", "--app", "app:asgi", "--port", str(port)]
        process = reactor.spawnProcess(server, TWIST[0], args, env=os.environ, path=directory)
        loop = asyncio.get_running_loop()
        try:
            response = await get_when_up(f"http://127.0.0.1:{port}/from-cli")
            self.assertEqual(response.json()["path"], "/from-cli")
        finally:
            process.signalProcess(signal.SIGTERM)
            code, killed_by = await asyncio.wait_for(server.ended.asFuture(loop), 30)
        # a graceful stop is a success: exit status 0, not death by the signal twist would re-raise
        self.assertEqual((code, killed_by), (0, None), server.output)
        self.assertIn(b"Received SIGTERM, shutting down.", server.output)
        self.assertIn(b'"GET /from-cli HTTP/1.1" 200', server.output)
        return server.output
