"""HTTP/3 in real processes: two workers sharing the UDP port (SO_REUSEPORT), and the
epoll reactor (the endpoint on the companion loop)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test
from hello_asgi.tls import development_certificate

from .test_cli import TWIST, _Server, free_port
from .test_http3 import h3_client
from .test_workers import PID_APP


class HTTP3ProcessTests(unittest.TestCase):
    timeout = 120

    def start(self, *options: str, before: tuple[str, ...] = (), listening: int = 1) -> tuple[_Server, int, Any, Deferred[None]]:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "app.py").write_text("VERSION = 'one'\n" + PID_APP)
        cert, key, _ = development_certificate(directory / "tls")
        port = free_port()
        server = _Server()
        ready: Deferred[None] = Deferred()
        self._count_lines(server, b"Serving HTTP/3 on", listening, ready)
        args = [*TWIST, *before, "--log-format=text", "hello-asgi", "--app", "app:app", "--port", str(port),
                "--cert", str(cert), "--key", str(key), "--h3", *options]
        environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
        process = reactor.spawnProcess(server, TWIST[0], args, env=environment, path=str(directory))
        self.addCleanup(self._kill, server, process)
        return server, port, process, ready

    @staticmethod
    def _count_lines(server: _Server, text: bytes, count: int, ready: Deferred[None]) -> None:
        """Fire ``ready`` once ``text`` has appeared ``count`` times."""
        def seen(_: Any) -> None:
            if server.output.count(text) >= count:
                ready.callback(None)
            else:
                again: Deferred[None] = Deferred()
                again.addCallback(seen)
                server.watch_for(text, again)

        first: Deferred[None] = Deferred()
        first.addCallback(seen)
        server.watch_for(text, first)

    def _kill(self, server: _Server, process: Any) -> Deferred[Any] | None:
        if server.ended.called:
            return None
        process.signalProcess("KILL")
        return server.ended

    async def stop(self, server: _Server, process: Any) -> Any:
        process.signalProcess(signal.SIGTERM)
        return await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 60)

    @asyncio_test
    async def test_two_workers_share_the_udp_port_and_each_connection_stays_with_one(self) -> None:
        server, port, process, ready = self.start("--workers", "2", listening=2)
        await asyncio.wait_for(ready.asFuture(asyncio.get_running_loop()), 60)
        pids_by_connection = []
        for _ in range(16):  # each a new client port: the kernel's hash spreads them
            async with h3_client(port) as client:
                bodies = [bytes((await client.get(f"/{n}")).body) for n in range(3)]
            pids_by_connection.append({body.split()[1] for body in bodies})
        self.assertTrue(all(len(pids) == 1 for pids in pids_by_connection), pids_by_connection)
        self.assertEqual(len(set.union(*pids_by_connection)), 2, "both workers served HTTP/3")
        self.assertEqual(await self.stop(server, process), (0, None))

    @asyncio_test
    async def test_on_the_epoll_reactor(self) -> None:
        server, port, process, ready = self.start(before=("--reactor=epoll",))
        await asyncio.wait_for(ready.asFuture(asyncio.get_running_loop()), 60)
        async with h3_client(port) as client:
            response = await client.get("/epoll")
        self.assertEqual(response.status, 200)
        self.assertTrue(bytes(response.body).endswith(b" /epoll"))
        self.assertIn(b"apps run on an asyncio loop in a companion thread", server.output)
        self.assertEqual(await self.stop(server, process), (0, None))
