"""PEP 3333's ``environ``, built from an ASGI ``http`` scope.

The scope is the one every ASGI app gets, after ``proxy.py`` rewrote it for a trusted
proxy, so ``REMOTE_ADDR``, ``wsgi.url_scheme`` and ``SERVER_NAME`` say what they say to an
ASGI app. Everything here is pure: no thread, no loop.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from .loading import Scope

# The keys of a request's headers as environ keys; header names repeat from one request to
# the next, so each is worked out once (bounded: a client may send names without end).
_KEYS: dict[bytes, str | None] = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
_MOST_KEYS = 512


def environ_key(name: bytes) -> str | None:
    """``HTTP_USER_AGENT`` for ``user-agent``; ``None`` for a name with ``_`` in it, which
    would pass for the field with ``-`` in its place (``X_Forwarded_For`` for
    ``X-Forwarded-For``), so it is dropped, as nginx and Gunicorn do."""
    key = _KEYS.get(name, "")
    if key != "":
        return key
    key = None if name.find(b"_") != -1 else "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
    if len(_KEYS) < _MOST_KEYS:
        _KEYS[name] = key
    return key


def wsgi_text(text: str) -> str:
    """A native string as PEP 3333 carries text that is bytes on the wire: the UTF-8 bytes, as latin-1."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def path_info(scope: Scope) -> str:
    """The request path below ``root_path``, %-decoded to bytes and given as latin-1 (PEP 3333)."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    root = scope["root_path"]
    if root:
        root_bytes = root.encode("utf-8")
        if raw_path.startswith(root_bytes):
            raw_path = raw_path[len(root_bytes):]
    if raw_path.find(b"%") != -1:
        raw_path = unquote_to_bytes(raw_path)
    return raw_path.decode("latin-1")


def build_environ(scope: Scope, constants: dict[str, Any]) -> dict[str, Any]:
    """The environ of one request; ``constants`` holds what every request shares
    (``wsgi.version``, ``wsgi.multithread``...), and the caller adds ``wsgi.input`` and
    ``wsgi.errors``.

    ``CONTENT_TYPE`` and ``CONTENT_LENGTH`` are always there, empty when the request has no
    such field (PEP 3333 allows empty or absent). A field sent more than once is joined with
    ``,`` (RFC 9110 section 5.3), cookies with ``;`` (RFC 6265 section 5.4).
    """
    server = scope["server"] or ("", None)
    client = scope["client"]
    root_path = scope["root_path"]
    environ = {
        **constants,
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": wsgi_text(root_path) if root_path else "",
        "PATH_INFO": path_info(scope),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "CONTENT_TYPE": "",
        "CONTENT_LENGTH": "",
        "SERVER_NAME": server[0] or "",
        "SERVER_PORT": str(server[1]) if server[1] is not None else "",
        "SERVER_PROTOCOL": _PROTOCOLS.get(scope["http_version"]) or "HTTP/" + scope["http_version"],
        "REMOTE_ADDR": client[0] if client else "",
        "REMOTE_PORT": str(client[1]) if client else "",
        "wsgi.url_scheme": scope["scheme"],
    }
    seen: set[str] = set()
    for name, value in scope["headers"]:
        key = _KEYS.get(name, "")
        if key == "":
            key = environ_key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        if key in seen:
            text = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
        else:
            seen.add(key)
        environ[key] = text
    return environ


_PROTOCOLS = {"1.1": "HTTP/1.1", "2": "HTTP/2", "1.0": "HTTP/1.0"}
