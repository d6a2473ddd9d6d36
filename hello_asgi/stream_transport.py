"""A request stream of a multiplexed connection as the byte transport a WebSocket runs
over: the part an HTTP/2 stream (RFC 8441, ``h2_websocket.py``) and an HTTP/3 one (RFC
9220, ``http3_websocket.py``) share.

The WebSocket registers itself as this transport's producer; a subclass holds it
(``_hold_producer``) while its stream may not write, and ``writable()`` lets it go on.
``loseConnection`` ends the stream (END_STREAM, or QUIC's FIN) and then, on a later loop
turn, the WebSocket: not inside the WebSocket's own call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from twisted.internet.interfaces import IPushProducer

    from .websocket import WebSocketConnection


class StreamTransport:
    """What both protocols' WebSocket streams do alike; ``write`` and ``_end_later`` are theirs."""

    disconnecting = False
    protocol: WebSocketConnection

    def __init__(self) -> None:
        self._read_paused = False
        self._producer: IPushProducer | None = None
        self._producer_paused = False
        self._ended = False  # the stream's end is sent or queued: nothing more is written

    def write(self, data: bytes, end: bool = False) -> None:
        raise NotImplementedError

    def _end_later(self) -> None:
        """End the WebSocket on a later turn of the loop."""
        raise NotImplementedError

    def _hold_producer(self) -> None:
        """The stream may not write now: the WebSocket's ``send()`` waits."""
        if self._producer is not None and not self._producer_paused:
            self._producer_paused = True
            self._producer.pauseProducing()

    def writable(self) -> None:
        """The stream may write again: let the WebSocket's ``send()`` go on."""
        if self._producer is not None and self._producer_paused:
            self._producer_paused = False
            self._producer.resumeProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self._ended:
            self.write(b"", end=True)
            self._ended = True
        self._end_later()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None
