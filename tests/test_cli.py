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
                       b"--no-websocket", b"--log-format", b"--log-level", b"--no-stdlib-logging", b"--config",
                       b"--env-file", b"--uds", b"--fd", b"--factory", b"--header", b"--no-proxy-headers",
                       b"--limit-max-requests", b"--max-requests-jitter", b"--reload-dir", b"--reload-include",
                       b"--reload-exclude", b"--metrics-listen", b"--version", b"HELLO_ASGI_"):
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
                              "--limit-body-drain", "4096", "--h2-max-empty-frames", "50",
                              "--h2-max-window-size", "1048576"])
        config = options["config"]
        self.assertEqual((config.close_timeout, config.body_timeout, config.max_body_drain,
                          config.h2_max_empty_frames, config.h2_max_window_size), (2.5, 7.0, 4096, 50, 1048576))

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
        self._watches: list[tuple[bytes, Deferred[None], int]] = []

    def watch_for(self, text: bytes, seen: Deferred[None]) -> None:
        """Fire ``seen`` once ``text`` appears in output still to come (even split across reads)."""
        self._watches.append((text, seen, len(self.output)))

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for watch in list(self._watches):
            text, seen, start = watch
            if text in self.output[start:]:
                self._watches.remove(watch)
                seen.callback(None)

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


class UsageTests(unittest.TestCase):
    async def usage_error(self, *args: str) -> str:
        """Run ``twist hello-asgi ARGS``: a usage error is status 2, its line, and where help is."""
        out, err, code = await twist("hello-asgi", *args).asFuture(asyncio.get_running_loop())
        self.assertEqual(code, 2, err)
        first, second = err.decode().splitlines()  # two lines, not the whole help
        self.assertEqual(second, "see 'twist hello-asgi --help'")
        return first

    @asyncio_test
    async def test_a_bad_value_names_its_option_in_one_line(self) -> None:
        self.assertEqual(await self.usage_error("--app", "hello_asgi.demo:asgi", "--port", "abc"),
                         "hello-asgi: --port expects a whole number, not 'abc'")
        self.assertEqual(await self.usage_error("--app", "hello_asgi.demo:asgi", "--timeout-keep-alive", "soon"),
                         "hello-asgi: --timeout-keep-alive expects a number, not 'soon'")
        self.assertIn("--log-level", await self.usage_error("--app", "hello_asgi.demo:asgi", "--log-level", "loud"))

    @asyncio_test
    async def test_an_unknown_option_and_a_missing_app_are_one_line(self) -> None:
        self.assertEqual(await self.usage_error("--app", "hello_asgi.demo:asgi", "--nope"),
                         "hello-asgi: option --nope not recognized")
        self.assertIn("--app is required", await self.usage_error())

    @asyncio_test
    async def test_twists_options_after_hello_asgi_get_a_hint(self) -> None:
        line = await self.usage_error("--app", "hello_asgi.demo:asgi", "--reactor", "epoll")
        self.assertIn("--reactor is an option of twist itself: put it before hello-asgi", line)

    @asyncio_test
    async def test_version_is_hello_asgis_and_twisteds(self) -> None:
        import twisted

        import hello_asgi

        out, err, code = await twist("hello-asgi", "--version").asFuture(asyncio.get_running_loop())
        self.assertEqual(code, 0, err)
        self.assertTrue(out.decode().startswith(f"hello-asgi {hello_asgi.__version__} (Twisted {twisted.__version__}, "))


class SettingsSourcesTests(unittest.TestCase):
    """Command line over environment over config file, through the real parser."""

    def parse(self, arguments: list[str], environment: dict[str, str] | None = None) -> Any:
        from hello_asgi.cli import Options

        self.patch(os, "environ", {**{k: v for k, v in os.environ.items() if not k.startswith("HELLO_ASGI_")},
                                   **(environment or {})})
        options = Options()
        options.parseOptions(["--app", "hello_asgi.demo:asgi", *arguments])
        return options

    def config_file(self, text: str) -> str:
        path = Path(self.mktemp())
        path.write_text(text)
        return str(path)

    def test_each_source_sets_what_the_ones_above_it_leave_unset(self) -> None:
        path = self.config_file("timeout_keep_alive = 3\ntimeout_request_head = 4\nlimit_concurrency = 5\n"
                                "no_date_header = true\n")
        config = self.parse(["--config", path, "--timeout-keep-alive", "1"],
                            {"HELLO_ASGI_TIMEOUT_KEEP_ALIVE": "2", "HELLO_ASGI_TIMEOUT_REQUEST_HEAD": "2"})["config"]
        self.assertEqual((config.keep_alive_timeout, config.request_head_timeout, config.max_connections),
                         (1.0, 2.0, 5))  # command line, environment, file
        self.assertFalse(config.date_header)

    def test_a_config_file_is_read_once_and_not_handed_to_workers(self) -> None:
        options = self.parse(["-c", self.config_file("limit_concurrency = 6\n"), "--workers", "2"])
        self.assertEqual(options["config"].max_connections, 6)
        self.assertEqual(options.arguments[0], "--limit-concurrency=6")
        self.assertNotIn("-c", options.arguments)

    def test_the_config_file_can_be_named_by_the_environment(self) -> None:
        path = self.config_file("limit_concurrency = 7\n")
        self.assertEqual(self.parse([], {"HELLO_ASGI_CONFIG": path})["config"].max_connections, 7)

    def test_where_to_listen_is_one_choice(self) -> None:
        options = self.parse(["--port", "9001"], {"HELLO_ASGI_LISTEN": "tcp:9002 unix:/tmp/never.sock"})
        self.assertEqual(options["config"].listen, ["tcp:9001:interface=127.0.0.1:backlog=2048"])
        options = self.parse([], {"HELLO_ASGI_LISTEN": "tcp:9002 tcp:9003"})
        self.assertEqual(options["config"].listen, ["tcp:9002", "tcp:9003"])

    def test_flags_from_the_environment(self) -> None:
        self.assertFalse(self.parse([], {"HELLO_ASGI_NO_DATE_HEADER": "yes"})["config"].date_header)
        self.assertTrue(self.parse([], {"HELLO_ASGI_NO_DATE_HEADER": "0"})["config"].date_header)

    def test_hypercorn_names_in_the_config_file(self) -> None:
        path = self.config_file('bind = ["127.0.0.1:9004", "[::1]:9005"]\nkeep_alive_timeout = 9\n'
                                "graceful_timeout = 8\nworkers = 3\n")
        options = self.parse(["--config", path])
        config = options["config"]
        self.assertEqual(config.listen, ["tcp:9004:interface=127.0.0.1", "tcp:9005:interface=\\:\\:1"])
        self.assertEqual((config.keep_alive_timeout, config.graceful_timeout, options["workers"]), (9.0, 8.0, 3))

    def test_an_env_file_adds_to_the_environment_without_overriding_it(self) -> None:
        path = self.config_file("HELLO_ASGI_LIMIT_CONCURRENCY=11\nHELLO_ASGI_TIMEOUT_KEEP_ALIVE=12\nFOR_THE_APP=yes\n")
        options = self.parse(["--env-file", path], {"HELLO_ASGI_TIMEOUT_KEEP_ALIVE": "13"})
        self.assertEqual((options["config"].max_connections, options["config"].keep_alive_timeout), (11, 13.0))
        self.assertEqual(os.environ["FOR_THE_APP"], "yes")
        self.assertNotIn("--env-file", options.arguments)  # read once, never again by a worker

    def test_the_env_file_can_be_named_by_the_environment(self) -> None:
        path = self.config_file("HELLO_ASGI_LIMIT_CONCURRENCY=14\n")
        self.assertEqual(self.parse([], {"HELLO_ASGI_ENV_FILE": path})["config"].max_connections, 14)

    def test_mistakes_in_a_source_are_usage_errors_naming_it(self) -> None:
        for arguments, environment, expected in (
            ([], {"HELLO_ASGI_PROT": "1"}, "HELLO_ASGI_PROT is not an option's variable"),
            ([], {"HELLO_ASGI_NO_DATE_HEADER": "maybe"}, "HELLO_ASGI_NO_DATE_HEADER is a flag"),
            (["--config", self.config_file("prot = 1\n")], {}, "'prot' is not a setting"),
            (["--config", self.config_file("port = \n")], {}, "--config"),
            ([], {"HELLO_ASGI_PORT": "abc"}, "--port expects a whole number, not 'abc'"),
        ):
            errors: list[str] = []
            self.patch(sys, "stderr", type("Capture", (), {"write": lambda _, text: errors.append(text)})())
            with self.assertRaises(SystemExit):
                self.parse(arguments, environment)
            self.assertIn(expected, "".join(errors))

    @asyncio_test
    async def test_workers_do_not_read_the_supervisors_options_again(self) -> None:
        """HELLO_ASGI_WORKERS=2 must make 2 workers, not 2 supervisors of 2 workers each."""
        from .test_workers import children

        port = free_port()
        server = _Server()
        environment = {**os.environ, "HELLO_ASGI_WORKERS": "2", "HELLO_ASGI_PORT": str(port),
                       "HELLO_ASGI_APP": "hello_asgi.demo:asgi"}
        process = reactor.spawnProcess(server, TWIST[0], [*TWIST, "hello-asgi"], env=environment)
        try:
            await get_when_up(f"http://127.0.0.1:{port}/")
            while server.output.count(b"Serving http") < 2:
                await asyncio.sleep(0.05)  # the second worker is still starting
            workers = children(process.pid)
            self.assertEqual(len(workers), 2)
            self.assertEqual([children(pid) for pid in workers], [set(), set()])
        finally:
            process.signalProcess(signal.SIGTERM)
            code = await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 30)
        self.assertEqual(code, (0, None), server.output)
