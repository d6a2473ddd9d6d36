"""``--header NAME:VALUE``: response headers the server adds to every HTTP response."""

from __future__ import annotations

from typing import Any

from .loading import ASGIApp


def parse_header(text: str) -> tuple[bytes, bytes]:
    """``NAME:VALUE`` (as Uvicorn takes it) as a header pair, the name lower-cased."""
    name, separator, value = text.partition(":")
    name = name.strip()
    if not separator or not name or any(character in name for character in " \t\r\n"):
        raise ValueError(f"expected NAME:VALUE, not {text!r}")
    if any(character in value for character in "\r\n\0"):
        raise ValueError(f"a header value cannot hold CR, LF or NUL: {text!r}")
    return name.lower().encode("latin-1"), value.strip().encode("latin-1")


class DefaultHeaders:
    """The app, with ``headers`` added to each HTTP response that does not set them itself.

    A wrapper costs a call per request, so it is put in front of the app only when
    ``--header`` asks for it."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> None:
        self.__wrapped__ = app
        self._headers = headers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.__wrapped__(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            await send(with_headers(message, self._headers))

        await self.__wrapped__(scope, receive, send_with_headers)


def with_headers(message: Any, headers: list[tuple[bytes, bytes]]) -> Any:
    """``message``, and if it starts a response, with each of ``headers`` (lower-case names)
    that the app did not set itself: what every server-side header wrapper adds."""
    if message["type"] != "http.response.start":
        return message
    own = {bytes(name).lower() for name, _ in message.get("headers", ())}
    added = [header for header in headers if header[0] not in own]
    return {**message, "headers": [*message.get("headers", ()), *added]} if added else message
