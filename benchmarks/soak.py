"""Soak (issue 7): mixed traffic for a long while; does memory stay flat, is anything left behind?

    python benchmarks/soak.py --requests 1000000     # tox -e soak -- --requests 1000000

The server runs in this process on the asyncio reactor, pinned to CPU 0, so that what it
holds can be counted at the end. On CPU 1, at once: wrk (HTTP/1.1 keep-alive), h2load
(HTTP/2 prior knowledge), a WebSocket client that opens, talks and closes (every fifth
one drops its connection without a close), and a client that vanishes at random points
(mid-head, mid-body, before reading the response) and sends large bodies. The server's
RSS is read every 100,000 requests; after the first 100,000 (the warm-up) its growth per
100,000 is the figure. When the load stops and the connections have closed, the script
counts what is left: open connections, asyncio tasks, Deferreds, HTTP streams and
WebSocket sessions. It prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class App:
    """Small answers, large bodies echoed as their length, WebSocket echo; it counts requests."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while (message := await receive())["type"] == "websocket.receive":
                self.requests += 1
                await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
            return
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.requests += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"%d" % size if size else b"Hello, world!"})


def vanishing_clients(port: int, stop: float) -> None:
    """In a child process: clients that leave at random points, and large bodies."""
    rng = random.Random(7)
    while time.monotonic() < stop:
        kind = rng.choice(["mid-head", "mid-body", "no-read", "large"])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                if kind == "mid-head":
                    client.sendall(b"GET /small HTTP/1.1\r\nHost: soak\r\nX-Par")
                elif kind == "mid-body":
                    client.sendall(b"POST /up HTTP/1.1\r\nHost: soak\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
                elif kind == "no-read":
                    client.sendall(b"GET /small HTTP/1.1\r\nHost: soak\r\n\r\n")
                else:
                    body = b"y" * rng.choice([65536, 262144, 1048576])
                    client.sendall(b"POST /large HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
                                   b"Content-Length: %d\r\n\r\n" % len(body) + body)
                    while client.recv(65536):
                        pass
        except OSError:
            pass


async def websocket_churn(url: str, stop: float) -> None:
    """In a child process: WebSockets that open, exchange ten messages and close (or drop)."""
    from websockets.asyncio.client import connect

    count = 0
    while time.monotonic() < stop:
        count += 1
        try:
            ws = await connect(url, compression=None)
            for index in range(10):
                await ws.send(f"message {index}")
                await ws.recv()
            if count % 5 == 0:
                ws.transport.abort()  # gone without a close frame
            else:
                await ws.close()
        except Exception:  # noqa: BLE001  (the churn goes on whatever one connection met)
            pass


def load(port: int, seconds: int) -> list[subprocess.Popen[bytes]]:
    url = f"http://127.0.0.1:{port}"
    stop = time.monotonic() + seconds
    python = sys.executable
    pin = ["taskset", "-c", "1"]
    return [
        subprocess.Popen([*pin, "wrk", "-t1", "-c20", f"-d{seconds}s", f"{url}/small"], stdout=subprocess.DEVNULL),
        subprocess.Popen([*pin, "h2load", "-c5", "-m10", "-D", str(seconds), f"{url}/small"], stdout=subprocess.DEVNULL),
        subprocess.Popen([*pin, python, __file__, "--child", "ws", str(port), str(stop)]),
        subprocess.Popen([*pin, python, __file__, "--child", "vanish", str(port), str(stop)]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, port, stop = args.child
        if kind == "ws":
            asyncio.run(websocket_churn(f"ws://127.0.0.1:{port}/ws", float(stop)))
        else:
            vanishing_clients(int(port), float(stop))
        return
    for tool in ("wrk", "h2load", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"soak.py needs {tool} (Debian: wrk, nghttp2-client, util-linux)")
    os.sched_setaffinity(0, {0})

    from hello_asgi.bridge import install_asyncio_reactor

    reactor = install_asyncio_reactor()
    from twisted.internet.defer import Deferred

    from hello_asgi import ASGIService, Config
    from hello_asgi.stream import HTTPStream
    from hello_asgi.websocket_session import WebSocketSession
    from hello_asgi.transport import SocketTransport

    app = App()
    service = ASGIService(app, Config(listen=["tcp:0:interface=127.0.0.1"], access_log=None,
                                      max_connections=20000, request_head_timeout=2, keep_alive_timeout=2))
    result: dict[str, object] = {}

    def leftovers() -> dict[str, int]:
        gc.collect()
        things = gc.get_objects()
        return {
            "open_connections": len(service.factory.connections),
            "asyncio_tasks": len([task for task in asyncio.all_tasks() if not task.done()]),
            "pending_deferreds": sum(1 for thing in things if isinstance(thing, Deferred) and not thing.called),
            "http_streams": sum(1 for thing in things if isinstance(thing, HTTPStream)),
            "websocket_sessions": sum(1 for thing in things if isinstance(thing, WebSocketSession)),
            "socket_transports": sum(1 for thing in things if isinstance(thing, SocketTransport)),
            "selector_registrations": len(asyncio.get_running_loop()._selector.get_map()),  # type: ignore[attr-defined]
        }

    async def soak() -> None:
        ports = await service.whenListening().asFuture(asyncio.get_running_loop())
        port = ports[0].getHost().port
        before = leftovers()
        samples: list[tuple[int, int]] = []
        started = time.monotonic()
        next_sample = 100_000
        while app.requests < args.requests:
            clients = load(port, 30)  # in rounds of 30 s, so that no load tool outlives the goal by much
            while any(client.poll() is None for client in clients):
                await asyncio.sleep(0.5)
                while app.requests >= next_sample:
                    samples.append((next_sample, rss_kib()))
                    next_sample += 100_000
                if app.requests >= args.requests:
                    for client in clients:
                        client.terminate()
            for client in clients:
                client.wait()
        elapsed = time.monotonic() - started
        await asyncio.sleep(3)  # past the keep-alive and head timeouts: every connection closes
        after_warmup = [kib for count, kib in samples if count >= 100_000]
        growth = ((after_warmup[-1] - after_warmup[0]) / (len(after_warmup) - 1)) if len(after_warmup) > 1 else 0
        result.update(
            requests=app.requests,
            seconds=round(elapsed, 1),
            rss_kib_every_100k=samples,
            rss_growth_kib_per_100k_after_warmup=round(growth, 1),
            before_the_load=before,  # the soak's own task and Deferred are in both counts
            after_the_load=leftovers(),
        )

    def run() -> None:
        service.startService()
        done = Deferred.fromFuture(asyncio.ensure_future(soak()))
        done.addBoth(lambda outcome: (print(outcome) if outcome is not None else None, reactor.stop()))

    reactor.callWhenRunning(run)
    reactor.run()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
