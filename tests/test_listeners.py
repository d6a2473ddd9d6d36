"""Listeners from Twisted endpoint strings, and the addresses each gives the scope."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
from twisted.trial import unittest

from hello_asgi import ASGIService, Config
from hello_asgi.testing import asyncio_test

from .test_proxy import where_app


class ListenerTests(unittest.TestCase):
    async def start(self, *listen: str) -> ASGIService:
        service = ASGIService(where_app, Config(listen=list(listen), access_log=None))
        service.startService()
        self.addCleanup(service.stopService)
        await service.whenListening().asFuture(asyncio.get_running_loop())
        return service

    @asyncio_test
    async def test_unix_socket_and_tcp_together(self) -> None:
        path = os.path.abspath(self.mktemp())
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
