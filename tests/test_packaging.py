"""The package as a user installs it: a fresh virtualenv, not editable, then a real request."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test

from .support import get_when_up
from .test_cli import _Server, free_port

ROOT = Path(__file__).resolve().parent.parent


class PackagingTests(unittest.TestCase):
    timeout = 900  # a fresh virtualenv downloads and builds the dependencies

    @asyncio_test
    async def test_fresh_install_has_the_plugin_and_serves(self) -> None:
        loop = asyncio.get_running_loop()
        venv = Path(self.mktemp()).resolve()

        async def run(executable: str, *args: str) -> bytes:
            out, err, code = await getProcessOutputAndValue(
                executable, args, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            ).asFuture(loop)
            self.assertEqual(code, 0, (out + err).decode(errors="replace")[-3000:])
            return out

        await run(sys.executable, "-m", "venv", str(venv))
        await run(str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT))
        twist = str(venv / "bin" / "twist")
        help_text = await run(twist, "hello-asgi", "--help")
        self.assertIn(b"--app", help_text)

        port = free_port()
        server = _Server()
        workdir = self.mktemp()
        os.makedirs(workdir)  # not the checkout: the installed package must stand on its own
        process = reactor.spawnProcess(
            server, twist, [twist, "hello-asgi", "--app", "hello_asgi.demo:asgi", "--port", str(port)],
            env={"PATH": os.environ["PATH"]}, path=workdir,
        )
        try:
            response = await get_when_up(f"http://127.0.0.1:{port}/packaged")
            self.assertEqual(response.json()["path"], "/packaged")
        finally:
            process.signalProcess(signal.SIGTERM)
            await asyncio.wait_for(server.ended.asFuture(loop), 30)
