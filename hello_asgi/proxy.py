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
    """What one proxy said about the connection it received."""

    client: str | None = None  # the address it received the connection from (may carry a port)
    proto: str | None = None
    host: str | None = None
    port: int | None = None


def apply_forwarded(scope: Scope, trusted: TrustedProxies) -> None:
    """Rewrite ``client``, ``scheme`` and ``server`` of an ``http`` scope from its forwarding
    headers (a ``websocket`` scope is made from one).

    Called only for connections from a trusted proxy. ``Forwarded`` wins over the
    ``X-Forwarded-*`` headers when a request has both.
    """
    forwarded: list[bytes] = []
    legacy: dict[bytes, list[bytes]] = {}
    for name, value in scope["headers"]:
        if name == b"forwarded":
            forwarded.append(value)
        elif name.startswith(b"x-forwarded-"):
            legacy.setdefault(name, []).append(value)
    hops = _forwarded_hops(forwarded) if forwarded else _legacy_hops(legacy) if legacy else []
    if not hops:
        return
    chosen = hops[0]  # every hop trusted: the left-most is as far as the chain goes
    for hop in reversed(hops):
        if not trusted.trusts(_host_of(hop.client)):
            chosen = hop
            break
    if chosen.client is not None:
        host = _host_of(chosen.client)
        if host is not None:
            scope["client"] = (host, _port_of(chosen.client) or 0)
    if chosen.proto is not None:
        scope["scheme"] = "https" if chosen.proto.lower() in ("https", "wss") else "http"
    if chosen.host is not None or chosen.port is not None:
        server = scope.get("server") or (None, None)
        host = _host_of(chosen.host) if chosen.host is not None else server[0]
        port = chosen.port or (_port_of(chosen.host) if chosen.host else None)
        if port is None:
            port = 443 if scope["scheme"] == "https" else 80
        scope["server"] = (host, port)


def _forwarded_hops(values: list[bytes]) -> list[_Hop]:
    """RFC 7239: comma-separated elements, each of ``;``-separated ``name=value`` pairs."""
    hops = []
    for element in b",".join(values).decode("latin-1").split(","):
        hop = _Hop()
        for pair in element.split(";"):
            name, _, value = pair.partition("=")
            value = value.strip().strip('"')
            name = name.strip().lower()
            if name == "for":
                hop.client = value
            elif name == "proto":
                hop.proto = value
            elif name == "host":
                hop.host = value
        hops.append(hop)
    return hops


def _legacy_hops(headers: dict[bytes, list[bytes]]) -> list[_Hop]:
    """``X-Forwarded-For`` lists the chain; ``-Proto``, ``-Host`` and ``-Port`` go with its
    hops from the right when they list as many, else their right-most value (the one the
    nearest proxy wrote) stands for every hop."""

    def listed(name: bytes) -> list[str]:
        return [item.strip() for item in b",".join(headers.get(name, [])).decode("latin-1").split(",") if item.strip()]

    clients = listed(b"x-forwarded-for")
    hops = [_Hop(client=client) for client in clients] or [_Hop()]
    for name, field in ((b"x-forwarded-proto", "proto"), (b"x-forwarded-host", "host"), (b"x-forwarded-port", "port")):
        values = listed(name)
        if not values:
            continue
        pairs = zip(hops, values) if len(values) == len(hops) else [(hop, values[-1]) for hop in hops]
        for hop, value in pairs:
            if field == "port":
                hop.port = int(value) if value.isdigit() and 0 < int(value) < 65536 else None
            else:
                setattr(hop, field, value)
    return hops


def _host_of(address: str | None) -> str | None:
    """The host part of ``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:5678``, ``::1`` or ``name:80``."""
    if address is None or address.lower() in ("unknown", ""):
        return None
    if address.startswith("["):
        return address[1:].partition("]")[0]
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address


def _port_of(address: str) -> int | None:
    if address.startswith("["):
        port = address.partition("]")[2].lstrip(":")
    elif address.count(":") == 1:
        port = address.partition(":")[2]
    else:
        return None
    return int(port) if port.isdigit() and 0 < int(port) < 65536 else None
