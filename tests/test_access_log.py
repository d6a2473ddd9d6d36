"""The access log: formatted once, written in batches, nothing lost at a stop, Gunicorn's
atoms and JSON lines, where its lines go."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel
from twisted.trial import unittest

from hello_asgi import Config
from hello_asgi.access_log import (
    CLIENTS_KEPT, FLUSH_LINES, MAIN_LOG, PIPE_BUF, AccessLog, EventLog, LineBuffer, MainLog, _whole_line_chunks,
    access_log,
)
from hello_asgi.testing import asyncio_test, serve

from .support import exchange, get_when_up, hello_app
from .test_cli import TWIST, _Server, free_port

ACCESS_LINE = re.compile(
    r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[hello_asgi\.access#info\] 127\.0\.0\.1:\d+ - '
    r'"GET /(n\d+|slow|up) HTTP/1\.1" 200 \d+ \d+\.\d{3}s$')

SLOW_APP = """
import asyncio, logging

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        logging.getLogger("slowapp").warning("slow request started")
        await asyncio.sleep(0.5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def main_log_in(test: unittest.TestCase, **settings: Any) -> None:
    """Make hello-asgi's main log (as the command sets it up) ``settings``, for this test."""
    saved = vars(MAIN_LOG).copy()
    vars(MAIN_LOG).update(ours=True, **settings)
    test.addCleanup(vars(MAIN_LOG).update, saved)


class CountingOutput(io.StringIO):
    """A log file that counts the writes made to it."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


class ShutdownTests(unittest.TestCase):
    @asyncio_test
    async def test_no_line_is_lost_when_the_server_stops(self) -> None:
        """Every request's line reaches the pipe: 400 pipelined ones, and one still running
        when SIGTERM comes, which the graceful stop lets finish."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "app.py").write_text(SLOW_APP)
        port = free_port()
        server = _Server()
        process = reactor.spawnProcess(server, TWIST[0], [*TWIST, "hello-asgi", "--app", "app:app", "--port", str(port)],
                                       env=os.environ, path=str(directory))
        await get_when_up(f"http://127.0.0.1:{port}/up")
        pipelined = b"".join(b"GET /n%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(399))
        answers = await exchange(port, pipelined + b"GET /n399 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(answers.count(b"HTTP/1.1 200 "), 400)
        started: Deferred[None] = Deferred()
        server.watch_for(b"slow request started", started)
        slow = asyncio.ensure_future(exchange(port, b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        await asyncio.wait_for(started.asFuture(asyncio.get_running_loop()), 10)
        process.signalProcess(signal.SIGTERM)
        self.assertIn(b"HTTP/1.1 200 ", await slow)
        code = await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 30)
        self.assertEqual(code, (0, None), server.output)
        lines = [line for line in server.output.decode().splitlines() if "hello_asgi.access" in line]
        self.assertEqual(len(lines), 402, server.output)  # /up, /n0../n399, /slow
        for line in lines:
            self.assertRegex(line, ACCESS_LINE)
        self.assertEqual([line.split('"')[1] for line in lines][1:401], [f"GET /n{n} HTTP/1.1" for n in range(400)])
        self.assertIn('"GET /slow HTTP/1.1" 200 2 0.5', lines[-1])


class FormatTests(unittest.TestCase):
    async def logged(self, path: str, request: bytes, app: Any = hello_app, **settings: Any) -> str:
        server = await serve(self, app, access_log=path, **settings)
        await exchange(server.port, request)
        await server.service.stopService().asFuture(asyncio.get_running_loop())
        return Path(path).read_text()

    @asyncio_test
    async def test_gunicorns_atoms(self) -> None:
        path = self.mktemp()
        os.environ["ACCESS_LOG_TEST"] = "from-env"
        self.addCleanup(os.environ.pop, "ACCESS_LOG_TEST")
        log_format = ('%(h)s|%(l)s|%(u)s|%(t)s|%(r)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%(f)s|%(a)s|'
                      '%(T)s|%(M)s|%(D)s|%(L)s|%(p)s|%(S)s|%({x-trace}i)s|%({content-type}o)s|%({ACCESS_LOG_TEST}e)s')
        text = await self.logged(path, b"POST /atoms?a=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: tester/1\r\n"
                                       b"Referer: http://ref/\r\nAuthorization: Basic Ym9iOnNlY3JldA==\r\n"
                                       b"X-Trace: t1\r\nX-Trace: t2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab",
                                 access_log_format=log_format)
        fields = text.rstrip("\n").split("|")
        self.assertEqual(text.count("\n"), 1, text)
        body = len(b"hello /atoms ab")
        self.assertEqual(fields[:3], ["127.0.0.1", "-", "bob"])
        self.assertRegex(fields[3], r"^\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]$")
        self.assertEqual(fields[4:14], ["POST /atoms?a=1 HTTP/1.1", "POST", "/atoms", "a=1", "HTTP/1.1", "200",
                                        str(body), str(body), "http://ref/", "tester/1"])
        self.assertEqual(fields[14:16], ["0", "0"])  # whole seconds and milliseconds of a quick request
        self.assertTrue(fields[16].isdigit() and int(fields[16]) < 1_000_000, fields[16])
        self.assertRegex(fields[17], r"^0\.\d{6}$")
        self.assertEqual(fields[18:], [f"<{os.getpid()}>", "http", "t1, t2", "text/plain", "from-env"])

    @asyncio_test
    async def test_a_missing_header_or_body_is_a_dash(self) -> None:
        async def no_content(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        text = await self.logged(self.mktemp(), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                 no_content, access_log_format='%(u)s "%(f)s" "%(a)s" %(b)s %(B)s %(s)s')
        self.assertEqual(text, '- "-" "-" - 0 204\n')

    @asyncio_test
    async def test_json_lines(self) -> None:
        text = await self.logged(self.mktemp(), b"GET /j?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                 access_log_format="json")
        record = json.loads(text)
        self.assertEqual({key: record[key] for key in ("level", "namespace", "method", "path", "query", "http_version",
                                                       "status", "bytes_sent")},
                         {"level": "info", "namespace": "hello_asgi.access", "method": "GET", "path": "/j",
                          "query": "?x=1", "http_version": "1.1", "status": 200, "bytes_sent": len(b"hello /j ")})
        self.assertRegex(record["message"], r'^127\.0\.0\.1:\d+ - "GET /j\?x=1 HTTP/1\.1" 200 9 \d+\.\d{3}s$')
        self.assertRegex(record["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")

    @asyncio_test
    async def test_a_decoded_newline_cannot_forge_a_line(self) -> None:
        text = await self.logged(self.mktemp(), b"GET /a%0aforged%0d?b%0a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(text.count("\n"), 1, text)
        self.assertIn('"GET /a\\nforged\\r?b%0a HTTP/1.1" 200', text)

    def test_an_unknown_atom_is_refused_at_start_naming_it(self) -> None:
        with self.assertRaisesRegex(ValueError, r"unknown access log atom %\(zz\)s"):
            Config(access_log_format="%(h)s %(zz)s").validate()
        with self.assertRaisesRegex(ValueError, "cannot be used"):
            Config(access_log_format="%(h)s %d").validate()


class WhereLinesGoTests(unittest.TestCase):
    @asyncio_test
    async def test_the_main_log_gets_prefixed_lines_in_batches(self) -> None:
        """Twenty requests that end in one loop turn are one write to the main log's file."""
        output = CountingOutput()
        main_log_in(self, output=output)
        server = await serve(self, hello_app)
        replies = await asyncio.gather(*[exchange(server.port, b"GET /b%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % n)
                                         for n in range(20)])
        self.assertEqual(sum(reply.count(b" 200 ") for reply in replies), 20)
        await server.service.stopService().asFuture(asyncio.get_running_loop())
        lines = output.getvalue().splitlines()
        self.assertEqual(sorted(line.split('"')[1] for line in lines), sorted(f"GET /b{n} HTTP/1.1" for n in range(20)))
        for line in lines:
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[hello_asgi\.access#info\] ")
        self.assertLessEqual(output.writes, 3, lines)

    @asyncio_test
    async def test_json_main_log_makes_json_access_lines_naming_the_worker(self) -> None:
        output = io.StringIO()
        main_log_in(self, output=output, log_format="json", worker=4711)
        server = await serve(self, hello_app)
        await exchange(server.port, b"GET /w HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await server.service.stopService().asFuture(asyncio.get_running_loop())
        record = json.loads(output.getvalue())
        self.assertEqual((record["worker"], record["path"], record["namespace"]), (4711, "/w", "hello_asgi.access"))

    @asyncio_test
    async def test_a_workers_text_lines_name_it(self) -> None:
        output = io.StringIO()
        main_log_in(self, output=output, worker=4711)
        server = await serve(self, hello_app)
        await exchange(server.port, b"GET /w HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await server.service.stopService().asFuture(asyncio.get_running_loop())
        self.assertRegex(output.getvalue(), r'^\S+ \[hello_asgi\.access#info\] \[worker 4711\] 127\.0\.0\.1:\d+ - "GET /w ')

    def test_a_log_level_above_info_leaves_access_lines_out(self) -> None:
        self.assertIsNone(access_log("-", None, lambda flush: None, main_log=MainLog(ours=True, level=LogLevel.warn)))
        self.assertIsInstance(access_log("-", None, lambda flush: None, main_log=MainLog(ours=True)), AccessLog)

    def test_embedded_or_events_go_to_twisted_logger(self) -> None:
        self.assertIsInstance(access_log("-", None, lambda flush: None, main_log=MainLog()), EventLog)
        self.assertIsInstance(access_log("events", None, lambda flush: None, main_log=MainLog(ours=True)), EventLog)
        self.assertIsNone(access_log(None, None, lambda flush: None, main_log=MainLog(ours=True)))


class LineBufferTests(unittest.TestCase):
    def test_one_write_a_turn_in_whole_lines_under_pipe_buf(self) -> None:
        output = CountingOutput()
        turns: list[Any] = []
        buffer = LineBuffer(lambda: output, turns.append)
        self.addCleanup(buffer.close)
        lines = [f"line {n} " + "x" * 90 + "\n" for n in range(100)]  # 10,000 characters
        for line in lines:
            buffer.add(line)
        self.assertEqual((len(turns), output.getvalue()), (1, ""))  # one flush asked for, none done yet
        turns.pop()()
        self.assertEqual(output.getvalue(), "".join(lines))
        self.assertEqual(output.writes, 3)  # 10,000 characters in pieces of at most 4,096

    def test_chunks_are_cut_between_lines_only(self) -> None:
        lines = [("%d " % n) + "y" * (n * 37 % 700) + "\n" for n in range(300)] + ["z" * 5000 + "\n"]
        chunks = _whole_line_chunks(lines)
        self.assertEqual("".join(chunks), "".join(lines))
        for chunk in chunks:
            self.assertTrue(chunk.endswith("\n"))
            self.assertTrue(len(chunk) <= PIPE_BUF or chunk.count("\n") == 1, len(chunk))

    def test_a_full_buffer_is_written_without_waiting_for_the_turn(self) -> None:
        output = CountingOutput()
        buffer = LineBuffer(lambda: output, lambda flush: None)  # the turn never ends
        self.addCleanup(buffer.close)
        for _ in range(FLUSH_LINES - 1):
            buffer.add("a" * 99 + "\n")
        self.assertEqual(output.getvalue(), "")
        buffer.add("a" * 99 + "\n")
        self.assertEqual(len(output.getvalue()), FLUSH_LINES * 100)


class _Finished:
    """What AccessLog.http reads of a finished HTTPStream."""

    def __init__(self, client: Any, status: int = 200, took: float = 0.004, path: str = "/a") -> None:
        self.scope = {"client": client, "path": path, "query_string": b"", "method": "GET", "http_version": "1.1"}
        self.status, self.bytes_sent = status, 12
        self.started_at = time.monotonic() - took


class LineTextTests(unittest.TestCase):
    """The line's client, status and duration are looked up, not made each time: the same
    text as making them, whatever the value."""

    def access_log(self) -> tuple[AccessLog, LineBuffer]:
        """An access log into a buffer with nowhere to write (its lines stay in ``_lines``
        until a full buffer empties it)."""
        buffer = LineBuffer(lambda: None, lambda flush: None)
        self.addCleanup(buffer.close)
        return AccessLog(buffer), buffer

    def lines(self, *finished: _Finished) -> list[str]:
        log, buffer = self.access_log()
        for stream in finished:
            log.http(stream)  # type: ignore[arg-type]
        return [line.split("] ", 1)[1] for line in buffer._lines]

    def test_status_and_duration_as_made(self) -> None:
        lines = self.lines(_Finished(("10.0.0.1", 5), 200, 0.0042), _Finished(("10.0.0.1", 5), 0, 0.2),
                           _Finished(None, 599, 2.5), _Finished(("::1", 80), 404, 0.9996))
        self.assertEqual(lines, ['10.0.0.1:5 - "GET /a HTTP/1.1" 200 12 0.004s\n',
                                 '10.0.0.1:5 - "GET /a HTTP/1.1" 0 12 0.200s\n',
                                 'unix - "GET /a HTTP/1.1" 599 12 2.500s\n',
                                 '::1:80 - "GET /a HTTP/1.1" 404 12 1.000s\n'])

    def test_clients_kept_are_bounded_and_a_list_is_named_too(self) -> None:
        log, buffer = self.access_log()
        for port in range(CLIENTS_KEPT + 10):
            log.http(_Finished(("10.0.0.2", port)))  # type: ignore[arg-type]
            self.assertLessEqual(len(log._clients), CLIENTS_KEPT)
        self.assertIn('10.0.0.2:1033 - "GET', buffer._lines[-1])
        log.http(_Finished(["10.0.0.3", 7]))  # type: ignore[arg-type]  # an app's own scope: a list
        self.assertIn('] 10.0.0.3:7 - "GET', buffer._lines[-1])

    def test_the_time_follows_a_clock_set_back(self) -> None:
        now = [1_000_000_000.5]
        self.patch(time, "time", lambda: now[0])
        log, buffer = self.access_log()
        for when in (1_000_000_000.5, 1_000_000_000.9, 999_999_000.5):
            now[0] = when
            log.http(_Finished(("10.0.0.4", 1)))  # type: ignore[arg-type]
        stamps = [line.split(" ", 1)[0] for line in buffer._lines]
        self.assertEqual(stamps[0], stamps[1])
        self.assertNotEqual(stamps[1], stamps[2])  # 1,000 s earlier, not still the second before
