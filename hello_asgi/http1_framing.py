"""How an HTTP/1.1 response's body is delimited: decided once per response, then carried out.

``framing()`` is the one decision, a pure function of the request's method and version,
the response's status and header fields, the keep-alive wish, and what the first body
message tells (the whole body, when it ends the response; trailers announced). It picks
one of four writers, each a stateless object shared by every connection:

=================== ============================================ ==========================
writer              when                                         the body ends
=================== ============================================ ==========================
``LENGTH``          the app gave a Content-Length, or the first  at the length (``HTTPStream``
                    body message was the whole body              holds the app to it)
``CHUNKED``         HTTP/1.1, length unknown, or trailers        at the last chunk
``CLOSE_DELIMITED`` HTTP/1.0, length unknown                     at the close
``NO_BODY``         HEAD, 1xx, 204, 304                          with the head
=================== ============================================ ==========================

A HEAD response carries the framing fields a GET would have (RFC 9110 section 9.3.2),
and no body. The app's ``Transfer-Encoding`` and ``Connection`` fields never reach the
wire (``wire.head`` drops them): framing is the server's to write; nor does its
``Content-Length`` where the head says ``Transfer-Encoding: chunked`` (``chunked_head``).
"""

from __future__ import annotations

from .wire import Headers, field_lines

_NO_BODY_STATUSES = frozenset({*range(100, 200), 204, 304})  # RFC 9112 section 6.3
# The Connection field by keep-alive, then HTTP/1.0: an HTTP/1.0 client closes unless told.
_CONNECTION_LINES = ((b"connection: close\r\n", b"connection: close\r\n"), (b"", b"connection: keep-alive\r\n"))
# Chunked framing's fields (HTTP/1.1 only) by keep-alive.
_CHUNKED_LINES = (b"transfer-encoding: chunked\r\nconnection: close\r\n", b"transfer-encoding: chunked\r\n")


class BodyWriter:
    """One way of putting body bytes on the wire. Stateless: the connection keeps which one
    its current response uses, and ``HTTPStream`` counts the bytes.

    ``raw``: body bytes go as they are, no ``chunk()`` needed (and a file can go by
    ``os.sendfile``); ``last``: what ends the body on the wire; ``shows_cut``: a response
    cut short looks cut to the client without a reset; ``chunked_head``: the head says
    ``Transfer-Encoding: chunked``, so the app's Content-Length must not go with it.
    (Slots, not class attributes: the hot path reads them, and Python 3.11 reads a slot
    faster.)
    """

    __slots__ = ("chunked_head", "last", "raw", "shows_cut")

    def __init__(self, raw: bool = True, last: bytes = b"", shows_cut: bool = True,
                 chunked_head: bool = False) -> None:
        self.raw = raw
        self.last = last
        self.shows_cut = shows_cut
        self.chunked_head = chunked_head

    def chunk(self, data: bytes) -> bytes:
        """``data`` (not empty) as it goes on the wire."""
        return data

    def trailers(self, fields: Headers) -> bytes:
        """What ends the body with ``fields`` as trailers: only chunks can carry them."""
        return self.last


class _Chunked(BodyWriter):
    __slots__ = ()

    def chunk(self, data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    def trailers(self, fields: Headers) -> bytes:
        return b"0\r\n" + field_lines(fields) + b"\r\n"


class _NoBody(BodyWriter):
    __slots__ = ()

    def chunk(self, data: bytes) -> bytes:
        return b""  # a HEAD's, a 204's or a 304's: the app's bytes are dropped


LENGTH = BodyWriter()
CHUNKED = _Chunked(raw=False, last=b"0\r\n\r\n", chunked_head=True)
CLOSE_DELIMITED = BodyWriter(shows_cut=False)  # only a reset tells a cut body from a whole one
NO_BODY = _NoBody(raw=False)
NO_BODY_CHUNKED = _NoBody(raw=False, chunked_head=True)  # a HEAD's, where GET's would be chunked
_FOR_HEAD = {LENGTH: NO_BODY, CHUNKED: NO_BODY_CHUNKED, CLOSE_DELIMITED: NO_BODY}


def framing(method: str, http_version: str, status: int, headers: Headers, keep_alive: bool,
            whole: int | None = None, trailers: bool = False) -> tuple[BodyWriter, bool, bytes]:
    """The writer for a response's body, whether the connection stays open after it, and
    the framing field lines its head gets (``Content-Length`` when the server knows it,
    ``Transfer-Encoding``, ``Connection``).

    ``whole`` is the body's length when the first body message ends the response;
    ``trailers`` that the app announced trailers. A ``Content-Length`` that is not a
    number raises ``ValueError``: the stream checks the app's, so it means a caller's bug,
    and the connection answers 500 rather than frame a body by it. Where the writer's
    ``chunked_head`` is true the app's ``Content-Length`` must not go out
    (``wire.head``'s ``drop_length``).
    """
    http_10 = http_version == "1.0"
    length = None
    chunks_asked = False
    for name, value in headers:  # (inline: a call costs more than the loop for a few fields)
        lower = name.lower()
        if lower == b"content-length":
            length = _number(value)
        elif lower == b"transfer-encoding":
            chunks_asked = not http_10  # an HTTP/1.0 client takes no chunks
        elif lower == b"connection":
            keep_alive &= value.lower().find(b"close") == -1
    connection = _CONNECTION_LINES[keep_alive][http_10]
    if status in _NO_BODY_STATUSES:
        return NO_BODY, keep_alive, connection
    writer: BodyWriter  # (annotations alone: no code runs for them)
    lines: bytes
    if trailers and not http_10:
        writer, lines = CHUNKED, _CHUNKED_LINES[keep_alive]  # trailers need chunks
    elif length is not None:
        writer, lines = LENGTH, connection
    elif whole is not None and not chunks_asked:
        # (an empty answer to HEAD says nothing of GET's length)
        writer, lines = LENGTH, b"content-length: %d\r\n%s" % (whole, connection) if whole or method != "HEAD" \
            else connection
    elif http_10:
        writer, lines, keep_alive = CLOSE_DELIMITED, _CONNECTION_LINES[False][True], False
    else:
        writer, lines = CHUNKED, _CHUNKED_LINES[keep_alive]
    if method == "HEAD":
        writer = _FOR_HEAD[writer]  # the fields a GET would get, and no body
    return writer, keep_alive, lines


def _number(length: bytes) -> bytes:
    """The app's Content-Length, if it is a number."""
    if not length.strip(b" \t").isdigit():
        raise ValueError(f"the response's Content-Length is not a number: {length!r}")
    return length
