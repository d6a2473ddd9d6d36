"""--metrics-listen: what Prometheus reads, from one process and summed over workers."""

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

from .support import connect, get_when_up
from .test_cli import TWIST, _Server, free_port
from .test_workers import children


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at /metrics, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    response = await get_when_up(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200, response
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def requests(samples: dict[Any, float], protocol: str, status: str = "200") -> float:
    return samples.get(("hello_asgi_requests_total", (("protocol", protocol), ("status", status))), 0.0)


class MetricsTests(unittest.TestCase):
    def start(self, *options: str, app: str = "hello_asgi.demo:asgi",
              directory: str | None = None) -> tuple[_Server, int, int, Any]:
        port, metrics_port = free_port(), free_port()
        server = _Server()
        args = [*TWIST, "hello-asgi", "--app", app, "--port", str(port),
                "--metrics-listen", f"tcp:{metrics_port}:interface=127.0.0.1", *options]
        process = reactor.spawnProcess(server, TWIST[0], args, env=os.environ, path=directory)
        self.addCleanup(self.stop, server, process)
        return server, port, metrics_port, process

    def stop(self, server: _Server, process: Any) -> Deferred[Any]:
        """SIGTERM, if a test left it running: it must end as any graceful stop does."""
        if not server.ended.called:
            process.signalProcess(signal.SIGTERM)
        return server.ended.addCallback(lambda code: self.assertEqual(code, (0, None), server.output))

    @asyncio_test
    async def test_one_process_counts_requests_durations_bytes_connections_and_refusals(self) -> None:
        import httpx

        server, port, metrics_port, _ = self.start("--limit-concurrency", "2", "--no-access-log")
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                await get_when_up(f"http://127.0.0.1:{port}/")
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            h2 = await client.post(f"http://127.0.0.1:{port}/h2", content=b"x" * 1000)
        self.assertEqual(h2.http_version, "HTTP/2")
        while any(name == "hello_asgi_open_connections" and value for (name, _), value in (await scrape(metrics_port)).items()):
            await asyncio.sleep(0.05)  # the clients' closes are still reaching the server
        _, idle = await connect(port)  # open, nothing sent yet
        _, second = await connect(port)
        reader, third = await connect(port)  # over --limit-concurrency 2: answered 503
        self.assertIn(b"503", await asyncio.wait_for(reader.read(), 10))
        samples = await scrape(metrics_port)
        self.assertEqual((requests(samples, "http/1.1"), requests(samples, "h2")), (3.0, 1.0))
        self.assertEqual(samples[("hello_asgi_request_duration_seconds_count", (("protocol", "http/1.1"),))], 3.0)
        self.assertEqual(samples[("hello_asgi_request_duration_seconds_bucket", (("le", "+Inf"), ("protocol", "h2")))],
                         1.0)
        self.assertGreater(samples[("hello_asgi_response_body_bytes_total", (("protocol", "h2"),))], 100)
        self.assertEqual(samples[("hello_asgi_request_body_bytes_total", (("protocol", "h2"),))], 1000.0)
        self.assertEqual(samples[("hello_asgi_request_body_bytes_total", (("protocol", "http/1.1"),))], 0.0)
        self.assertEqual(samples[("hello_asgi_open_connections", (("protocol", "undecided"),))], 2.0)
        self.assertEqual(samples[("hello_asgi_refused_connections_total", ())], 1.0)
        for writer in (idle, second, third):
            writer.close()

    @asyncio_test
    async def test_workers_are_summed_and_a_restart_loses_no_count(self) -> None:
        server, port, metrics_port, process = self.start("--workers", "2")
        for _ in range(10):
            await get_when_up(f"http://127.0.0.1:{port}/")
        while requests(await scrape(metrics_port), "http/1.1") < 10:
            await asyncio.sleep(0.2)  # workers report once a second
        restarted: Deferred[None] = Deferred()
        server.watch_for(b"Restarted 2 worker(s)", restarted)
        process.signalProcess(signal.SIGHUP)
        await asyncio.wait_for(restarted.asFuture(asyncio.get_running_loop()), 30)
        samples = await scrape(metrics_port)
        self.assertEqual(requests(samples, "http/1.1"), 10.0)  # the old workers' figures are kept
        self.assertEqual(samples[("hello_asgi_worker_restarts_total", ())], 2.0)
        self.assertEqual(len(children(process.pid)), 2)
        self.assertIn(b"Serving metrics on http://127.0.0.1:%d/metrics" % metrics_port, server.output)

    @asyncio_test
    async def test_websocket_sessions_are_counted(self) -> None:
        import websockets

        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "echo.py").write_text(ECHO_APP)
        server, port, metrics_port, _ = self.start(app="echo:app", directory=str(directory))
        await get_when_up(f"http://127.0.0.1:{port}/")
        for _ in range(2):
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as websocket:
                await websocket.send("hi")
                self.assertEqual(await websocket.recv(), "hi")
        samples: dict[Any, float] = {}
        while samples.get(("hello_asgi_websocket_sessions_total", (("protocol", "http/1.1"),))) != 2.0:
            samples = await scrape(metrics_port)  # the session's line comes once its close is done
            await asyncio.sleep(0.05)
        self.assertEqual(requests(samples, "http/1.1"), 1.0)  # the plain GET; the handshakes are sessions

    @asyncio_test
    async def test_tls_still_offers_h2_by_alpn_when_metered(self) -> None:
        import httpx

        _, port, metrics_port, _ = self.start("--tls")
        await scrape(metrics_port)  # listening: the metrics listener opens after the server's
        async with httpx.AsyncClient(http2=True, verify=False) as client:
            response = await client.get(f"https://localhost:{port}/")
        self.assertEqual(response.http_version, "HTTP/2")
        self.assertEqual(requests(await scrape(metrics_port), "h2"), 1.0)


ECHO_APP = """
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"up"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
"""
