"""``Alt-Svc``: HTTP/1.1 and HTTP/2 responses over TLS name the HTTP/3 endpoint beside them.

A browser that reads ``Alt-Svc: h3=":443"; ma=86400`` on a response tries HTTP/3 on that
UDP port for its next requests to the origin (RFC 7838, RFC 9114 section 3.1.1). The
header is added only while HTTP/3 is on, only to responses over TLS (HTTP/3 serves no
cleartext origin) and only where the request came in on a port that has an HTTP/3
endpoint; HTTP/3 responses need none. A wrapper costs a call per request, so it is put in
front of the app only when ``--h3`` is on.
"""

from __future__ import annotations

from .headers import with_headers
from .loading import ASGIApp, Message, Receive, Scope, Send


class AltSvc:
    """The app, with ``alt-svc`` added to HTTP/1.1 and HTTP/2 responses over TLS that
    arrived on one of ``ports`` (filled in as the HTTP/3 endpoints start), unless the app
    sends its own."""

    def __init__(self, app: ASGIApp, max_age: int, ports: set[int]) -> None:
        self.__wrapped__ = app
        self._max_age = max_age
        self._ports = ports
        self._values: dict[int, bytes] = {}

    def value(self, port: int) -> bytes:
        """The header's value for a request that arrived on ``port``."""
        value = self._values.get(port)
        if value is None:
            value = self._values[port] = b'h3=":%d"; ma=%d' % (port, self._max_age)
        return value

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if (scope["type"] != "http" or scope.get("scheme") != "https" or scope.get("http_version") == "3"
                or not server or server[1] not in self._ports):
            await self.__wrapped__(scope, receive, send)
            return
        header = [(b"alt-svc", self.value(server[1]))]

        async def send_with_alt_svc(message: Message) -> None:
            await send(with_headers(message, header))

        await self.__wrapped__(scope, receive, send_with_alt_svc)
