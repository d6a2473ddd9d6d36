"""Listeners from Twisted endpoint strings, and the addresses each gives the scope."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.protocols.wire import Echo
from twisted.trial import unittest

from hello_asgi import ASGIService, Config
from hello_asgi.service import server_endpoint
from hello_asgi.testing import asyncio_test
from hello_asgi.tls import development_certificate
from hello_asgi.transport import AsyncioPort, FastListeningReactor

from .test_cli import _Server
from .test_proxy import where_app

REPOSITORY = Path(__file__).resolve().parent.parent  # where the tests package is, for a server process


class TwistedWebLike(Echo):
    """An echo that, as twisted.web's HTTPChannel does, turns off Nagle on any ITCPTransport."""

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        assert self.transport.getTcpNoDelay() is False  # type: ignore[union-attr]  # a UNIX socket has none


class ListenerTests(unittest.TestCase):
    async def start(self, *listen: str) -> ASGIService:
        service = ASGIService(where_app, Config(listen=list(listen), access_log=None))
        service.startService()
        self.addCleanup(service.stopService)
        await service.whenListening().asFuture(asyncio.get_running_loop())
        return service

    def socket_path(self) -> str:
        """A path for a UNIX socket in a directory of its own, removed after the test."""
        directory = tempfile.mkdtemp(dir="/tmp")  # a UNIX socket's path must be short (108 bytes)
        self.addCleanup(shutil.rmtree, directory)
        return os.path.join(directory, "app.sock")

    async def assert_echoes(self, path: str) -> None:
        """An echo over the UNIX socket at ``path`` answers."""
        client = socket.socket(socket.AF_UNIX)  # connected here: uvloop's own connect refuses abstract names
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, path)
        reader, writer = await asyncio.open_unix_connection(sock=client)
        writer.write(b"ping")
        self.assertEqual(await asyncio.wait_for(reader.readexactly(4), 10), b"ping")
        writer.close()

    @asyncio_test
    async def test_unix_socket_and_tcp_together(self) -> None:
        path = self.socket_path()
        service = await self.start("tcp:0:interface=127.0.0.1", f"unix:{path}:mode=600")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=path)) as client:
            over_unix: dict[str, Any] = (await client.get("http://app/")).json()
        self.assertEqual((over_unix["client"], over_unix["server"]), (None, [path, None]))
        port = service.ports[0].getHost().port
        async with httpx.AsyncClient() as client:
            over_tcp = (await client.get(f"http://127.0.0.1:{port}/")).json()
        self.assertEqual(over_tcp["server"], ["127.0.0.1", port])
        self.assertEqual(over_tcp["client"][0], "127.0.0.1")
        # Both on hello-asgi's own transport, not Twisted's (a selector registration per write).
        self.assertEqual([type(listening) for listening in service.ports], [AsyncioPort, AsyncioPort])
        await service.stopService().asFuture(asyncio.get_running_loop())
        self.assertFalse(os.path.exists(path))  # the socket file goes with the listener

    @asyncio_test
    async def test_a_unix_socket_left_by_a_dead_server_is_replaced_and_a_live_ones_is_not(self) -> None:
        path = self.socket_path()
        os.symlink("999999999", path + ".lock")  # the lock of a process that is gone ...
        socket.socket(socket.AF_UNIX).bind(path)  # ... and the socket file it left
        service = await self.start(f"unix:{path}")
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=path)) as client:
            self.assertEqual((await client.get("http://app/")).json()["server"], [path, None])
        self.assertEqual(os.readlink(path + ".lock"), str(os.getpid()))
        with self.assertRaises(CannotListenError):  # this process holds the lock now
            await server_endpoint(reactor, f"unix:{path}").listen(Factory()).asFuture(asyncio.get_running_loop())
        await service.stopService().asFuture(asyncio.get_running_loop())
        self.assertFalse(os.path.lexists(path + ".lock"))

    @asyncio_test
    async def test_a_unix_socket_in_the_abstract_namespace_leaves_no_file(self) -> None:
        name = f"\0hello-asgi-test-{os.getpid()}"
        fast = FastListeningReactor(reactor, reactor._asyncioEventloop)  # type: ignore[attr-defined]
        listening = fast.listenUNIX(name, Factory.forProtocol(TwistedWebLike), wantPID=1)
        self.addCleanup(listening.stopListening)
        await self.assert_echoes(name)
        self.assertEqual(listening.getHost().name, name.encode())
        self.assertFalse(os.path.lexists(name[1:] + ".lock"))

    @asyncio_test
    async def test_an_inherited_unix_socket_is_served_and_its_file_left_to_its_owner(self) -> None:
        path = self.socket_path()
        owned = socket.socket(socket.AF_UNIX)  # as a supervisor makes it for its workers
        owned.bind(path)
        owned.listen()
        endpoint = server_endpoint(reactor, f"fd:{owned.detach()}:domain=UNIX")  # the endpoint closes it
        listening = await endpoint.listen(Factory.forProtocol(TwistedWebLike)).asFuture(asyncio.get_running_loop())
        self.assertIsInstance(listening, AsyncioPort)
        await self.assert_echoes(path)
        await listening.stopListening()
        self.assertTrue(os.path.exists(path))  # still the supervisor's, for the next worker

    @asyncio_test
    async def test_tcp6(self) -> None:
        service = await self.start(r"tcp6:0:interface=\:\:1")
        port = service.ports[0].getHost().port
        async with httpx.AsyncClient() as client:
            seen = (await client.get(f"http://[::1]:{port}/")).json()
        self.assertEqual((seen["server"], seen["client"][0]), (["::1", port], "::1"))

    @asyncio_test
    async def test_an_ssl_endpoint_serves_tls_of_its_own(self) -> None:
        cert, key, _ = development_certificate(Path(self.mktemp()))
        service = await self.start(f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        port = service.ports[0].getHost().port
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert)), http2=True) as client:
            response = await client.get(f"https://localhost:{port}/")
        self.assertEqual((response.json()["scheme"], response.http_version), ("https", "HTTP/2"))  # h2 by ALPN

class InheritedSocketTests(unittest.TestCase):
    """A listening socket handed down as file descriptor 3, as systemd or a supervisor does."""

    async def serve_inherited(self, listen: str, *, systemd: bool) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.addCleanup(sock.close)
        port = sock.getsockname()[1]
        # systemd sets LISTEN_PID to the service's own pid: set it just before exec, which keeps the pid.
        launcher = ("import os, sys; os.environ['LISTEN_PID'] = str(os.getpid()); "
                    "os.execv(sys.executable, [sys.executable, '-m', 'twisted', *sys.argv[1:]])")
        environment = {**os.environ, **({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"} if systemd else {})}
        server = _Server()
        process = reactor.spawnProcess(
            server, sys.executable,
            [sys.executable, "-c", launcher, "--log-format=text", "hello-asgi", "--app", "tests.test_proxy:where_app",
             "--app-dir", str(REPOSITORY), "--listen", listen],
            env=environment, childFDs={0: "w", 1: "r", 2: "r", 3: sock.fileno()})
        loop = asyncio.get_running_loop()
        try:
            async with httpx.AsyncClient(timeout=30) as client:  # the socket listens already: no wait to start
                seen = (await client.get(f"http://127.0.0.1:{port}/")).json()
            self.assertEqual(seen["server"], ["127.0.0.1", port])
        finally:
            process.signalProcess(signal.SIGTERM)
            code, _ = await asyncio.wait_for(server.ended.asFuture(loop), 30)
        self.assertEqual(code, 0, server.output)

    @asyncio_test
    async def test_systemd_socket_activation(self) -> None:
        await self.serve_inherited("systemd:domain=INET:index=0", systemd=True)

    @asyncio_test
    async def test_an_adopted_file_descriptor(self) -> None:
        await self.serve_inherited("fd:3", systemd=False)

    def test_a_bad_fd_description_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            server_endpoint(reactor, "fd:three")
