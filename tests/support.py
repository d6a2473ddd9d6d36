"""Shared pieces of the test suite: raw sockets, response parsing, small apps."""

from __future__ import annotations

import asyncio
from typing import Any

import h11

TIMEOUT = 10  # seconds any single network wait may take before the test fails


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, then read until the server closes the connection."""
    reader, writer = await connect(port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()


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


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI 3 app answering ``hello <path>``, reading the whole body first."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello " + scope["path"].encode() + b" " + body})
