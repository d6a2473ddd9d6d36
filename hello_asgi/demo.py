"""The hello world apps: each answers its own request as JSON.

``asgi`` is an ASGI 2 double callable that answers its scope. It sends a stray
``http.disconnect`` after its body, as the project's brief wrote it; the server must take
that in its stride. ``wsgi`` is the WSGI app the project's first document opens with,
as written there (with type hints): it answers its ``environ`` (``twist hello-asgi --app
hello_asgi.demo:wsgi``).
"""

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def asgi(scope: dict[str, Any]) -> Callable[[Receive, Send], Awaitable[None]]:
    async def chat(receive: Receive, send: Send) -> None:
        await receive()
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [[b'Content-Type', b'application/json']]})
        await send({'type': 'http.response.body',
                    'body': json.dumps(scope, default=bytes.decode).encode()})
        await send({'type': 'http.disconnect'})
    return chat


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    start_response('200 OK', [
        ('Content-Type', 'application/json'),
    ])
    yield json.dumps(environ, default=repr).encode()
