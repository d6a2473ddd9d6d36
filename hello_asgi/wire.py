"""HTTP/1.1 message heads as bytes: ``head()`` writes every one hello-asgi sends.

The responses to requests (``http1``), ``error_response`` (a refused request, the
over-limit 503, a bad WebSocket handshake), the WebSocket ``101`` and its denial
(``websocket``), the h2c ``101`` (the switcher in ``factory``) and the 1xx informational
responses (``100 Continue``, ``103 Early Hints``) all come from ``head()``.

Server and Date, one policy, applied here for every head: a head that ends an HTTP/1.1
exchange (every final response, 2xx to 5xx, and the ``101`` after which the connection
speaks another protocol) carries ``server:`` with the configured value
(``--server-header``; none with ``--no-server-header``) and ``date:`` with the current
second (none with ``--no-date-header``); where the app gave a ``Server`` or ``Date``
field of its own, that one goes instead. An interim head (``100 Continue``, ``103 Early
Hints``) carries neither: the final head of its exchange follows with both (RFC 9110
section 6.6.1 asks for Date on 2xx to 4xx and leaves 1xx free), and ``100 Continue``
stays the 25 bytes a waiting client expects. Callers pass the Server value (``None``
when off) and whether Date is on. The Date is kept here, formatted once a second (``http_date``).
"""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from time import time as _time

Headers = list[tuple[bytes, bytes]]

_next_second = 0  # when _date_line, of the second before, goes stale
_date_value = b""
_date_line = b""

STATUS_LINES = {status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("latin-1") for status in HTTPStatus}


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


def field_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """One ``name: value`` line per header, each with its CRLF."""
    return b"".join(b"%s: %s\r\n" % field for field in headers)


def http_date() -> bytes:
    """The ``Date`` value of this second, formatted once a second rather than once a head."""
    if _time() >= _next_second:
        _restamp()
    return _date_value


def _restamp() -> None:
    global _next_second, _date_value, _date_line
    second = int(_time())
    _next_second = second + 1
    _date_value = formatdate(second, usegmt=True).encode("ascii")
    _date_line = b"date: " + _date_value + b"\r\n"


def head(status: int, fields: Iterable[tuple[bytes, bytes]], own: bytes, server: bytes | None,
         date: bool, body: bytes = b"", drop_length: bool = False) -> bytes:
    """A whole head, and ``body`` (what follows it in the same write).

    ``fields`` are the app's (checked already): their ``Connection`` and
    ``Transfer-Encoding``, and with ``drop_length`` their ``Content-Length``, are left
    out. ``own`` are the server's field lines (framing, upgrade), each with its CRLF.
    ``server`` is the Server value, ``None`` when off, and ``date`` whether Date is on;
    they go by the module's policy.
    """
    if status < 200 and status != 101:
        server, date = None, False  # an interim head: its final one carries them
    lines = [STATUS_LINES.get(status) or status_line(status)]
    for field in fields:  # (comparisons: a set would hash each name)
        lower = field[0].lower()
        if lower == b"server":
            server = None
        elif lower == b"date":
            date = False
        elif lower == b"connection" or lower == b"transfer-encoding" or drop_length and lower == b"content-length":
            continue  # framing is the server's to write
        lines.append(b"%s: %s\r\n" % field)
    lines.append(own)
    if server:
        lines.append(b"server: " + server + b"\r\n")
    if date:
        if _time() >= _next_second:  # (not http_date(): a call costs more than this)
            _restamp()
        lines.append(_date_line)
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def error_response(status: int, reason: str, server: bytes | None, date: bool,
                   extra: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A complete ``Connection: close`` response telling the client what was wrong;
    ``extra`` are fields it needs beside (``Sec-WebSocket-Version`` for a 426)."""
    body = f"{status} {HTTPStatus(status).phrase}: {reason}\n".encode("latin-1", "replace")
    own = b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body)
    return head(status, extra, own, server, date, body)
