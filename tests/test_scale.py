"""Running out of file descriptors: accept fails with EMFILE, and the server neither spins nor dies."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

from twisted.internet import reactor
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test

from .test_cli import _Server, free_port
from .test_workers import get

LIMIT = 48  # the server process's file descriptors: a few for itself, the rest for clients


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FileDescriptorTests(unittest.TestCase):
    @asyncio_test
    async def test_emfile_neither_spins_nor_kills(self) -> None:
        port = free_port()
        launcher = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d)); "
                    "os.execv(sys.executable, [sys.executable, '-m', 'twisted', *sys.argv[1:]])" % (LIMIT, LIMIT))
        server = _Server()
        process = reactor.spawnProcess(server, sys.executable, [
            sys.executable, "-c", launcher, "--log-format=text", "hello-asgi", "--app", "hello_asgi.demo:asgi",
            "--port", str(port), "--no-access-log", "--timeout-keep-alive", "60"], env=os.environ)
        loop = asyncio.get_running_loop()
        clients: list[socket.socket] = []
        try:
            for _ in range(400):
                try:
                    await get(port)
                    break
                except OSError:
                    await asyncio.sleep(0.05)  # the process is still starting
            for _ in range(LIMIT + 20):  # more than it can accept: the kernel queues the rest
                client = socket.create_connection(("127.0.0.1", port))
                client.setblocking(False)
                clients.append(client)
            await asyncio.sleep(1)  # let it reach the limit and fail to accept
            before = cpu_seconds(process.pid)
            await asyncio.sleep(2)  # a server spinning on accept would burn these two seconds
            self.assertLess(cpu_seconds(process.pid) - before, 0.2, "the server spins while out of descriptors")
            self.assertIn(b"Cannot accept connections (Too many open files); trying again in 1.0 s", server.output)
            for client in clients:
                client.close()
            clients.clear()
            body = b""
            for _ in range(100):  # it accepts again once descriptors are free (asyncio retries each second)
                try:
                    body = await get(port, "/again")
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            self.assertIn(b'"path": "/again"', body)
        finally:
            for client in clients:
                client.close()
            process.signalProcess(signal.SIGTERM)
            code, _ = await asyncio.wait_for(server.ended.asFuture(loop), 30)
        self.assertEqual(code, 0, server.output)
