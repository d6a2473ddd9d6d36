"""WebSocket load for run.py: prints one JSON line of results.

    ws_load.py echo URL CONNECTIONS SECONDS    # small text messages, one at a time per connection
    ws_load.py large URL CONNECTIONS SECONDS   # 1 MiB binary messages, echoed
    ws_load.py idle URL CONNECTIONS            # open them, print "ready", hold them until stdin closes
                                               # (an http:// URL: keep-alive connections after one GET)

``echo`` is a minimal client on raw asyncio protocols under uvloop (one pre-masked frame,
replies counted by their two-byte headers): the websockets library as the client
saturates its core at about 26k round trips/s, below what the faster servers can do, so
the figures would compare the client with itself. ``large`` and ``idle`` use the websockets client.
``echo`` and ``large`` print the rate, the count and the client's busy fraction of its core
(its CPU time over the wall time of the exchange): near 1.0, the client was the limit.
Compression is not offered, so every server frames the same bytes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from urllib.parse import urlsplit

from websockets.asyncio.client import connect

MIB = 1024 * 1024


async def exchange(url: str, connections: int, seconds: float, payload: str | bytes) -> int:
    """Round trips completed by ``connections`` clients in ``seconds``, each waiting for its echo."""
    count = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal count
        async with connect(url, compression=None, max_size=None) as ws:
            while time.monotonic() < stop:
                await ws.send(payload)
                await ws.recv()
                count += 1

    await asyncio.gather(*(client() for _ in range(connections)))
    return count


MESSAGE = b"hello, echo"
MASK = b"\x11\x22\x33\x44"
FRAME = bytes([0x81, 0x80 | len(MESSAGE)]) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(MESSAGE))


class _EchoClient(asyncio.Protocol):
    """Completes the opening handshake, then sends FRAME each time the last one came back."""

    def __init__(self, stop: float, opened: asyncio.Future[None], finished: asyncio.Future[int]) -> None:
        self.stop, self.opened, self.finished = stop, opened, finished
        self.buffer = b""
        self.count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.opened.done():
            head, found, buffer = buffer.partition(b"\r\n\r\n")
            if not found:
                self.buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(head.decode("latin-1"))
            self.opened.set_result(None)
            self.transport.write(FRAME)
        while len(buffer) >= 2 and len(buffer) >= 2 + (buffer[1] & 0x7F):
            opcode, size = buffer[0] & 0x0F, buffer[1] & 0x7F
            buffer = buffer[2 + size:]
            if opcode in (1, 2):
                self.count += 1
                if time.monotonic() < self.stop:
                    self.transport.write(FRAME)
                elif not self.finished.done():
                    self.finished.set_result(self.count)
                    self.transport.close()
        self.buffer = buffer


async def echo(url: str, connections: int, seconds: float) -> int:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    stop = time.monotonic() + seconds
    finished = []
    for _ in range(connections):
        opened, done = loop.create_future(), loop.create_future()
        transport, _ = await loop.create_connection(lambda: _EchoClient(stop, opened, done), parts.hostname,
                                                    parts.port)
        key = base64.b64encode(os.urandom(16))
        transport.write(b"GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        % (parts.netloc.encode(), key))
        await opened
        finished.append(done)
    return sum(await asyncio.gather(*finished))


class _IdleHTTP(asyncio.Protocol):
    """One keep-alive connection: a GET, its response, then nothing."""

    def __init__(self, answered: asyncio.Future[None]) -> None:
        self.answered = answered
        self.received = b""
        self.open = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.received += data
        if b"Hello, world!" in self.received and not self.answered.done():
            self.answered.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.answered.done():
            self.answered.set_exception(ConnectionError("closed before the response"))


async def idle_http(url: str, connections: int) -> None:
    """``connections`` keep-alive connections, each after one request, held open."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    held: list[_IdleHTTP] = []
    for start in range(0, connections, 100):
        batch = [_IdleHTTP(loop.create_future()) for _ in range(min(100, connections - start))]
        await asyncio.gather(*(loop.create_connection(lambda p=p: p, parts.hostname, parts.port) for p in batch))
        await asyncio.gather(*(p.answered for p in batch))
        held += batch
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    print(json.dumps({"open": sum(1 for p in held if p.open)}), flush=True)


async def idle(url: str, connections: int) -> None:
    sockets = []
    for start in range(0, connections, 100):  # open them 100 at a time
        sockets += await asyncio.gather(*(connect(url, compression=None, ping_interval=None)
                                          for _ in range(min(100, connections - start))))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(json.dumps({"open": sum(1 for ws in sockets if ws.state.name == "OPEN")}), flush=True)


def main() -> None:
    mode, url, connections = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "idle":
        asyncio.run(idle_http(url, connections) if url.startswith("http") else idle(url, connections))
        return
    seconds = float(sys.argv[4])
    cpu, started = time.process_time(), time.monotonic()  # the client's own CPU, so a saturated client shows
    if mode == "echo":
        import uvloop  # the client's own loop must not be what limits the count

        count = uvloop.run(echo(url, connections, seconds))
        rate = count / seconds
    else:
        count = asyncio.run(exchange(url, connections, seconds, b"\x00" * MIB))
        rate = 2 * count / seconds  # MiB/s, both ways
    busy = (time.process_time() - cpu) / (time.monotonic() - started)
    print(json.dumps({"rate": rate, "count": count, "client_cpu": busy}))


if __name__ == "__main__":
    main()
