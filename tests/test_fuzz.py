"""The fuzzers of ``tests/fuzz.py`` against a real server: a few hundred cases each here,
as many as ``FUZZ_EXAMPLES`` asks under ``tox -e fuzz``."""

from __future__ import annotations

import asyncio

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from . import fuzz


class FuzzTests(unittest.TestCase):
    @asyncio_test
    async def test_http1_requests_against_h11(self) -> None:
        server = await serve(self, fuzz.echo_app, access_log=None, keep_alive_timeout=0.2, request_head_timeout=1.0)
        cases = await deferToThread(fuzz.check_http1, server.port).asFuture(asyncio.get_running_loop())
        self.assertEqual(cases, fuzz.EXAMPLES)

    @asyncio_test
    async def test_websocket_frames(self) -> None:
        server = await serve(self, fuzz.websocket_echo, access_log=None, ws_per_message_deflate=False)
        cases = await deferToThread(fuzz.check_websocket, server.port).asFuture(asyncio.get_running_loop())
        self.assertEqual(cases, fuzz.EXAMPLES)

    @asyncio_test
    async def test_http2_frames(self) -> None:
        server = await serve(self, fuzz.echo_app, access_log=None, keep_alive_timeout=0.2, request_head_timeout=1.0)
        cases = await deferToThread(fuzz.check_http2, server.port).asFuture(asyncio.get_running_loop())
        self.assertEqual(cases, fuzz.EXAMPLES)
