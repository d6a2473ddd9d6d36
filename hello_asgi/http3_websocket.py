"""WebSockets over HTTP/3 (RFC 9220): an extended CONNECT request stream as the byte
transport ``websocket.py`` runs over, as it runs over an HTTP/2 stream (RFC 8441) or TCP.

Loaded with the first such request. The stream is also the WebSocket's ``HandshakeWriter``:
the handshake is answered with a ``200`` HEADERS frame, or denied with a whole response.
QUIC's flow control stands in for TCP's: what the WebSocket reads is let in again (the
stream's window raised) only while it reads, and its ``send()`` waits while the client has
not taken what was written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aioquic.h3.connection import ErrorCode
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IPushProducer, ITransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from .stream import Headers

if TYPE_CHECKING:
    from collections.abc import Iterable

    from twisted.internet.address import IPv4Address, IPv6Address

    from .http3 import HTTP3Connection
    from .websocket import WebSocketConnection


@implementer(ITransport)
class WebSocketStream:
    """One extended CONNECT stream carrying a WebSocket."""

    disconnecting = False
    protocol: WebSocketConnection

    def __init__(self, connection: HTTP3Connection, stream_id: int) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self._read_paused = False
        self.unread = 0  # bytes received while the WebSocket was not reading
        self._producer: IPushProducer | None = None
        self._producer_paused = False
        self._ended = False

    # HandshakeWriter.

    def accept(self, transport: ITransport, headers: Headers) -> None:  # transport: this stream
        self._send_headers(200, headers, end=False)

    def deny(self, transport: ITransport, status: int, headers: Headers, body: bytes) -> None:
        self._send_headers(status, headers, end=not body)
        if body:
            self.write(body, end=True)
        self._ended = True

    def _send_headers(self, status: int, headers: Headers, end: bool) -> None:
        connection = self._connection
        if connection.send_headers(self.stream_id, connection.response_fields(status, headers), end):
            self._ended = self._ended or end

    # Events from the connection.

    def data_received(self, data: bytes) -> None:
        if self._read_paused:
            self.unread += len(data)
        self.protocol.dataReceived(data)

    def writable(self) -> None:
        """The client took what was written: let the WebSocket's ``send()`` go on."""
        if self._producer is not None and self._producer_paused:
            self._producer_paused = False
            self._producer.resumeProducing()

    def lost(self, reason: Failure) -> None:
        if self._connection.websockets.pop(self.stream_id, None) is not None:
            self.protocol.connectionLost(reason)
            self._connection.websocket_ended()

    # ITransport, as much of it as the WebSocket uses.

    def write(self, data: bytes, end: bool = False) -> None:
        connection = self._connection
        if self._ended or self.stream_id not in connection.websockets:
            return
        if not connection.send_data(self.stream_id, data, end):
            return
        if self._producer is not None and not self._producer_paused and connection.sending(self.stream_id):
            self._producer_paused = True
            self._producer.pauseProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self._ended:
            self.write(b"", end=True)
            self._ended = True
        self._connection.context.loop.call_soon(self.lost, Failure(connectionDone.value))

    def abortConnection(self) -> None:
        if self.stream_id in self._connection.websockets:
            self._connection.reset(self.stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            self.lost(Failure(ConnectionAborted()))

    def getPeer(self) -> IPv4Address | IPv6Address:
        return self._connection.peer

    def getHost(self) -> IPv4Address | IPv6Address:
        return self._connection.host

    def pauseProducing(self) -> None:
        self._read_paused = True

    def resumeProducing(self) -> None:
        self._read_paused = False
        self.unread = 0
        self._connection.read_again(self.stream_id)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None
