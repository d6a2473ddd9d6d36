"""Signals as users send them: Ctrl-C on a real terminal (a pty), a second signal, SIGHUP."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test

from .test_cli import TWIST, _Server, free_port
from .test_workers import PID_APP, get


class SignalTests(unittest.TestCase):
    def start(self, *options: str, pty: bool = False, delay: float = 0) -> tuple[_Server, int, Any]:
        """``twist hello-asgi`` on app.py, on a terminal of its own with ``pty``."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "app.py").write_text("VERSION = 'one'\n" + PID_APP)
        port = free_port()
        server = _Server()
        args = [*TWIST, "hello-asgi", "--app", "app:app", "--port", str(port), *options]
        process = reactor.spawnProcess(server, TWIST[0], args, env={**os.environ, "APP_DELAY": str(delay)},
                                       path=str(directory), usePTY=pty)
        self.addCleanup(self._kill_leftovers, server, process)
        return server, port, process

    def _kill_leftovers(self, server: _Server, process: Any) -> Deferred[Any] | None:
        if server.ended.called:
            return None
        for pid in re.findall(rb"Started worker (\d+)", server.output):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.signalProcess("KILL")
        return server.ended

    async def seen(self, server: _Server, text: bytes) -> None:
        """Wait until ``text`` is in the output."""
        if text in server.output:
            return
        seen: Deferred[None] = Deferred()
        server.watch_for(text, seen)
        await asyncio.wait_for(seen.asFuture(asyncio.get_running_loop()), 60)

    async def ended(self, server: _Server) -> tuple[int, Any]:
        return await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 60)  # type: ignore

    async def serving(self, server: _Server, port: int, workers: int = 1) -> None:
        """Wait until ``workers`` processes say they serve."""
        while server.output.count(b"Serving http") < workers:
            more: Deferred[None] = Deferred()
            server.watch_for(b"Serving http", more)
            await asyncio.wait_for(more.asFuture(asyncio.get_running_loop()), 60)
        await get(port)

    def assert_graceful(self, server: _Server, code: Any) -> None:
        """Exit status 0, lifespan shutdown in every process that started, no traceback."""
        self.assertEqual(code, (0, None), server.output)
        self.assertNotIn(b"Traceback", server.output)
        started = sorted(re.findall(rb"lifespan startup (\d+)", server.output))
        self.assertEqual(sorted(re.findall(rb"lifespan shutdown (\d+)", server.output)), started)

    @asyncio_test
    async def test_ctrl_c_on_a_terminal_stops_one_process_gracefully(self) -> None:
        server, port, process = self.start(pty=True)
        await self.serving(server, port)
        process.write(b"\x03")  # the terminal turns it into SIGINT for the foreground process group
        code = await self.ended(server)
        self.assert_graceful(server, code)
        self.assertIn(b"Received SIGINT, shutting down.", server.output)

    @asyncio_test
    async def test_ctrl_c_on_a_terminal_stops_the_supervisor_and_its_workers_gracefully(self) -> None:
        server, port, process = self.start("--workers", "2", pty=True)
        await self.serving(server, port, workers=2)
        process.write(b"\x03")
        code = await self.ended(server)
        self.assert_graceful(server, code)
        self.assertEqual(len(re.findall(rb"lifespan shutdown", server.output)), 2)
        self.assertNotIn(b"starting another", server.output)  # none replaced while the same Ctrl-C stops them
        self.assertNotIn(b"while stopping", server.output)  # a worker's second signal, its supervisor's, is expected

    @asyncio_test
    async def test_a_second_ctrl_c_is_one_line_and_the_request_in_flight_is_answered(self) -> None:
        server, port, process = self.start(pty=True, delay=1.5)
        await self.seen(server, b"Serving http")
        answered = asyncio.ensure_future(get(port, "/slow"))
        await self.seen(server, b"app saw /slow")
        process.write(b"\x03")
        await self.seen(server, b"Received SIGINT, shutting down.")
        process.write(b"\x03")
        await self.seen(server, b"Received SIGINT while stopping; the graceful stop goes on")
        self.assertTrue((await answered).endswith(b" /slow"))
        self.assert_graceful(server, await self.ended(server))
        self.assertNotIn(b"ReactorNotRunning", server.output)

    @asyncio_test
    async def test_sigterm_then_sigint_is_one_stop(self) -> None:
        server, port, process = self.start(delay=1)
        await self.serving(server, port)
        answered = asyncio.ensure_future(get(port, "/slow"))
        await self.seen(server, b"app saw /slow")
        process.signalProcess(signal.SIGTERM)
        await self.seen(server, b"Received SIGTERM, shutting down.")
        process.signalProcess(signal.SIGINT)
        await self.seen(server, b"Received SIGINT while stopping")
        await answered
        self.assert_graceful(server, await self.ended(server))

    @asyncio_test
    async def test_sighup_does_not_end_a_plain_process(self) -> None:
        server, port, process = self.start()
        await self.serving(server, port)
        process.signalProcess(signal.SIGHUP)
        await self.seen(server, b"Received SIGHUP: nothing to reload")
        self.assertTrue((await get(port)).startswith(b"one "))
        process.signalProcess(signal.SIGTERM)
        self.assert_graceful(server, await self.ended(server))

    @asyncio_test
    async def test_ctrl_c_while_the_app_imports_is_one_line(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "slow.py").write_text("import time\nprint('importing', flush=True)\ntime.sleep(30)\nasgi = None\n")
        server = _Server()
        args = [*TWIST, "hello-asgi", "--app", "slow:asgi", "--port", str(free_port())]
        process = reactor.spawnProcess(server, TWIST[0], args, env=os.environ, path=str(directory), usePTY=True)
        self.addCleanup(self._kill_leftovers, server, process)
        await self.seen(server, b"importing")
        process.write(b"\x03")
        self.assertEqual(await self.ended(server), (130, None), server.output)
        self.assertIn(b"hello-asgi: interrupted while starting", server.output)
        self.assertNotIn(b"Traceback", server.output)
