"""The app every server in the benchmark runs: ASGI 3, plain (no framework), so that what is
measured is the server.

- ``/`` (and any other path): hello world, the request body read and dropped;
- ``/download?bytes=N``: N bytes (default 200 MB) in 64 KiB ``http.response.body`` messages
  with no Content-Length, as Starlette's ``StreamingResponse`` sends them;
- ``/upload``: the request body read and discarded; the answer is its length in bytes;
- WebSocket: echo; lifespan: accepted.
"""

CHUNK = b"\x00" * 65536
DOWNLOAD = 200 * 1000 * 1000


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        if path == "/download":
            await download(scope, receive, send)
        elif path == "/upload":
            await upload(receive, send)
        else:
            while (await receive()).get("more_body"):
                pass
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"Hello, world!"})
    elif kind == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")})
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


async def download(scope, receive, send):
    query = dict(part.split(b"=", 1) for part in scope["query_string"].split(b"&") if b"=" in part)
    left = int(query.get(b"bytes", DOWNLOAD))
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    while left > len(CHUNK):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        left -= len(CHUNK)
    await send({"type": "http.response.body", "body": CHUNK[:left]})


async def upload(receive, send):
    received = 0
    while True:
        message = await receive()
        received += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(received).encode()})
