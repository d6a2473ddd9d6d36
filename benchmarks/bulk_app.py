"""The app of ``bulk.py``: 200 MB downloads three ways, and an upload that is counted.

``/plain`` is a bare ASGI app sending 64 KiB chunks, ``/stream`` Starlette's
``StreamingResponse`` of the same chunks, ``/file`` Starlette's ``FileResponse`` of a 200 MB
file (which uses ``http.response.pathsend`` where the server offers it), ``/upload`` reads
the request body and answers its size.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.responses import FileResponse, StreamingResponse

from app import upload  # benchmarks/app.py: the body counted, its length the answer

SIZE = 200 * 1000 * 1000
CHUNK = 64 * 1024
FILE = os.environ.get("BULK_FILE", "/tmp/bulk-200mb.bin")
_DATA = b"x" * CHUNK


def chunks() -> Any:
    left = SIZE
    while left > 0:
        yield _DATA if left >= CHUNK else _DATA[:left]
        left -= CHUNK


async def async_chunks() -> Any:
    """As ``chunks``, for StreamingResponse: a sync iterator would cost a thread hop a chunk."""
    for chunk in chunks():
        yield chunk


async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % SIZE)]})
    for chunk in chunks():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path == "/plain":
        await plain(scope, receive, send)
    elif path == "/stream":
        await StreamingResponse(async_chunks(), media_type="application/octet-stream")(scope, receive, send)
    elif path == "/file":
        await FileResponse(FILE)(scope, receive, send)
    else:
        await upload(receive, send)
