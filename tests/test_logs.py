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
                         paths: tuple[str, ...] = ("/a", "/boom")) -> str:
        """Serve LOGGING_APP with its output on a pipe, GET ``paths``, SIGTERM: the output."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "app.py").write_text(LOGGING_APP)
        port = free_port()
        server = _Server()
        args = [*TWIST, *before, "hello-asgi", "--app", "app:app", "--host", host, "--port", str(port), *options]
        process = reactor.spawnProcess(server, TWIST[0], args, env=os.environ, path=str(directory))
        url_host = f"[{host}]" if ":" in host else host
        try:
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
