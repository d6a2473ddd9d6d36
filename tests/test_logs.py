"""The log a user reads: text under a pipe as on a terminal, JSON lines, levels, stdlib logging."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test

from .support import get_when_up
from .test_cli import TWIST, _Server, free_port

LOGGING_APP = """
import logging

log = logging.getLogger("myapp")

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    log.warning("app saw %s", scope["path"])
    log.debug("a detail of %s", scope["path"])
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[[^\]#]+#\w+\] ")


class LogTests(unittest.TestCase):
    async def run_server(self, *options: str, before: tuple[str, ...] = (), host: str = "127.0.0.1",
                         paths: tuple[str, ...] = ("/a", "/boom"), serving: int = 0) -> str:
        """Serve LOGGING_APP with its output on a pipe, GET ``paths`` once ``serving``
        processes say they serve, SIGTERM: the output."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "app.py").write_text(LOGGING_APP)
        port = free_port()
        server = _Server()
        args = [*TWIST, *before, "hello-asgi", "--app", "app:app", "--host", host, "--port", str(port), *options]
        process = reactor.spawnProcess(server, TWIST[0], args, env=os.environ, path=str(directory))
        url_host = f"[{host}]" if ":" in host else host
        try:
            while server.output.count(b"Serving http") < serving and not server.ended.called:
                seen: Deferred[None] = Deferred()
                server.watch_for(b"Serving http", seen)
                await asyncio.wait_for(seen.asFuture(asyncio.get_running_loop()), 30)
            for path in paths:
                await get_when_up(f"http://{url_host}:{port}{path}")
        finally:
            process.signalProcess(signal.SIGTERM)
            code = await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 30)
        self.assertEqual(code, (0, None), server.output)
        return server.output.decode()

    def json_records(self, output: str) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in output.splitlines()]  # every line, or the test fails
        for record in records:
            self.assertLessEqual({"time", "level", "namespace", "message"}, record.keys(), record)
        return records

    @asyncio_test
    async def test_a_pipe_gets_the_same_readable_text_as_a_terminal(self) -> None:
        output = await self.run_server()
        self.assertNotIn("\x1e", output)  # no RFC 7464 records
        for line in output.splitlines():
            if not line.startswith(("\t", " ", "Traceback", "builtins.")):  # a traceback's own lines
                self.assertRegex(line, TEXT_LINE)
        self.assertRegex(output, r"\[hello_asgi\.service#info\] Serving http://127\.0\.0\.1:\d+ ")
        self.assertIn("[myapp#warn] app saw /a", output)  # stdlib logging, in the same format
        self.assertIn("[hello_asgi.app#error] Exception in ASGI app for GET /boom", output)
        self.assertNotIn("a detail of", output)  # debug is below the default level

    @asyncio_test
    async def test_json_log_format_as_a_hello_asgi_option_writes_one_json_object_per_line(self) -> None:
        records = self.json_records(await self.run_server("--log-format", "json"))
        by_message = {record["message"]: record for record in records}
        access = [record for record in records if record["namespace"] == "hello_asgi.access"]
        self.assertEqual([(record["path"], record["status"]) for record in access], [("/a", 200), ("/boom", 500)])
        failure = by_message["Exception in ASGI app for GET /boom"]
        self.assertEqual((failure["level"], failure["namespace"], failure["path"]), ("error", "hello_asgi.app", "/boom"))
        self.assertIn("RuntimeError: boom", failure["traceback"])
        self.assertEqual((by_message["app saw /a"]["level"], by_message["app saw /a"]["namespace"]), ("warn", "myapp"))
        self.assertIn("Received SIGTERM, shutting down.", by_message)
        self.assertRegex(records[0]["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")

    @asyncio_test
    async def test_twists_own_json_option_gives_the_same_json_lines(self) -> None:
        records = self.json_records(await self.run_server(before=("--log-format=json",), paths=("/a",)))
        self.assertIn("app saw /a", [record["message"] for record in records])

    @asyncio_test
    async def test_log_level_as_a_hello_asgi_option_reaches_stdlib_logging_too(self) -> None:
        output = await self.run_server("--log-level", "debug", paths=("/a",))
        self.assertIn("[myapp#debug] a detail of /a", output)
        output = await self.run_server("--log-level", "error")
        self.assertIn("[hello_asgi.app#error] Exception in ASGI app for GET /boom", output)
        self.assertNotIn("#info]", output)
        self.assertNotIn("app saw", output)  # a warning, below error

    @asyncio_test
    async def test_stdlib_logging_can_be_left_alone(self) -> None:
        output = await self.run_server("--no-stdlib-logging", paths=("/a",))
        self.assertNotIn("[myapp#", output)
        # Python's own last-resort handler writes it to stderr, which twist logs as it does any stderr
        self.assertIn("[stderr#error] app saw /a", output)

    @asyncio_test
    async def test_an_ipv6_listener_is_named_by_a_url_that_works(self) -> None:
        try:
            socket.socket(socket.AF_INET6).bind(("::1", 0))
        except OSError:
            raise unittest.SkipTest("this machine has no IPv6 loopback") from None
        output = await self.run_server(host="::1", paths=("/a",))
        self.assertRegex(output, r"Serving http://\[::1\]:\d+ ")

    @asyncio_test
    async def test_the_supervisor_says_nothing_of_its_sockets_twisted_ports_would(self) -> None:
        output = await self.run_server("--workers", "2", paths=("/a",))
        self.assertIn("Listening on tcp:", output)
        self.assertNotIn("starting on", output)
        self.assertNotIn("_NeverAccepts", output)
        self.assertNotIn("Port", output)

    @asyncio_test
    async def test_each_worker_names_itself_in_its_lines_text_and_json(self) -> None:
        output = await self.run_server("--workers", "2", paths=("/a",), serving=2)
        pids = [int(pid) for pid in re.findall(r"Started worker (\d+)", output)]
        self.assertEqual(len(pids), 2, output)
        for pid in pids:  # each worker's own lines say which it is, the app's stdlib lines too
            self.assertRegex(output, rf"\[hello_asgi\.service#info\] \[worker {pid}\] Serving http://")
        self.assertRegex(output, r"\[myapp#warn\] \[worker (\d+)\] app saw /a")
        for line in output.splitlines():  # the supervisor's lines name no worker in that way
            if "[hello_asgi.supervisor#" in line:
                self.assertNotIn("[worker ", line)
        records = self.json_records(await self.run_server("--workers", "2", "--log-format", "json", paths=("/a",),
                                                         serving=2))
        workers = {record["pid"] for record in records if record["message"].startswith("Started worker")}
        serving = [record for record in records if record["message"].startswith("Serving ")]
        self.assertEqual({record.get("worker") for record in serving}, workers)
        self.assertTrue(all("worker" not in record for record in records if record["namespace"] == "hello_asgi.supervisor"))

    def test_a_worker_tag_leaves_twists_text_line_as_it_was_otherwise(self) -> None:
        """The tagged line is Twisted's own with the tag after the brackets, tracebacks and all."""
        import io

        from twisted.logger import LogLevel, formatEventAsClassicLogText, formatTime, timeFormatRFC3339
        from twisted.python.failure import Failure

        from hello_asgi.logs import text_observer

        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        events = [
            {"log_format": "Serving {url}", "url": "http://x", "log_time": 1700000000.5, "log_namespace": "a.b",
             "log_level": LogLevel.info},
            {"log_format": "two\nlines", "log_time": 1700000000.5, "log_system": "legacy"},
            {"log_format": "it broke", "log_failure": failure, "log_namespace": "c", "log_level": LogLevel.error},
        ]
        for event in events:
            tagged, plain = io.StringIO(), io.StringIO()
            text_observer(tagged, worker=42)(event)
            text_observer(plain)(event)
            twisted = formatEventAsClassicLogText(event, lambda when: formatTime(when, timeFormatRFC3339))
            self.assertEqual(plain.getvalue(), twisted)
            self.assertEqual(tagged.getvalue().replace("[worker 42] ", "", 1), twisted)
            self.assertIn("] [worker 42] ", tagged.getvalue())
