"""The simple-frame reader (``hello_asgi.websocket_frames``) against autobahn's own.

The reader may only ever take frames autobahn would have taken, and give the same
messages for them; everything else must reach autobahn untouched. The differential test
feeds the same bytes, cut at the same points, to a connection with the reader and to one
without it, and demands the same messages, the same bytes written back (pongs, close
frames with their codes and reasons), the same state and the same ping bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from hello_asgi import websocket
from hello_asgi.config import Config
from hello_asgi.factory import ASGIServerFactory
from hello_asgi.stream import RequestHead
from hello_asgi.websocket import HTTP11Handshake, WebSocketConnection
from hello_asgi.websocket_frames import simple_messages

from . import fuzz

MASK = b"\x0f\xf0\x55\xaa"


def client_frame(payload: bytes, first: int = 0x81, mask: bytes = MASK, length: bytes | None = None) -> bytes:
    """A masked client frame; ``length`` overrides the length field's bytes."""
    if length is None:
        size = len(payload)
        length = bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big")
    return bytes([first]) + length + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


class SimpleMessagesTests(unittest.TestCase):
    def test_reads_whole_text_and_binary_frames(self) -> None:
        data = client_frame("héllo".encode()) + client_frame(b"\x00\xff", 0x82) + client_frame(b"")
        self.assertEqual(simple_messages(data, 1000), (["héllo", b"\x00\xff", ""], len(data)))

    def test_reads_sixteen_bit_lengths(self) -> None:
        payload = bytes(range(256)) * 3
        self.assertEqual(simple_messages(client_frame(payload, 0x82), 1000), ([payload], 8 + 768))

    def test_stops_at_a_frame_that_is_not_whole(self) -> None:
        whole = client_frame(b"one")
        data = whole + client_frame(b"two")[:-1]
        self.assertEqual(simple_messages(data, 1000), (["one"], len(whole)))

    def test_leaves_every_other_shape_to_autobahn(self) -> None:
        whole = client_frame(b"first")
        others = {
            "not final": client_frame(b"x", 0x01),
            "continuation": client_frame(b"x", 0x80),
            "RSV1 (compressed)": client_frame(b"x", 0xC1),
            "ping": client_frame(b"x", 0x89),
            "close": client_frame(b"\x03\xe8", 0x88),
            "unmasked": b"\x81\x01x",
            "64-bit length": client_frame(b"x", length=bytes([0x80 | 127]) + (1).to_bytes(8, "big")),
            "16-bit length under 126": client_frame(b"x", length=bytes([0x80 | 126]) + (1).to_bytes(2, "big")),
            "over the limit": client_frame(b"y" * 101),
            "invalid UTF-8": client_frame(b"\xed\xa0\x80"),  # a surrogate
        }
        for name, frame in others.items():
            self.assertEqual(simple_messages(whole + frame + whole, 100), (["first"], len(whole)), name)


@contextmanager
def accepted_connection(**settings: Any) -> Iterator[tuple[WebSocketConnection, StringTransport]]:
    """A WebSocket connection, accepted, over a StringTransport, with a ping outstanding;
    closed, and its app's task cancelled, on the way out."""
    config = Config(access_log=None, ws_per_message_deflate=False, ws_max_queue=10_000, ws_ping_interval=0,
                    **settings)
    factory = ASGIServerFactory(fuzz.websocket_echo, config)
    request = RequestHead(b"GET", b"/", b"/", b"", [(b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")])
    connection = WebSocketConnection(factory.context, request, "1.1", HTTP11Handshake(request, factory.context))
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 80),
                                peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
    connection.makeConnection(transport)
    try:
        connection.accept(None, [])
        connection._sendAutoPing()  # so that a data frame's effect on the ping timeout shows
        transport.clear()
        yield connection, transport
    finally:
        connection.connectionLost(Failure(ConnectionDone()))
        connection.session.task.cancel()  # type: ignore[union-attr]


def received(connection: WebSocketConnection) -> list[Any]:
    """The messages queued for the app, as text or bytes (the first is the connect)."""
    return [message.get("text", message.get("bytes")) for message in connection.session._queue]


def outcome(chunks: list[bytes], **settings: Any) -> tuple[Any, ...]:
    """What a connection makes of ``chunks``: messages, bytes written, state, ping pending."""
    with accepted_connection(**settings) as (connection, transport):
        for chunk in chunks:
            connection.dataReceived(chunk)
        return received(connection), transport.value(), connection.state, connection.autoPingTimeoutCall is None


@st.composite
def simple_frame(draw: Any) -> bytes:
    binary = draw(st.booleans())
    payload = draw(st.binary(max_size=300) if binary else st.text(max_size=100).map(str.encode))
    return client_frame(payload, 0x82 if binary else 0x81, draw(st.binary(min_size=4, max_size=4)))


@st.composite
def cut_frames(draw: Any) -> list[bytes]:
    frames = draw(st.lists(simple_frame() | simple_frame() | fuzz.websocket_frame(), min_size=1, max_size=6))
    if draw(st.booleans()):
        return frames  # a read per frame: each starts where autobahn left off
    data = b"".join(frames)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    return [data[start:stop] for start, stop in zip([0, *cuts], [*cuts, len(data)])]


class DifferentialTests(unittest.TestCase):
    def test_same_results_as_autobahn_alone(self) -> None:
        read_here = 0

        def counted(data: bytes, limit: int) -> tuple[list[str | bytes], int]:
            nonlocal read_here
            messages, taken = simple_messages(data, limit)
            read_here += len(messages)
            return messages, taken

        @fuzz.SETTINGS
        @given(cut_frames(), st.sampled_from([{}, {"ws_max_frame_size": 20, "ws_max_message_size": 40},
                                              {"ws_max_frame_size": 300, "ws_max_message_size": 12}]))
        def check(chunks: list[bytes], limits: dict[str, int]) -> None:
            with mock.patch.object(websocket, "simple_messages", lambda data, limit: ([], 0)):
                alone = outcome(chunks, **limits)
            with mock.patch.object(websocket, "simple_messages", counted):
                self.assertEqual(outcome(chunks, **limits), alone, chunks)

        check()
        self.assertGreaterEqual(read_here, fuzz.EXAMPLES // 2, "the simple reader took part")

    def test_autobahn_sees_the_rest_of_a_read(self) -> None:
        """A read that starts simple and goes on with a ping: the echo of the ping comes
        from autobahn, after the messages the reader took."""
        with accepted_connection() as (connection, transport):
            connection.dataReceived(client_frame(b"a") + client_frame(b"b", 0x82) + client_frame(b"hi", 0x89))
            self.assertEqual(received(connection)[1:], ["a", b"b"])
            self.assertEqual(transport.value(), b"\x8a\x02hi")
