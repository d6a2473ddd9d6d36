"""The hello world app: it answers its own scope as JSON (an ASGI 2 double callable).

It sends a stray ``http.disconnect`` after its body, as the project's brief wrote it;
the server must take that in its stride.
"""

import json
from collections.abc import Awaitable, Callable
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
