"""Behind proxies: who the client really is, from forwarding headers the server can trust.

A proxy that terminates the client's connection tells the server about it in headers:
RFC 7239 ``Forwarded``, or the older ``X-Forwarded-For``, ``-Proto``, ``-Host`` and
``-Port``. Anyone can send those headers, so they count only when the connection comes
from a trusted proxy (``forwarded_allow_ips``), and of the addresses a chain of proxies
listed, the client is the right-most one that is not itself a trusted proxy: everything to
its left was written by parties nobody vouched for.

(The PROXY protocol, the other way load balancers pass the client on, is
``proxy_protocol.py``.)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .loading import Scope

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The peers whose forwarding headers count: addresses and networks, ``unix`` for
    UNIX-socket peers, or ``*`` for every peer (only where nothing else can connect)."""

    def __init__(self, entries: list[str]) -> None:
        self._everyone = "*" in entries
        self._unix = "unix" in entries
        self._networks: list[_Network] = []
        for entry in entries:
            if entry not in ("*", "unix"):
                try:
                    self._networks.append(ipaddress.ip_network(entry.strip(), strict=False))
                except ValueError:
                    raise ValueError(
                        f"forwarded_allow_ips: {entry!r} is not an address, a network, 'unix' or '*'") from None

    def trusts(self, host: str | None) -> bool:
        """Whether ``host`` (an address, ``None`` for a UNIX-socket peer) is a trusted proxy."""
        if self._everyone:
            return True
        if host is None:
            return self._unix
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False  # a name or an obfuscated identifier (RFC 7239 section 6.3): not one we listed
        return any(address in network for network in self._networks)


@dataclass
class _Hop:
    """What one proxy said about the connection it received, each value checked."""

    client: tuple[str, int] | None = None  # the address it received the connection from, and its port (0: none given)
    scheme: str | None = None  # "http" or "https"
    host: tuple[str, int | None] | None = None
    port: int | None = None


_SCHEMES = {"http": "http", "ws": "http", "https": "https", "wss": "https"}

# RFC 7239 section 4: comma-separated elements of ``;``-separated ``name=value`` pairs,
# each value a token or a quoted string. A value in a token may hold ``:``, ``[`` and
# ``]`` here, which the RFC reserves for quoted strings, as proxies write them both ways.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VALUE = r'(?:[!#$%&\'*+.^_`|~0-9A-Za-z:\[\]-]+|"(?:[^"\\]|\\.)*")'
_ELEMENT = rf"(?:{_TOKEN}={_VALUE})?(?:[ \t]*;[ \t]*(?:{_TOKEN}={_VALUE})?)*"
_FORWARDED = re.compile(rf"[ \t]*{_ELEMENT}(?:[ \t]*,[ \t]*{_ELEMENT})*[ \t]*")
_FORWARDED_PIECE = re.compile(rf"(,)|({_TOKEN})=({_VALUE})")
_HIDDEN_NODE = re.compile(r"(?:unknown|_[A-Za-z0-9._-]+)(?::(?:[0-9]{1,5}|_[A-Za-z0-9._-]+))?", re.IGNORECASE)
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9_-]+\.)*[A-Za-z0-9_-]+\.?")


def apply_forwarded(scope: Scope, trusted: TrustedProxies) -> None:
    """Rewrite ``client``, ``scheme`` and ``server`` of an ``http`` scope from its forwarding
    headers (a ``websocket`` scope is made from one).

    Called only for connections from a trusted proxy. ``Forwarded`` wins over the
    ``X-Forwarded-*`` headers when a request has both. What a proxy passes on may be what
    its client wrote: a malformed ``Forwarded`` counts not at all, and an ``X-Forwarded-*``
    value that is not an address, a scheme, a host or a port as it should be is ignored.
    """
    hop = _nearest_untrusted(_hops(scope["headers"]), trusted)
    if hop is None:
        return
    if hop.client is not None:
        scope["client"] = hop.client
    if hop.scheme is not None:
        scope["scheme"] = hop.scheme
    if hop.host is not None or hop.port is not None:
        server = scope.get("server") or (None, None)
        host = hop.host[0] if hop.host is not None else server[0]
        port = hop.port or (hop.host[1] if hop.host is not None else None)
        scope["server"] = (host, port or (443 if scope["scheme"] == "https" else 80))


# The fields apply_forwarded reads: a request with none of them is left as it is.
FORWARDING_FIELDS = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                               b"x-forwarded-port"})


def _hops(headers: list[tuple[bytes, bytes]]) -> list[_Hop]:
    forwarded: list[bytes] = []
    legacy: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if name == b"forwarded":
            forwarded.append(value)
        elif name.startswith(b"x-forwarded-"):
            legacy.setdefault(name, []).append(value)
    if forwarded:
        return _forwarded_hops(b",".join(forwarded).decode("latin-1")) or []
    return _legacy_hops(legacy) if legacy else []


def _nearest_untrusted(hops: list[_Hop], trusted: TrustedProxies) -> _Hop | None:
    """Of a chain of hops, the right-most whose client is not a trusted proxy (or is not
    known): everything to its left was written by parties nobody vouched for."""
    for hop in reversed(hops):
        if hop.client is None or not trusted.trusts(hop.client[0]):
            return hop
    return hops[0] if hops else None  # every hop trusted: the left-most is as far as the chain goes


def _forwarded_hops(text: str) -> list[_Hop] | None:
    """RFC 7239's hops, or ``None`` for a malformed header: bad syntax, a parameter twice
    in an element, or a ``for``, ``proto`` or ``host`` that is not one."""
    if _FORWARDED.fullmatch(text) is None:
        return None
    elements: list[dict[str, str]] = [{}]
    for comma, name, value in _FORWARDED_PIECE.findall(text):
        if comma:
            elements.append({})
            continue
        if name.lower() in elements[-1]:
            return None
        elements[-1][name.lower()] = re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
    hops = []
    for element in filter(None, elements):  # empty list elements are allowed
        hop = _forwarded_hop(element)
        if hop is None:
            return None
        hops.append(hop)
    return hops


def _forwarded_hop(element: dict[str, str]) -> _Hop | None:
    hop = _Hop()
    node, proto, host = element.get("for"), element.get("proto"), element.get("host")
    if node is not None:
        hop.client = _address(node)
        if hop.client is None and _HIDDEN_NODE.fullmatch(node) is None:
            return None
    if proto is not None:
        hop.scheme = _SCHEMES.get(proto.lower())
        if hop.scheme is None:
            return None
    if host is not None:
        hop.host = _host(host)
        if hop.host is None:
            return None
    return hop


def _legacy_hops(headers: dict[bytes, list[bytes]]) -> list[_Hop]:
    """``X-Forwarded-For`` lists the chain; ``-Proto``, ``-Host`` and ``-Port`` go with its
    hops from the right when they list as many, else their right-most value (the one the
    nearest proxy wrote) stands for every hop. A value that is not one is left out."""

    def listed(name: bytes) -> list[str]:
        return [item.strip() for item in b",".join(headers.get(name, [])).decode("latin-1").split(",") if item.strip()]

    clients = listed(b"x-forwarded-for")
    hops = [_Hop(client=_address(client)) for client in clients] or [_Hop()]
    for name, field, parse in ((b"x-forwarded-proto", "scheme", lambda value: _SCHEMES.get(value.lower())),
                               (b"x-forwarded-host", "host", _host), (b"x-forwarded-port", "port", _port)):
        values = listed(name)
        if not values:
            continue
        pairs = zip(hops, values) if len(values) == len(hops) else [(hop, values[-1]) for hop in hops]
        for hop, value in pairs:
            setattr(hop, field, parse(value))
    return hops


def _split_port(text: str) -> tuple[str, str | None] | None:
    """``host`` and ``port`` of ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; a bare
    IPv6 address is all host. ``None`` for a bracket left open."""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        return host, rest[1:] if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, None


def _port(text: str) -> int | None:
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def _address(text: str) -> tuple[str, int] | None:
    """An IP address and its port (0 when none is given), or ``None`` if ``text`` is not one."""
    parts = _split_port(text)
    if parts is None:
        return None
    host, port_text = parts
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    port = 0 if port_text is None else _port(port_text)
    return None if port is None else (str(address), port)


def _host(text: str) -> tuple[str, int | None] | None:
    """A host (a name, an IPv4 address or a bracketed IPv6 one) and its port, as the Host
    field has them; ``None`` for anything else (spaces, ``/``, ``@``, a bad port)."""
    parts = _split_port(text)
    if parts is None:
        return None
    name, port_text = parts
    if text.startswith("["):
        try:
            name = str(ipaddress.IPv6Address(name))
        except ValueError:
            return None
    elif _HOST_NAME.fullmatch(name) is None:
        return None
    port = None if port_text is None else _port(port_text)
    return None if port_text is not None and port is None else (name, port)
