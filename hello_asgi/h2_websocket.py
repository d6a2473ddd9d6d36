"""A WebSocket on an HTTP/2 stream (RFC 8441): the stream as the byte transport
``websocket.py`` runs over, as it runs over TCP.

It keeps only what a transport adds to the stream's record (``h2_stream.H2Stream``): the
producer it pauses, and whether reading is paused. Everything else (writing, window
updates, the end) goes through the connection's ``StreamOwner`` interface, as a request
stream's does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from h2.errors import ErrorCodes
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from .h2_stream import CLOSED
from .stream_transport import StreamTransport

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IReactorTime

    from .h2_stream import H2Stream, StreamOwner
    from .stream import Headers


@implementer(ITransport)
class H2WebSocket(StreamTransport):
    """An extended CONNECT stream as the byte transport its WebSocket runs over.

    Also the WebSocket's ``HandshakeWriter``: the handshake is answered with a ``200``
    HEADERS frame, or denied with a whole response on the stream. Flow control stands in
    for TCP's: data is acknowledged as the WebSocket reads it, and the WebSocket is paused
    as a producer while its stream may not write (its data waits for the client's window,
    or the client is not reading the connection).
    """

    def __init__(self, owner: StreamOwner, stream: H2Stream, clock: IReactorTime) -> None:
        super().__init__()
        self._owner = owner
        self._stream = stream
        self._clock = clock

    # HandshakeWriter.

    def accept(self, transport: ITransport, headers: Headers) -> None:  # transport: this stream
        self._owner.send_response(self._stream, 200, headers, b"", False)

    def deny(self, transport: ITransport, status: int, headers: Headers, body: bytes) -> None:
        self._owner.send_response(self._stream, status, headers, body, True)
        self._ended = True

    # Events from the connection.

    def data_received(self, data: bytes, flow_controlled_length: int) -> None:
        stream = self._stream
        stream.unacknowledged += flow_controlled_length
        if not self._read_paused:
            self._owner.acknowledge(stream)
        self.protocol.dataReceived(data)

    def closed(self, reason: Failure) -> None:
        """The stream ended (``StreamOwner.close_stream``): so does the WebSocket."""
        self.protocol.connectionLost(reason)

    # ITransport, as much of it as the WebSocket uses.

    def write(self, data: bytes, end: bool = False) -> None:
        stream = self._stream
        if self._ended or stream.state is CLOSED:
            return
        self._owner.send_data(stream, data, end)
        drain = stream.drain
        if drain is not None and drain.paused:
            self._hold_producer()

    def _end_later(self) -> None:
        self._clock.callLater(0, self._owner.close_stream, self._stream, Failure(connectionDone.value))

    def abortConnection(self) -> None:
        self._owner.reset(self._stream, ErrorCodes.CANCEL, Failure(ConnectionAborted()))

    def getPeer(self) -> IAddress:
        return self._owner.transport.getPeer()

    def getHost(self) -> IAddress:
        return self._owner.transport.getHost()

    def pauseProducing(self) -> None:
        self._read_paused = True

    def resumeProducing(self) -> None:
        self._read_paused = False
        self._owner.acknowledge(self._stream)
