"""WebSockets over HTTP/3 (RFC 9220): an extended CONNECT request stream as the byte
transport ``websocket.py`` runs over, as it runs over an HTTP/2 stream (RFC 8441) or TCP.

Loaded with the first such request. The stream is also the WebSocket's ``HandshakeWriter``:
the handshake is answered with a ``200`` HEADERS frame, or denied with a whole response.
QUIC's flow control stands in for TCP's: what the WebSocket reads is let in again (the
stream's window raised) only while it reads, and its ``send()`` waits while the client has
not taken what was written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aioquic.h3.connection import ErrorCode
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from .stream import Headers
from .stream_transport import StreamTransport

if TYPE_CHECKING:
    from twisted.internet.address import IPv4Address, IPv6Address

    from .context import ServerContext


class StreamHost(Protocol):
    """What a WebSocket stream asks of its HTTP/3 connection (``http3.HTTP3Connection``),
    named here so that this module need not import that one, which loads this."""

    context: ServerContext
    peer: IPv4Address | IPv6Address
    host: IPv4Address | IPv6Address
    websockets: dict[int, WebSocketStream]

    def response_fields(self, status: int, headers: Headers) -> Headers: ...
    def send_headers(self, stream_id: int, block: Headers, end: bool) -> bool: ...
    def send_data(self, stream_id: int, data: bytes, end: bool) -> bool: ...
    def sending(self, stream_id: int) -> bool: ...
    def reset(self, stream_id: int, code: int) -> None: ...
    def read_again(self, stream_id: int) -> None: ...
    def websocket_ended(self) -> None: ...


@implementer(ITransport)
class WebSocketStream(StreamTransport):
    """One extended CONNECT stream carrying a WebSocket."""

    def __init__(self, connection: StreamHost, stream_id: int) -> None:
        super().__init__()
        self._connection = connection
        self.stream_id = stream_id
        self.unread = 0  # bytes received while the WebSocket was not reading

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
        if connection.sending(self.stream_id):  # the client has not taken what was written
            self._hold_producer()

    def _end_later(self) -> None:
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
