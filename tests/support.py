"""Shared pieces of the test suite: raw sockets, response parsing, small apps."""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

import h11
from twisted.internet.defer import Deferred

TIMEOUT = 10  # seconds any single network wait may take before the test fails


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def exchange(port: int, data: bytes, until: bytes | None = None) -> bytes:
    """Send raw bytes, then read until the server closes the connection (or, with
    ``until``, until those bytes arrive; then the client closes)."""
    reader, writer = await connect(port)
    writer.write(data)
    try:
        if until is None:
            return await asyncio.wait_for(reader.read(), TIMEOUT)
        return await asyncio.wait_for(reader.readuntil(until), TIMEOUT)
    finally:
        writer.close()


async def until_closed(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """Everything read until the server closes, and whether it closed with a reset: an
    aborted connection is reset (SO_LINGER 0), as Twisted's transports do."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), TIMEOUT):
            data += chunk
    except ConnectionResetError:
        return data, True
    return data, False


async def cut_off(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send raw bytes, then ``until_closed``."""
    reader, writer = await connect(port)
    writer.write(data)
    try:
        return await until_closed(reader)
    finally:
        writer.close()


async def released(server: Any) -> None:
    """Wait until ``server`` (a ``TestServer``) has no connection open: each one the server
    or its client closed has reached ``connectionLost`` and given its slot back."""
    await asyncio.wait_for(server.service.factory.drained(), TIMEOUT)
    assert not server.service.factory.connections


def open_descriptors() -> int:
    """How many file descriptors this process (the server, in these tests) has open."""
    return len(os.listdir("/proc/self/fd"))


def parse_responses(data: bytes, methods: list[bytes] | None = None) -> list[tuple[h11.Response, bytes]]:
    """Parse the responses in ``data`` with h11 (a second, independent HTTP parser)."""
    methods = methods or [b"GET"]
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    client.receive_data(b"")  # the data ends where the server closed the connection
    responses: list[tuple[h11.Response, bytes]] = []
    for method in methods:
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        response = None
        body = b""
        while True:
            event = client.next_event()
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"incomplete response in {data!r}")
            elif isinstance(event, h11.InformationalResponse):
                continue
        assert response is not None
        responses.append((response, body))
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
        else:
            break
    return responses


def header(response: h11.Response, name: bytes) -> bytes | None:
    for key, value in response.headers:
        if key == name:
            return value
    return None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


async def browse(test: Any, url: str, *flags: str) -> asyncio.subprocess.Process:
    """Headless Chromium (installed by .ci/run) opening ``url`` with ``flags`` besides the
    ones every browser test needs; killed in ``test``'s cleanup."""
    assert CHROMIUM, "chromium is not installed (.ci/run installs it)"
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", *flags, f"--user-data-dir={test.mktemp()}", "--remote-debugging-port=0", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def stop() -> None:
        if process.returncode is None:
            process.kill()
        await process.wait()

    test.addCleanup(lambda: Deferred.fromFuture(asyncio.ensure_future(stop())))
    return process


async def read_body(receive: Any) -> bytes:
    """The whole request body, as an app reads it: ``http.request`` messages until the last."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI 3 app answering ``hello <path>``, reading the whole body first."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello " + scope["path"].encode() + b" " + body})


class H2Client:
    """A raw HTTP/2 client on the h2 library, over an asyncio connection, for tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auto_ack: bool = True) -> None:
        import h2.config
        import h2.connection

        self.reader, self.writer = reader, writer
        self.auto_ack = auto_ack
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.headers: dict[int, list[tuple[bytes, bytes]]] = {}
        self.bodies: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.goaway: Any = None
        self.trailers: dict[int, list[tuple[bytes, bytes]]] = {}
        self.informational: dict[int, list[list[tuple[bytes, bytes]]]] = {}
        self.pushed: dict[int, int] = {}  # promised stream id -> the stream it was promised on
        self.closed = False
        self.flush()

    @classmethod
    async def open(cls, port: int, auto_ack: bool = True) -> H2Client:
        reader, writer = await connect(port)
        return cls(reader, writer, auto_ack)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    def request(self, path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None,
                body: bytes | None = None, end: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        block = [(b":method", method.encode()), (b":path", path.encode()), (b":scheme", b"http"),
                 (b":authority", b"example.test"), *(headers or [])]
        self.conn.send_headers(stream_id, block, end_stream=end and not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=end)
        self.flush()
        return stream_id

    async def pump(self) -> None:
        """Read once from the server and record what it said."""
        import h2.events

        data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(self._take_goaway(data)):
            if isinstance(event, h2.events.ResponseReceived):
                self.headers[event.stream_id] = event.headers
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] = self.bodies.get(event.stream_id, b"") + event.data
                if self.auto_ack:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                self.trailers[event.stream_id] = event.headers
            elif isinstance(event, h2.events.InformationalResponseReceived):
                self.informational.setdefault(event.stream_id, []).append(event.headers)
            elif isinstance(event, h2.events.PushedStreamReceived):
                self.pushed[event.pushed_stream_id] = event.parent_stream_id
                self.headers.setdefault(event.pushed_stream_id, [])
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.resets[event.stream_id] = event.error_code
        self.flush()

    def _take_goaway(self, data: bytes) -> bytes:
        """Record GOAWAY frames and keep them from h2, which as a client would refuse the
        responses a graceful GOAWAY still lets through."""
        from hyperframe.frame import Frame, GoAwayFrame

        self._unparsed = getattr(self, "_unparsed", b"") + data
        passed = b""
        while len(self._unparsed) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._unparsed[:9]))
            if len(self._unparsed) < 9 + length:
                break
            raw, self._unparsed = self._unparsed[: 9 + length], self._unparsed[9 + length:]
            if isinstance(frame, GoAwayFrame):
                frame.parse_body(memoryview(raw[9:]))
                self.goaway = frame
            else:
                passed += raw
        return passed

    async def response(self, stream_id: int) -> tuple[dict[bytes, bytes], bytes]:
        while stream_id not in self.ended and stream_id not in self.resets:
            if self.closed:
                raise AssertionError(f"connection closed before stream {stream_id} ended")
            await self.pump()
        if stream_id in self.resets:
            raise AssertionError(f"stream {stream_id} reset with {self.resets[stream_id]}")
        return dict(self.headers[stream_id]), self.bodies.get(stream_id, b"")

    def close(self) -> None:
        self.writer.close()


class HeldApp:
    """``hello_app``, but each request waits until ``release`` is set; ``entered`` is set
    once one has arrived: for tests that act while a request is in flight."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.entered.set()
        await self.release.wait()
        await hello_app(scope, receive, send)


async def get_when_up(url: str, attempts: int = 400) -> Any:
    """GET ``url`` from a server process that may still be starting."""
    import httpx

    async with httpx.AsyncClient() as client:
        for _ in range(attempts - 1):
            try:
                return await client.get(url)
            except httpx.ConnectError:
                await asyncio.sleep(0.05)  # the process is still starting
        return await client.get(url)
