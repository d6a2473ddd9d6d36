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
    root = scope.get("root_path", "").encode("utf-8")
    if root and raw_path.startswith(root):
        raw_path = raw_path[len(root):]
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
    server = scope.get("server") or ("", None)
    client = scope.get("client")
    environ = constants.copy()
    environ["REQUEST_METHOD"] = scope["method"]
    environ["SCRIPT_NAME"] = wsgi_text(scope.get("root_path", ""))
    environ["PATH_INFO"] = path_info(scope)
    environ["QUERY_STRING"] = scope.get("query_string", b"").decode("latin-1")
    environ["CONTENT_TYPE"] = ""
    environ["CONTENT_LENGTH"] = ""
    environ["SERVER_NAME"] = server[0] or ""
    environ["SERVER_PORT"] = str(server[1]) if server[1] is not None else ""
    environ["SERVER_PROTOCOL"] = "HTTP/" + scope.get("http_version", "1.1")
    environ["REMOTE_ADDR"] = client[0] if client else ""
    environ["REMOTE_PORT"] = str(client[1]) if client else ""
    environ["wsgi.url_scheme"] = scope.get("scheme", "http")
    seen: set[str] = set()
    for name, value in scope["headers"]:
        key = _KEYS.get(name, "") if name in _KEYS else environ_key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        if key in seen:
            text = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
        else:
            seen.add(key)
        environ[key] = text
    return environ
