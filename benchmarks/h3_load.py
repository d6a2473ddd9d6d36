"""An HTTP/3 load generator on aioquic, for the h3 scenarios of run.py.

    python h3_load.py load URL CONNECTIONS STREAMS DURATION [PROCESSES]
    python h3_load.py download URL BYTES

``load``: PROCESSES processes (default 2), each opening CONNECTIONS QUIC connections, each
keeping STREAMS GET requests in flight, for DURATION seconds. h2load speaks HTTP/3 only when
built with ngtcp2 (Debian's is not), so this stands in for it. ``download``: one GET of
``/download?bytes=BYTES``, timed. Either prints one JSON line: requests answered 200, errors,
the rate, and the client's own CPU time (every process, from the kernel's account), so that a
client at its core's limit is seen to be the limit.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import socket
import ssl
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset


class Client(QuicConnectionProtocol):
    """aioquic's connection with HTTP/3: ``get`` returns (status, body length)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting: dict[int, list[Any]] = {}  # stream id: [future, status, bytes]

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            for future, *_ in self.waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError(event.reason_phrase))
            return
        if isinstance(event, StreamReset) and event.stream_id in self.waiting:
            future = self.waiting.pop(event.stream_id)[0]
            if not future.done():
                future.set_exception(ConnectionError(f"reset {event.error_code}"))
        for h3_event in self.h3.handle_event(event):
            entry = self.waiting.get(h3_event.stream_id)
            if entry is None:
                continue
            if isinstance(h3_event, HeadersReceived) and entry[1] == 0:
                entry[1] = int(dict(h3_event.headers)[b":status"])
            elif isinstance(h3_event, DataReceived):
                entry[2] += len(h3_event.data)
            if h3_event.stream_ended:
                del self.waiting[h3_event.stream_id]
                entry[0].set_result((entry[1], entry[2]))

    async def get(self, authority: bytes, path: bytes) -> tuple[int, int]:
        stream_id = self._quic.get_next_available_stream_id()
        future = self._loop.create_future()
        self.waiting[stream_id] = [future, 0, 0]
        self.h3.send_headers(stream_id, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority),
                                         (b":path", path)], end_stream=True)
        self.transmit()
        return await future  # type: ignore[no-any-return]


def _large_receive_buffer(client: Client) -> None:
    """asyncio reads a datagram socket one datagram per loop turn: a socket buffer of the
    kernel's default size overflows in a burst, and the losses, not the server, set the pace."""
    sock = client._transport.get_extra_info("socket")  # noqa: SLF001
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)


def _configuration() -> QuicConfiguration:
    return QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                             max_datagram_frame_size=None, max_data=64 * 1024 * 1024,
                             max_stream_data=16 * 1024 * 1024)


async def _stream(client: Client, authority: bytes, path: bytes, until: float, counts: list[int]) -> None:
    while time.monotonic() < until:
        try:
            status, _ = await client.get(authority, path)
        except ConnectionError:
            counts[1] += 1
            return
        counts[0 if status == 200 else 1] += 1


async def _connection(host: str, port: int, streams: int, until: float, counts: list[int]) -> None:
    async with connect(host, port, configuration=_configuration(), create_protocol=Client) as client:
        _large_receive_buffer(client)
        authority = f"{host}:{port}".encode()
        await asyncio.gather(*(_stream(client, authority, b"/", until, counts)  # type: ignore[arg-type]
                               for _ in range(streams)))


def _process(url: str, connections: int, streams: int, duration: float, queue: Any) -> None:
    parts = urlsplit(url)
    counts = [0, 0]

    async def main() -> None:
        until = time.monotonic() + duration
        results = await asyncio.gather(*(_connection(parts.hostname, parts.port, streams, until, counts)
                                         for _ in range(connections)), return_exceptions=True)
        counts[1] += sum(isinstance(result, BaseException) for result in results)

    asyncio.run(main())
    queue.put(counts)


def load(url: str, connections: int, streams: int, duration: float, processes: int) -> dict[str, Any]:
    queue: Any = multiprocessing.get_context("fork").Queue()
    started = time.monotonic()
    workers = [multiprocessing.get_context("fork").Process(
        target=_process, args=(url, connections, streams, duration, queue)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    totals = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    count = sum(ok for ok, _ in totals)
    return {"count": count, "errors": sum(bad for _, bad in totals), "rate": count / duration,
            "client_cpu_s": usage.ru_utime + usage.ru_stime, "client_cpu": (usage.ru_utime + usage.ru_stime) / wall}


async def download(url: str, size: int) -> dict[str, Any]:
    parts = urlsplit(url)
    async with connect(parts.hostname, parts.port, configuration=_configuration(), create_protocol=Client) as client:
        _large_receive_buffer(client)
        started = time.monotonic()
        cpu = time.process_time()
        status, received = await client.get(f"{parts.hostname}:{parts.port}".encode(),  # type: ignore[attr-defined]
                                            b"/download?bytes=%d" % size)
        seconds = time.monotonic() - started
        used = time.process_time() - cpu
    return {"status": status, "bytes": received, "seconds": seconds, "client_cpu_s": used,
            "client_cpu": used / seconds, "errors": 0 if status == 200 and received == size else 1}


if __name__ == "__main__":
    mode, target = sys.argv[1], sys.argv[2]
    if mode == "load":
        numbers = [int(argument) for argument in sys.argv[3:5]]
        print(json.dumps(load(target, numbers[0], numbers[1], float(sys.argv[5]),
                              int(sys.argv[6]) if len(sys.argv) > 6 else 2)))
    else:
        print(json.dumps(asyncio.run(download(target, int(sys.argv[3])))))
