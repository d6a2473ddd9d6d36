"""Test an ASGI app through the real server from a trial test, in a few lines.

    from hello_asgi.testing import asyncio_test, serve

    class HelloTests(unittest.TestCase):
        @asyncio_test
        async def test_hello(self):
            server = await serve(self, app)  # an ephemeral loopback port, stopped in cleanup
            async with httpx.AsyncClient() as client:
                response = await client.get(server.url + "/")

``serve`` gives a ``TestServer``; ``TestServer.started`` is the same wait as a Deferred, for
tests written with Deferreds. Run such tests on the asyncio reactor: ``trial --reactor=asyncio``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Generator
from dataclasses import replace
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import TestCase

from .config import Config
from .service import ASGIService

T = TypeVar("T")
Case = TypeVar("Case", bound=TestCase)
P = ParamSpec("P")


class TestServer:
    """A server on ``127.0.0.1``; ``started`` fires with this object once it listens."""

    def __init__(self, service: ASGIService) -> None:
        self.service = service
        self.port = 0
        self.url = ""
        self.started: Deferred[TestServer] = service.whenListening().addCallback(self._ready)

    def __await__(self) -> Generator[Any, None, TestServer]:
        """``await server`` waits until it listens, from an asyncio coroutine."""
        loop = self.service.factory.loop
        return self.started.asFuture(loop).__await__()

    def _ready(self, ports: list[IListeningPort]) -> TestServer:
        self.port = ports[0].getHost().port  # type: ignore[attr-defined]  # IAddress has no port; a TCP one does
        self.url = f"http://127.0.0.1:{self.port}"
        return self


def serve(test: TestCase, app: Any, config: Config | None = None, **settings: Any) -> TestServer:
    """Start ``app`` on an ephemeral loopback port; ``test`` stops it in its cleanup."""
    config = replace(config or Config(), listen=["tcp:0:interface=127.0.0.1"], **settings)
    service = ASGIService(app, config)
    service.startService()
    test.addCleanup(service.stopService)
    return TestServer(service)


def asyncio_test(method: Callable[Concatenate[Case, P], Awaitable[T]]) -> Callable[Concatenate[Case, P], Deferred[T]]:
    """Let a trial test method be an asyncio coroutine (it runs as a task on the reactor's loop)."""

    @functools.wraps(method)
    def run(self: Case, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromFuture(asyncio.ensure_future(method(self, *args, **kwargs)))

    return run
