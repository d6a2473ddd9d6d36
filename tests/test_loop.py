"""The event loop under the asyncio reactor: ``--loop auto|asyncio|uvloop`` and ``hello-asgi[uvloop]``."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from hello_asgi import Config
from hello_asgi.bridge import loop_name, new_event_loop
from hello_asgi.testing import asyncio_test

from .support import get_when_up
from .test_cli import TWIST, _Server, free_port

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


class LoopTests(unittest.TestCase):
    def test_the_suite_runs_on_the_loop_tox_asked_for(self) -> None:
        """tox runs the suite once on uvloop (py311-uvloop) and otherwise on asyncio's loop."""
        expected = os.environ.get("EXPECT_EVENT_LOOP")
        if expected is None:
            raise unittest.SkipTest("EXPECT_EVENT_LOOP is set by tox")
        self.assertEqual(loop_name(reactor), expected)
        self.assertEqual(HAVE_UVLOOP, expected == "uvloop")  # the plain envs have no uvloop at all

    def test_auto_is_uvloop_when_installed_and_asyncio_otherwise(self) -> None:
        loop = new_event_loop("auto")
        self.addCleanup(loop.close)
        self.assertEqual(type(loop).__module__.split(".")[0], "uvloop" if HAVE_UVLOOP else "asyncio")
        plain = new_event_loop("asyncio")
        self.addCleanup(plain.close)
        self.assertIsInstance(plain, asyncio.SelectorEventLoop)

    def test_uvloop_asked_for_needs_it_installed(self) -> None:
        if HAVE_UVLOOP:
            loop = new_event_loop("uvloop")
            self.addCleanup(loop.close)
            self.assertEqual(type(loop).__module__.split(".")[0], "uvloop")
        else:
            with self.assertRaisesRegex(ValueError, r"pip install 'hello-asgi\[uvloop\]'"):
                new_event_loop("uvloop")

    def test_config_refuses_a_loop_it_does_not_know(self) -> None:
        with self.assertRaisesRegex(ValueError, "loop must be auto, asyncio or uvloop, not 'trio'"):
            Config(loop="trio").validate()  # type: ignore[arg-type]

    @asyncio_test
    async def test_a_childs_exit_is_heard_while_its_pipes_stay_open(self) -> None:
        """The supervisor's reactor hears of a worker's exit by SIGCHLD, on either loop (on
        uvloop it once never did: stopped workers stayed zombies, the supervisor waiting)."""
        exited: Deferred[int] = Deferred()
        ended: Deferred[None] = Deferred()

        class Child(ProcessProtocol):
            def processExited(self, reason: Any) -> None:
                exited.callback(reason.value.exitCode)

            def processEnded(self, reason: Any) -> None:
                ended.callback(None)

        # the shell exits at once; the sleep it leaves behind holds its stdout open for 4 s
        child = reactor.spawnProcess(Child(), "/bin/sh", ["sh", "-c", "sleep 4 & exit 3"], env={})
        self.assertEqual(await asyncio.wait_for(exited.asFuture(asyncio.get_running_loop()), 3), 3)
        child.loseConnection()  # our ends of its pipes
        await asyncio.wait_for(ended.asFuture(asyncio.get_running_loop()), 10)

    async def started(self, *options: str) -> tuple[_Server, int]:
        """``twist hello-asgi`` with ``options``, once it serves (or has ended)."""
        port = free_port()
        server = _Server()
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        process = reactor.spawnProcess(server, TWIST[0], [*TWIST, "hello-asgi", "--app", "hello_asgi.demo:asgi",
                                                          "--port", str(port), *options],
                                       env=os.environ, path=str(directory))
        self.addCleanup(lambda: None if server.ended.called else (process.signalProcess("KILL"), server.ended)[1])
        if "--loop=uvloop" not in options or HAVE_UVLOOP:
            await get_when_up(f"http://127.0.0.1:{port}/")
            process.signalProcess(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 30)
        except asyncio.TimeoutError:
            self.fail(f"{options} did not end: {server.output.decode(errors='replace')}")
        return server, code[0]

    @asyncio_test
    async def test_the_start_up_line_says_which_loop_serves(self) -> None:
        for option, name in (("--loop=asyncio", "asyncio"), ("--loop=auto", "uvloop" if HAVE_UVLOOP else "asyncio")):
            server, code = await self.started(option)
            self.assertEqual(code, 0, server.output)
            self.assertIn(f"[hello_asgi.bridge#info] Running on the asyncio reactor, on {name}'s event loop".encode(),
                          server.output)

    @asyncio_test
    async def test_loop_uvloop_serves_on_it_or_is_one_line_without_it(self) -> None:
        server, code = await self.started("--loop=uvloop")
        if HAVE_UVLOOP:
            self.assertEqual(code, 0, server.output)
            self.assertIn(b"on uvloop's event loop", server.output)
        else:
            self.assertEqual((code, server.output.strip()),
                             (1, b"hello-asgi: --loop uvloop needs uvloop: pip install 'hello-asgi[uvloop]'"))
