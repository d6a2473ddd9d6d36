"""HTTP/2 header blocks: inbound ones checked in one pass (RFC 9113 sections 8.2 and 8.3),
outbound ones built by one function with one policy for Server and Date.

h2 checks each block through a chain of seven generators, one Python loop per byte of
every name among them: 17% of an HTTP/2 request's time. These functions refuse exactly the
blocks h2's ``validate_headers`` refuses (tests/test_h2_headers.py holds them to it), with
a regular expression per field. Each returns why a block is malformed, or ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .known_good import KnownGood

# A field name: no control, space, uppercase, DEL or non-ASCII byte, and no colon but a
# pseudo-header's leading one (section 8.2.1).
_is_name = re.compile(rb":?[\x21-\x39\x3b-\x40\x5b-\x7e]+").fullmatch
# A field value must not hold NUL, CR or LF, nor start or end with whitespace (section 8.2.1).
_bad_value = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z").search
# Meaningful to one HTTP/1.1 hop only, never in HTTP/2 (section 8.2.2).
_CONNECTION_SPECIFIC = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding",
                                  b"upgrade"})
# What an h2c upgrade request carried for the HTTP/1.1 hop only; not part of stream 1.
_HOP_BY_HOP = _CONNECTION_SPECIFIC | {b"http2-settings"}
# Never sent on a response: those, and TE, a request's alone (section 8.2.2).
NOT_IN_RESPONSES = _CONNECTION_SPECIFIC | {b"te"}  # (HTTP/3's too: RFC 9114 section 4.2)
_WHITESPACE = (b" ", b"\t")
# An origin-form :path (no space, control or fragment), the request targets HTTP/1.1's
# parser takes: HTTP/2 and HTTP/3 serve or refuse the same ones.
is_origin_form = re.compile(rb"/[!\x24-\x7e]*").fullmatch
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})

Fields = Sequence[tuple[bytes, bytes]]
Headers = list[tuple[bytes, bytes]]

# Fields already found well-formed: most of a request's fields repeat from one request to
# the next (:method, :scheme, :authority, user-agent, accept...).
_good_fields: KnownGood[tuple[bytes, bytes]] = KnownGood(most=1024, longest=260)


def request_problem(headers: Fields) -> str | None:
    """Why a request's header block is malformed, or ``None``."""
    pseudo: dict[bytes, bytes] = {}
    host: bytes | None = None
    regular = False
    for field in headers:
        name, value = field
        if field not in _good_fields:
            problem = _field_problem(name, value)
            if problem is not None:
                return problem
            _good_fields.remember(field, len(value))
        if name[0] == 0x3A:  # ":"
            if regular or name in pseudo or name not in _REQUEST_PSEUDO:
                return f"pseudo-header {name!r} unknown, repeated or after a regular field (section 8.3)"
            pseudo[name] = value
        else:
            regular = True
            if name == b"host":
                if host is not None:
                    return "two Host fields"
                host = value
    return _pseudo_problem(pseudo) or _authority_problem(pseudo.get(b":authority"), host)


def split_request(raw_headers: Headers) -> tuple[dict[bytes, bytes], Headers, bool]:
    """A request's pseudo-header fields, its other fields as the scope has them:
    ``:authority`` as the host (RFC 9113 section 8.3.1), cookie fields joined into one, last
    (section 8.2.3), no HTTP/1.1 hop-by-hop fields; and whether it takes trailers
    (``TE: trailers``, as the trailers extension asks), seen on the way."""
    pseudo = {}
    headers: Headers = []
    cookies = []
    trailers = False
    for name, value in raw_headers:
        if name[:1] == b":":
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)
        elif name not in _HOP_BY_HOP:
            headers.append((name, value))
            if name == b"te":
                trailers = trailers or value.lower().find(b"trailers") != -1
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    authority = pseudo.get(b":authority")
    if authority is not None:
        headers = [(b"host", authority), *(h for h in headers if h[0] != b"host")]
    return pseudo, headers, trailers


def response_block(status: int, headers: Fields, server: bytes | None,
                   date: Callable[[], bytes] | None) -> list[tuple[bytes, bytes]]:
    """The header block of a response on any stream (a request's, a WebSocket's, a refusal).

    The app's fields were checked already (``stream.checked_headers``): here names are
    lower-cased, values trimmed (section 8.2.1), connection-specific fields dropped
    (section 8.2.2). A final response gets ``server`` and ``date()`` (``None``: not sent)
    unless the app sent its own; a 1xx gets neither.
    """
    block = [(b":status", b"%d" % status)]
    for name, value in headers:
        name = name.lower()
        if name in NOT_IN_RESPONSES:
            continue
        if value[:1] in _WHITESPACE or value[-1:] in _WHITESPACE:
            value = value.strip(b" \t")
        if name == b"server":
            server = None
        elif name == b"date":
            date = None
        block.append((name, value))
    if status >= 200:
        if server:
            block.append((b"server", server))
        if date is not None:
            block.append((b"date", date()))
    return block


def trailers_problem(headers: Fields) -> str | None:
    """Why a request's trailer block is malformed, or ``None``: no pseudo-headers there."""
    for name, value in headers:
        problem = _field_problem(name, value)
        if problem is not None:
            return problem
        if name[0] == 0x3A:
            return f"pseudo-header {name!r} in trailers (section 8.1)"
    return None


def _field_problem(name: bytes, value: bytes) -> str | None:
    if not _is_name(name):
        return f"malformed field name {name!r}"
    if value and _bad_value(value):
        return f"malformed value for {name!r}"
    if name in _CONNECTION_SPECIFIC:
        return f"connection-specific field {name!r} (section 8.2.2)"
    if name == b"te" and value.lower() != b"trailers":
        return "TE other than trailers (section 8.2.2)"
    return None


def _pseudo_problem(pseudo: dict[bytes, bytes]) -> str | None:
    """The pseudo-headers a request needs (section 8.3.1; CONNECT, 8.5; extended CONNECT, RFC 8441)."""
    method = pseudo.get(b":method")
    if method is None:
        return "no :method"
    has_target = b":scheme" in pseudo, b":path" in pseudo
    if method == b"CONNECT" and b":protocol" not in pseudo:
        return "CONNECT with :scheme or :path" if any(has_target) else None
    if not all(has_target):
        return "no :scheme or no :path"
    if b":protocol" in pseudo and method != b"CONNECT":
        return ":protocol without CONNECT"
    if not pseudo[b":path"]:
        return "empty :path"
    return None


def _authority_problem(authority: bytes | None, host: bytes | None) -> str | None:
    if authority is None and host is None:
        return "neither :authority nor Host"
    if authority is not None and host is not None and authority != host:
        return ":authority and Host differ"
    return None
