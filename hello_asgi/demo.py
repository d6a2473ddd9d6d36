"""The hello world app: it answers its own scope as JSON (an ASGI 2 double callable).

It sends a stray ``http.disconnect`` after its body, as the project's brief wrote it;
the server must take that in its stride.
"""

import json


def asgi(scope):
    async def chat(receive, send):
        await receive()
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [[b'Content-Type', b'application/json']]})
        await send({'type': 'http.response.body',
                    'body': json.dumps(scope, default=bytes.decode).encode()})
        await send({'type': 'http.disconnect'})
    return chat
