"""End to end behind real proxies from Debian: nginx (X-Forwarded-*, WebSocket upgrade) and
HAProxy (PROXY protocol v2), started on loopback for each test.

The client connects from 127.0.0.2, so the proxies (and hello-asgi) can tell it from the
proxy itself on 127.0.0.1, the only address hello-asgi trusts by default.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
from twisted.trial import unittest
from websockets.asyncio.client import connect as websocket_connect

from hello_asgi.testing import asyncio_test, serve

from .test_proxy import where_app

CLIENT_ADDRESS = "127.0.0.2"

NGINX = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{app_port};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
    }}
}}
"""

HAPROXY = """
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server app 127.0.0.1:{app_port} send-proxy-v2
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    """Until the proxy process listens (or has failed)."""
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited: {process.stderr.read() if process.stderr else b''!r}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # the proxy is still starting
            continue
        writer.close()
        return
    raise RuntimeError("the proxy did not start listening")


async def get_from_client_address(port: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """GET / through the proxy on ``port``, from ``CLIENT_ADDRESS``: what the app saw."""
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=CLIENT_ADDRESS)) as client:
        return (await client.get(f"http://127.0.0.1:{port}/", headers=headers)).json()  # type: ignore[no-any-return]


class BehindProxyTests(unittest.TestCase):
    async def start_proxy(self, command: str, config: str, app_port: int) -> int:
        executable = shutil.which(command, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        self.assertIsNotNone(executable, f"{command} is not installed (.ci/run installs it)")
        directory = Path(self.mktemp()).absolute()
        directory.mkdir(parents=True)
        port = free_port()
        path = directory / f"{command}.conf"
        path.write_text(config.format(dir=directory, port=port, app_port=app_port))
        arguments = {"nginx": ["-p", str(directory), "-e", str(directory / "error.log"), "-c", str(path)],
                     "haproxy": ["-db", "-f", str(path)]}[command]
        process = subprocess.Popen([str(executable), *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def stop() -> None:
            process.terminate()
            process.wait(10)
            if process.stderr:
                process.stderr.close()

        self.addCleanup(stop)
        await wait_for_port(port, process)
        return port

    @asyncio_test
    async def test_nginx_with_x_forwarded_headers(self) -> None:
        server = await serve(self, where_app, proxy_headers=True)
        port = await self.start_proxy("nginx", NGINX, server.port)
        seen = await get_from_client_address(port, {"x-forwarded-for": "6.6.6.6"})
        self.assertEqual(seen["client"][0], CLIENT_ADDRESS)  # not the address the client made up
        self.assertEqual((seen["scheme"], seen["server"]), ("http", ["127.0.0.1", port]))

    @asyncio_test
    async def test_websocket_through_nginx(self) -> None:
        server = await serve(self, where_app, proxy_headers=True)
        port = await self.start_proxy("nginx", NGINX, server.port)
        sock = socket.socket()
        sock.bind((CLIENT_ADDRESS, 0))
        sock.connect(("127.0.0.1", port))
        async with websocket_connect(f"ws://127.0.0.1:{port}/", sock=sock) as ws:
            seen: dict[str, Any] = json.loads(await ws.recv())
        self.assertEqual((seen["client"][0], seen["scheme"]), (CLIENT_ADDRESS, "ws"))

    @asyncio_test
    async def test_haproxy_with_proxy_protocol_v2(self) -> None:
        server = await serve(self, where_app, proxy_protocol=True)
        port = await self.start_proxy("haproxy", HAPROXY, server.port)
        seen = await get_from_client_address(port)
        self.assertEqual(seen["client"][0], CLIENT_ADDRESS)
        self.assertEqual(seen["server"], ["127.0.0.1", port])  # the address the client connected to
