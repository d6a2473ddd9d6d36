"""Start-up loads what a plain HTTP/1.1 app needs, and the rest on first use: every worker
process pays for what it loads (issue 16: 59 MB idle RSS and 0.7 s to the first answer
before, with HTTP/2, the WebSocket stack, TLS and twisted.web loaded by every process)."""

from __future__ import annotations

import asyncio
import json
import os
import signal

from twisted.internet import reactor
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test

from .support import H2Client, get_when_up
from .test_cli import TWIST, _Server, free_port

PROBE = '''
import json, sys

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    loaded = {name: name in sys.modules for name in (
        "h2.connection", "autobahn.websocket.protocol", "hello_asgi.websocket", "hello_asgi.tls",
        "twisted.web.server", "hello_asgi.resource")}
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(loaded).encode()})
'''

# pyOpenSSL and cryptography are not among them: Twisted's TCP and endpoint modules load them.
LAZY = ["h2.connection", "autobahn.websocket.protocol", "hello_asgi.websocket", "hello_asgi.tls",
        "twisted.web.server", "hello_asgi.resource"]


class StartupTests(unittest.TestCase):
    @asyncio_test
    async def test_a_plain_http_process_loads_no_http2_websocket_tls_or_twisted_web(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "probe.py"), "w") as module:
            module.write(PROBE)
        port = free_port()
        server = _Server()
        args = [*TWIST, "hello-asgi", "--app", "probe:app", "--port", str(port)]
        process = reactor.spawnProcess(server, TWIST[0], args, env=os.environ, path=directory)
        loop = asyncio.get_running_loop()
        try:
            loaded = (await get_when_up(f"http://127.0.0.1:{port}/")).json()
            self.assertEqual([name for name in LAZY if loaded[name]], [])
            client = await H2Client.open(port)  # the first HTTP/2 connection loads h2, and only that
            _, body = await client.response(client.request("/"))
            client.close()
            after = json.loads(body)
            self.assertTrue(after["h2.connection"])
            self.assertFalse(after["hello_asgi.websocket"])
        finally:
            process.signalProcess(signal.SIGTERM)
            await asyncio.wait_for(server.ended.asFuture(loop), 30)
