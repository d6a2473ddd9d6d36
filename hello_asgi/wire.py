"""HTTP/1.1 message heads as bytes, for every module that writes one.

``http1`` writes responses, ``websocket`` writes handshake answers and denials, and the
factory writes the over-limit 503: the status lines and field lines come from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

Headers = list[tuple[bytes, bytes]]


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason phrase>`` with its CRLF."""
    line = STATUS_LINES.get(status)
    if line is not None:
        return line
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


def field_lines(headers: Headers) -> bytes:
    """One ``name: value`` line per header, each with its CRLF."""
    return b"".join(b"%s: %s\r\n" % field for field in headers)


STATUS_LINES = {status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("latin-1") for status in HTTPStatus}


def error_response(status: int, reason: str, server_header: bytes | None, extra: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A complete ``Connection: close`` response telling the client what was wrong."""
    body = f"{status} {HTTPStatus(status).phrase}: {reason}\n".encode("latin-1", "replace")
    head = [
        STATUS_LINES[status],
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
        field_lines(list(extra)),
    ]
    if server_header:
        head.append(b"server: " + server_header + b"\r\n")
    return b"".join(head) + b"\r\n" + body
