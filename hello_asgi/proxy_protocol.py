"""The HAProxy PROXY protocol, v1 and v2, read strictly in front of a listener.

A load balancer that passes TCP through (HAProxy ``send-proxy``/``send-proxy-v2``, AWS
NLB, ...) opens each connection with a header naming the client's and the server's
addresses. ``PROXYProtocolWrapper`` reads it, then serves the connection with those
addresses as ``getPeer()`` and ``getHost()``, so the scope's ``client`` and ``server`` are
the real ones. A connection whose header is missing, malformed or too long is closed
without a word: a listener that expects the header must not take one from anyone else.

Twisted has a reader too (``twisted.protocols.haproxy``); this one is stricter — it checks
the addresses, reads a header that arrives in pieces, and writes IPv6 addresses in their
canonical form — and its wrapper is not private.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IDelayedCall, ITransport
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from .transport import Address, IConnectionTransport

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 line the spec allows, CRLF included
V2_MAX = 16 + 1024  # the fixed part, the addresses and room for a load balancer's TLVs

Addresses = tuple[Address, Address] | None  # (source, destination), or None: keep the connection's own


class InvalidHeader(ValueError):
    """The bytes are not a PROXY protocol header."""


def parse(data: bytes) -> tuple[Addresses, int] | None:
    """The addresses in the header at the start of ``data`` and the header's length, or
    ``None`` if more bytes are needed; ``InvalidHeader`` if it cannot be one."""
    if data[:1] == b"\r":
        return _parse_v2(data)
    if data[:1] == b"P":
        return _parse_v1(data)
    raise InvalidHeader("no PROXY protocol header")


def _parse_v1(data: bytes) -> tuple[Addresses, int] | None:
    if not b"PROXY "[: len(data)] == data[:6]:
        raise InvalidHeader("not a PROXY v1 header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise InvalidHeader("PROXY v1 header too long")
        return None
    fields = data[:end].decode("ascii", "replace").split(" ")
    if fields[1:2] == ["UNKNOWN"]:
        return None, end + 2
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise InvalidHeader("malformed PROXY v1 header")
    version = 4 if fields[1] == "TCP4" else 6
    source = _address(version, fields[2], _port(fields[4]))
    destination = _address(version, fields[3], _port(fields[5]))
    return (source, destination), end + 2


def _port(text: str) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise InvalidHeader(f"bad port {text!r} in PROXY header")
    return int(text)


def _address(version: int, host: str, port: int) -> IPv4Address | IPv6Address:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidHeader(f"bad address {host!r} in PROXY header") from None
    if address.version != version:
        raise InvalidHeader(f"address {host!r} is not IPv{version}")
    return (IPv4Address if version == 4 else IPv6Address)("TCP", str(address), port)


def _parse_v2(data: bytes) -> tuple[Addresses, int] | None:
    if V2_SIGNATURE[: len(data)] != data[:12]:
        raise InvalidHeader("not a PROXY v2 header")
    if len(data) < 16:
        return None
    version_command, family, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if version_command >> 4 != 2 or version_command & 0xF > 1:
        raise InvalidHeader("unknown PROXY v2 version or command")
    if 16 + length > V2_MAX:
        raise InvalidHeader("PROXY v2 header too long")
    if len(data) < 16 + length:
        return None
    if version_command & 0xF == 0 or family == 0x00:  # LOCAL (a health check), or UNSPEC
        return None, 16 + length
    served = _V2_FAMILIES.get(family)
    if served is None or length < served[0]:  # (TLVs may follow the addresses, never replace them)
        raise InvalidHeader(f"unsupported PROXY v2 address family {family:#04x}")
    size, read = served
    return read(data[16 : 16 + size]), 16 + length


def _v2_tcp4(body: bytes) -> tuple[IPv4Address, IPv4Address]:
    source_host, destination_host, source_port, destination_port = struct.unpack("!4s4sHH", body)
    return (IPv4Address("TCP", str(ipaddress.IPv4Address(source_host)), source_port),
            IPv4Address("TCP", str(ipaddress.IPv4Address(destination_host)), destination_port))


def _v2_tcp6(body: bytes) -> tuple[IPv6Address, IPv6Address]:
    source_host, destination_host, source_port, destination_port = struct.unpack("!16s16sHH", body)
    return (IPv6Address("TCP", str(ipaddress.IPv6Address(source_host)), source_port),
            IPv6Address("TCP", str(ipaddress.IPv6Address(destination_host)), destination_port))


def _v2_unix(body: bytes) -> tuple[UNIXAddress, UNIXAddress]:
    return (UNIXAddress(os.fsdecode(body[:108].rstrip(b"\x00")) or None),
            UNIXAddress(os.fsdecode(body[108:216].rstrip(b"\x00")) or None))


# The v2 address families served (TCP over IPv4, over IPv6, and UNIX stream sockets): the
# bytes of their addresses, and their reader.
_V2_FAMILIES: dict[int, tuple[int, Callable[[bytes], Addresses]]] = {
    0x11: (12, _v2_tcp4),
    0x21: (36, _v2_tcp6),
    0x31: (216, _v2_unix),
}


class PROXYProtocolWrapper(ProtocolWrapper):
    """Reads the header, then passes the connection on with the addresses it named."""

    factory: PROXYProtocolFactory
    transport: IConnectionTransport  # set by makeConnection, before any other call
    _timer: IDelayedCall  # the header's deadline, set by makeConnection

    def __init__(self, factory: PROXYProtocolFactory, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self._buffer: bytes | None = b""  # None once the header is read
        self._addresses: Addresses = None

    def makeConnection(self, transport: ITransport) -> None:
        # The wrapped protocol is connected once the header is read (``ProtocolWrapper``
        # connects it at once), so that it sees the addresses from the start.
        self.connected = 1
        # A listener's: TCP's, UNIX's or transport.SocketTransport, each IConnectionTransport.
        self.transport = connection = cast(IConnectionTransport, transport)
        self.factory.registerProtocol(self)
        self._timer = self.factory.reactor.callLater(self.factory.timeout, connection.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        if self._buffer is None:
            self.wrappedProtocol.dataReceived(data)
            return
        data = self._buffer + data
        try:
            parsed = parse(data)
        except InvalidHeader:
            self._buffer = b""
            self.transport.abortConnection()
            return
        if parsed is None:
            self._buffer = data
            return
        self._addresses, length = parsed
        self._buffer = None
        self._stop_timer()
        super().makeConnection(self.transport)
        if len(data) > length:
            self.wrappedProtocol.dataReceived(data[length:])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._buffer is None:
            super().connectionLost(reason)
        else:
            self._stop_timer()
            self.factory.unregisterProtocol(self)  # the wrapped protocol never started

    def _stop_timer(self) -> None:
        if self._timer.active():
            self._timer.cancel()

    def getPeer(self) -> IAddress:
        return self._addresses[0] if self._addresses else self.transport.getPeer()

    def getHost(self) -> IAddress:
        return self._addresses[1] if self._addresses else self.transport.getHost()


if TYPE_CHECKING:  # generic to mypy; at run time the plain class, whichever Twisted release is installed
    _WrappingFactory = WrappingFactory[PROXYProtocolWrapper]
else:
    _WrappingFactory = WrappingFactory


class PROXYProtocolFactory(_WrappingFactory):
    """Wraps a listener's factory so that its connections start with a PROXY header, which
    must arrive within ``timeout`` seconds."""

    protocol = PROXYProtocolWrapper

    def __init__(self, wrappedFactory: Any, reactor: Any, timeout: float) -> None:
        super().__init__(wrappedFactory)
        self.reactor = reactor
        self.timeout = timeout
