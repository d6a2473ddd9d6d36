"""The UDP side of HTTP/3: one socket, QUIC packets routed to their connections.

A ``QuicEndpoint`` reads datagrams off a non-blocking UDP socket registered with the app
loop's selector (the loop the apps run on: the reactor's own on the asyncio reactor, the
companion loop under any other, as TCP connections are carried there), routes each by its
destination connection ID, and starts a connection for a client's first Initial packet.
Each connection (``http3.HTTP3Connection``) is given its datagrams and timers and asks to
transmit; the endpoint sends what all of them have to send once per loop turn, so the
responses of many app tasks go out together.

Why not Twisted's UDP: every QUIC connection's state lives with its streams and their app
tasks on the app loop, so the socket is read there too. Under another reactor a Twisted
UDP port would put each datagram a thread hop away from its connection; here there is
none, on any reactor. Why not asyncio's datagram transport: it reads one datagram per
loop turn; this reads up to ``READ_BATCH`` and answers them together.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicHeader, QuicPacketType, encode_quic_retry, encode_quic_version_negotiation, pull_quic_header
from aioquic.quic.retry import QuicRetryTokenHandler
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger

from .flow import Drain
from .http3 import FlowControlledQuic, HTTP3Connection, UDPAddress

if TYPE_CHECKING:
    from aioquic.quic.connection import QuicConnection
    from aioquic.tls import SessionTicket

    from .config import Config
    from .context import ServerContext

log = Logger(namespace="hello_asgi.quic")

# aioquic logs three INFO lines per connection (version, ALPN, close) through stdlib logging,
# which hello-asgi's log takes in: a line per connection is the access log's job. Left as it
# is where the user set a level for it.
if logging.getLogger("quic").level == logging.NOTSET:
    logging.getLogger("quic").setLevel(logging.WARNING)

READ_BATCH = 64  # datagrams read per wake-up before the answers go out
SMALLEST_INITIAL = 1200  # a client's Initial datagram is at least this large (RFC 9000 section 14.1)
SOCKET_BUFFER = 4 * 1024 * 1024  # asked of the kernel for each direction (it may grant less)
MAX_TICKETS = 10_000  # session tickets kept for 0-RTT, oldest dropped first
CID_LENGTH = 8


def server_configuration(config: Config, certfile: str, keyfile: str, password: str | None = None) -> QuicConfiguration:
    """aioquic's settings for a server of ``config``: ALPN ``h3`` alone, TLS 1.3 with the
    same certificate and key as the TLS listener, the limits of docs/http3.rst."""
    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=["h3"],
        connection_id_length=CID_LENGTH,
        idle_timeout=config.h3_idle_timeout,
        max_datagram_size=config.h3_max_datagram_size,
        max_stream_data=config.h3_stream_window,
        # Cover every stream's window, so one stream that is not read cannot stall the rest.
        max_data=config.h3_stream_window * config.h3_max_concurrent_streams,
    )
    configuration.load_cert_chain(certfile, keyfile, password)
    return configuration


def udp_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to ``host``:``port``; with ``reuse_port``, one of a
    group the kernel spreads datagrams over by their addresses (``--workers``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Tickets:
    """TLS session tickets for resumption and 0-RTT, each usable once, the newest
    ``MAX_TICKETS`` kept (a ticket taken is gone: a replay within this process fails)."""

    def __init__(self) -> None:
        self._tickets: OrderedDict[bytes, SessionTicket] = OrderedDict()

    def add(self, ticket: SessionTicket) -> None:
        self._tickets[ticket.ticket] = ticket
        if len(self._tickets) > MAX_TICKETS:
            self._tickets.popitem(last=False)

    def take(self, label: bytes) -> SessionTicket | None:
        return self._tickets.pop(label, None)


class QuicEndpoint:
    """One UDP socket serving HTTP/3 for ``context``'s app."""

    def __init__(self, context: ServerContext, sock: socket.socket, configuration: QuicConfiguration,
                 retry: bool = False, early_data: bool = False) -> None:
        self.context = context
        self.config = context.config
        self.configuration = configuration
        self._loop = context.loop
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.address = (IPv6Address if sock.family == socket.AF_INET6 else IPv4Address)("UDP", host, port)
        self._routes: dict[bytes, HTTP3Connection] = {}
        self.connections: set[HTTP3Connection] = set()  # every connection whose packets are still routed
        self._serving: set[HTTP3Connection] = set()  # ... of them, those not closed: what shutdown waits for
        self._timers: dict[HTTP3Connection, tuple[float, asyncio.TimerHandle]] = {}
        self._dirty: dict[HTTP3Connection, None] = {}
        self._flush_scheduled = False
        self._retry = QuicRetryTokenHandler() if retry else None
        self._tickets = _Tickets() if early_data else None
        self._closed_all = Drain(self._loop)  # drained() waits on it, the last connection's end releases it
        self.accepting = True
        self._server_pem: str | None = None
        self._loop.add_reader(sock.fileno(), self._read)

    # Datagrams in.

    def _read(self) -> None:
        sock = self._sock
        now = self._loop.time()
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error reported on the socket: nothing to read
                break
            self._datagram(data, addr, now)
        self._flush()

    def _datagram(self, data: bytes, addr: UDPAddress, now: float) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            return  # not QUIC, or cut short: dropped, as cheaply as it can be
        connection = self._routes.get(header.destination_cid)
        if connection is not None:
            connection.receive(data, addr, now)
            return
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_INITIAL:
            return  # a stray or spoofed packet; an Initial this small could amplify an attack
        if header.version not in self.configuration.supported_versions:
            if header.version:  # never answer a Version Negotiation packet with another
                self._send(encode_quic_version_negotiation(
                    source_cid=header.destination_cid, destination_cid=header.source_cid,
                    supported_versions=self.configuration.supported_versions), addr)
            return
        if not self.accepting or len(self.connections) >= self.config.max_connections:
            return  # the client will retry, and find another worker or this one less busy
        self._accept(header, data, addr, now)

    def _accept(self, header: QuicHeader, data: bytes, addr: UDPAddress, now: float) -> None:
        original_cid, retry_cid = header.destination_cid, None
        if self._retry is not None:
            if not header.token:
                assert header.version is not None  # an Initial's long header names one (_datagram checked it)
                source_cid = os.urandom(CID_LENGTH)
                token = self._retry.create_token(address=addr, original_destination_connection_id=header.destination_cid,
                                                 retry_source_connection_id=source_cid, now=now)
                self._send(encode_quic_retry(version=header.version, source_cid=source_cid,
                                             destination_cid=header.source_cid,
                                             original_destination_cid=header.destination_cid,
                                             retry_token=token), addr)
                return
            try:
                original_cid = self._retry.validate_token(address=addr, destination_cid=header.destination_cid,
                                                          token=header.token, now=now)
            except ValueError:
                return  # a forged or stale token
            retry_cid = header.destination_cid
        tickets = self._tickets
        quic = FlowControlledQuic(
            configuration=self.configuration,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
            session_ticket_fetcher=tickets.take if tickets is not None else None,
            session_ticket_handler=tickets.add if tickets is not None else None,
        )
        for limit, most in ((quic._local_max_streams_bidi, self.config.h3_max_concurrent_streams),  # noqa: SLF001
                            (quic._local_max_streams_uni, 16)):  # noqa: SLF001 (control, QPACK's two, and room)
            limit.value = limit.sent = most
        peer = (IPv6Address if ":" in addr[0] else IPv4Address)("UDP", addr[0], addr[1])
        connection = HTTP3Connection(self, quic, self.context, peer, self.address)
        self.connections.add(connection)
        self._serving.add(connection)
        self._routes[header.destination_cid] = connection
        self._routes[quic.host_cid] = connection
        connection.receive(data, addr, now)

    # What connections ask of the endpoint.

    def route(self, cid: bytes, connection: HTTP3Connection) -> None:
        self._routes[cid] = connection

    def unroute(self, cid: bytes) -> None:
        self._routes.pop(cid, None)

    def closed(self, connection: HTTP3Connection) -> None:
        """``connection`` has no app work left (it closed, or was closed)."""
        self._serving.discard(connection)
        if not self._serving:
            self._closed_all.release()

    def forget(self, connection: HTTP3Connection) -> None:
        """``connection`` is over: its packets are no longer routed."""
        self.closed(connection)
        self.connections.discard(connection)
        self._dirty.pop(connection, None)
        for cid in [cid for cid, routed in self._routes.items() if routed is connection]:
            del self._routes[cid]
        timer = self._timers.pop(connection, None)
        if timer is not None:
            timer[1].cancel()

    def wants_transmit(self, connection: HTTP3Connection) -> None:
        """Send what ``connection`` has to send, at the end of this loop turn."""
        self._dirty[connection] = None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def tls_extension(self, quic: QuicConnection) -> dict[str, Any]:
        """The ASGI ``tls`` extension of a QUIC connection: always TLS 1.3, no client certificate."""
        if self._server_pem is None:
            from cryptography.hazmat.primitives.serialization import Encoding

            certificate = self.configuration.certificate
            self._server_pem = certificate.public_bytes(Encoding.PEM).decode("ascii") if certificate else ""
        key_schedule = getattr(quic.tls, "key_schedule", None)
        suite = getattr(key_schedule, "cipher_suite", None)
        return {
            "server_cert": self._server_pem or None,
            "client_cert_chain": [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": 0x0304,
            "cipher_suite": int(suite) if suite is not None else None,
        }

    # Datagrams out.

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        for connection in dirty:
            self._transmit(connection)

    def _transmit(self, connection: HTTP3Connection) -> None:
        loop = self._loop
        for data, addr in connection.quic.datagrams_to_send(now=loop.time()):
            self._send(data, addr)
        at = connection.quic.get_timer()
        timer = self._timers.get(connection)
        if timer is not None and timer[0] == at:
            return
        if timer is not None:
            timer[1].cancel()
        if at is None:
            self._timers.pop(connection, None)
        else:
            self._timers[connection] = (at, loop.call_at(at, self._timer, connection))

    def _timer(self, connection: HTTP3Connection) -> None:
        self._timers.pop(connection, None)
        if connection in self.connections:
            connection.timer(self._loop.time())
            self._transmit(connection)
            self._dirty.pop(connection, None)

    def _send(self, data: bytes, addr: UDPAddress) -> None:
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass  # the kernel's buffer is full: lost, as on the path; QUIC's recovery resends it
        except OSError as error:
            log.debug("UDP send to {addr} failed: {error}", addr=addr, error=error)

    # Shutdown.

    def reload(self, configuration: QuicConfiguration) -> None:
        """New connections take ``configuration`` (a renewed certificate); open ones keep theirs."""
        self.configuration = configuration
        self._server_pem = None

    def shutdown(self) -> None:
        """Take no new connections; send every connection GOAWAY, each closing once its
        requests are done."""
        self.accepting = False
        for connection in list(self._serving):
            connection.shutdown()

    async def drained(self) -> None:
        """Return once no connection has a request in flight."""
        if self._serving:
            await self._closed_all.waiter()

    def abort(self) -> list[asyncio.Task[None]]:
        """Close every connection now and cancel its app calls; return their tasks."""
        tasks = []
        for connection in list(self._serving):
            tasks += connection.cancel_apps()
            connection.abort_connection()
        return tasks

    def stop(self) -> None:
        """Send what is still to go (the CONNECTION_CLOSE frames), and close the socket."""
        self.accepting = False
        for connection in list(self._serving):
            connection.abort_connection()
        self._flush()
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self.connections.clear()
        self._routes.clear()
