"""h2's connection as the server runs it (``server_engine``: its settings), and h2's
connection and HPACK coders minus work the server repeats for nothing on each request.

- HPACK: a client's requests and the server's responses repeat their header blocks (the
  Date changes once a second). Encoding or decoding a block that leaves the dynamic table
  as it was gives the same result every time while the table stays unchanged, so such
  results are kept per connection, and dropped whenever the table changes.
- h2 builds ``repr(frame)`` for a trace call that logs nowhere, for every frame received.
- DATA, the frame a bulk transfer is made of (12,000 of them in 200 MB): h2 parses each
  into a hyperframe object, runs two state machines and copies the payload about five
  times on its way out. Unpadded DATA on an open stream is framed and read here with the
  same checks and the same flow-control accounting, through h2's own window managers and
  length tracking, and held to h2's results by a differential test
  (``tests/test_h2_engine.py``). Everything else still goes through h2.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.connection
import h2.exceptions
import h2.settings
import hpack
from h2.connection import ConnectionInputs, ConnectionState
from h2.errors import ErrorCodes
from h2.events import DataReceived
from h2.exceptions import ProtocolError, StreamClosedError, StreamIDTooLowError
from h2.stream import StreamInputs, StreamState
from hpack import HeaderTuple
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hpack.table import HeaderTable
from hyperframe.frame import Frame, RstStreamFrame

if TYPE_CHECKING:
    from .config import Config

# Kept per connection: this many blocks, each of at most this many bytes.
CACHED_BLOCKS = 16
CACHED_BLOCK_SIZE = 1024

_FRAME_HEADER = struct.Struct(">HBBBL")  # a 24-bit length (16 + 8 bits), type, flags, stream id
_DATA, _END_STREAM, _PADDED = 0x0, 0x1, 0x8
_OPEN_CONNECTION = (ConnectionState.SERVER_OPEN, ConnectionState.CLIENT_OPEN)
_RECEIVING = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)  # where h2 takes DATA and stays
# Where h2 sends DATA and stays, as globals (an enum member reached through its class is a
# Python-level lookup, 80 ns, on every frame).
_SERVER_OPEN, _OPEN, _HALF_CLOSED_REMOTE = ConnectionState.SERVER_OPEN, StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE


class CompressionError(h2.exceptions.ProtocolError):
    """A header block HPACK cannot decode: the connection error is COMPRESSION_ERROR (RFC
    9113 section 4.3), where h2 would say PROTOCOL_ERROR."""

    error_code = ErrorCodes.COMPRESSION_ERROR


class _CountedTable(HeaderTable):
    """hpack's dynamic table, counting its changes: a cached block holds for one count."""

    changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.changes += 1
        # mypy reads a property on its class as the getter, without the property's fset
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class _BlockCache:
    """Results keyed by block, valid while the table's change count and ``context`` hold."""

    __slots__ = ("_results", "_valid_for")

    def __init__(self) -> None:
        self._results: dict[Any, Any] = {}
        self._valid_for: Any = None

    def get(self, key: Any, valid_for: Any) -> Any:
        if valid_for != self._valid_for:
            self._results.clear()
            self._valid_for = valid_for
            return None
        return self._results.get(key)

    def put(self, key: Any, valid_for: Any, result: Any) -> None:
        if valid_for == self._valid_for:
            if len(self._results) >= CACHED_BLOCKS:
                self._results.clear()
            self._results[key] = result


class CachingEncoder(hpack.Encoder):
    """h2's HPACK encoder, reusing the block for headers it has just encoded without change.

    The key is the header tuples as given: the server sends plain 2-tuples, never hpack's
    ``NeverIndexedHeaderTuple``, whose indexing the key would not tell apart."""

    _cache: _BlockCache
    header_table: _CountedTable  # made one by _with_cache

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self.header_table
        if table.resized:  # a table size update is due: not a block to repeat
            return super().encode(headers, huffman)
        key = (tuple(headers), huffman)
        before = table.changes
        encoded = self._cache.get(key, before)
        if encoded is None:
            encoded = super().encode(key[0], huffman)
            if len(encoded) <= CACHED_BLOCK_SIZE:  # kept only while the table stays as it is
                self._cache.put(key, before, encoded)
        return encoded


class CachingDecoder(hpack.Decoder):
    """h2's HPACK decoder, reusing the headers of a block it has just decoded without change,
    and raising ``CompressionError`` for a block it cannot decode."""

    _cache: _BlockCache
    header_table: _CountedTable  # made one by _with_cache

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        valid_for = (self.header_table.changes, self.max_header_list_size, self.max_allowed_table_size)
        key = (data, raw)
        headers = self._cache.get(key, valid_for)
        if headers is None:
            headers = self._decode(data, raw)
            if len(data) <= CACHED_BLOCK_SIZE:  # kept only while the table stays as it is
                self._cache.put(key, valid_for, headers)
        return headers

    def _decode(self, data: bytes, raw: bool) -> Iterable[HeaderTuple]:
        try:
            return super().decode(data, raw)
        except OversizedHeaderListError:
            raise  # h2 makes this a DenialOfServiceError: ENHANCE_YOUR_CALM
        except (HPACKError, IndexError, TypeError, UnicodeDecodeError) as error:
            raise CompressionError(f"a header block HPACK cannot decode: {error}") from error


def _with_cache(coder: hpack.Encoder | hpack.Decoder, cls: type[CachingEncoder | CachingDecoder]) -> None:
    """Make an h2 coder a caching one, its table, state and limits kept."""
    coder.header_table.__class__ = _CountedTable
    coder.__class__ = cls
    cast("CachingEncoder | CachingDecoder", coder)._cache = _BlockCache()  # a caching one now


class H2Engine(h2.connection.H2Connection):
    """h2's connection with caching HPACK coders, no ``repr`` of each frame received, and
    unpadded DATA frames written and read without hyperframe."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        _with_cache(self.encoder, CachingEncoder)
        _with_cache(self.decoder, CachingDecoder)
        # Output in order: h2's own buffer of frames, moved here before each DATA frame
        # written here, then that frame's header and its payload as given (not copied).
        self._pieces: list[Any] = []
        self.queued = 0  # payload bytes in _pieces: http2 writes them out now once there are many
        self._held = b""  # the start of a frame still arriving, kept from h2 while h2 holds nothing

    # DATA out.

    def send_data(self, stream_id: int, data: Any, end_stream: bool = False, pad_length: Any = None) -> None:
        """h2's ``send_data``, its checks and accounting in its order, for unpadded frames;
        the payload is kept as given until ``data_to_send`` (copied first if it could change)."""
        size = len(data)
        if pad_length is not None or (size > 0 and size > self.local_flow_control_window(stream_id)) \
                or size > self.max_outbound_frame_size:
            super().send_data(stream_id, data, end_stream, pad_length)  # h2 pads, or raises its error
            return
        self.send_fitting_data(stream_id, data, end_stream)

    def send_fitting_data(self, stream_id: int, data: Any, end_stream: bool) -> None:
        """``send_data`` of a payload its caller has already fitted to the stream's and the
        connection's windows and to the frame size (as ``http2`` does, once per chunk, not
        once per frame)."""
        size = len(data)
        # SEND_DATA leaves an open connection, and an open or half-closed (remote) stream, as
        # they were: h2's machines are asked only otherwise (to raise, or to move). Each
        # asking hashes two enums in Python, four times a frame.
        if self.state_machine.state is not _SERVER_OPEN:
            self.state_machine.process_input(ConnectionInputs.SEND_DATA)
        stream = self.streams[stream_id]
        machine = stream.state_machine
        state = machine.state
        if state is not _HALF_CLOSED_REMOTE and state is not _OPEN:
            machine.process_input(StreamInputs.SEND_DATA)
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
        self._queue_frames(stream, data, size, self.max_outbound_frame_size, end_stream)

    def send_in_frames(self, stream_id: int, data: Any, size: int, end_stream: bool) -> None:
        """``send_fitting_data`` of ``data[:size]``, which the caller has fitted to the
        windows, cut into frames of the peer's largest size. A 64 KiB chunk is four frames:
        the machines are asked, the windows moved and the payload checked once for them
        all, and every full frame shares one header."""
        frame_size = self.max_outbound_frame_size
        stream = self.streams[stream_id]
        state = stream.state_machine.state
        if self.state_machine.state is not _SERVER_OPEN or (state is not _HALF_CLOSED_REMOTE and state is not _OPEN):
            view = memoryview(data)
            # h2's machines decide, frame by frame (no data: one empty frame)
            for start in range(0, size or 1, frame_size):
                stop = min(start + frame_size, size)
                self.send_fitting_data(stream_id, view[start:stop], end_stream and stop == size)
            return
        if end_stream:
            stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
        self._queue_frames(stream, data, size, frame_size, end_stream)

    def _queue_frames(self, stream: Any, data: Any, size: int, frame_size: int, end_stream: bool) -> None:
        """Move both windows by ``size`` and queue ``data[:size]`` as DATA frames of at most
        ``frame_size``, their payloads views of ``data`` (not copies), once h2's machines
        have taken the frames."""
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        if type(data) is not bytes and not (type(data) is memoryview and data.readonly):
            data = bytes(data)  # a bytearray or a writable view: the caller may change it
        pieces = self._pieces
        if self._data_to_send:
            pieces.append(self._data_to_send)
            self._data_to_send = bytearray()
        stream_id = stream.stream_id & 0x7FFFFFFF
        last = (size - 1) // frame_size * frame_size if size > frame_size else 0  # where the last frame starts
        if last:
            view = memoryview(data)
            full = _FRAME_HEADER.pack(frame_size >> 8, frame_size & 0xFF, _DATA, 0, stream_id)
            for start in range(0, last, frame_size):
                pieces += (full, view[start:start + frame_size])
            data = view[last:size]
        elif size < len(data):
            data = memoryview(data)[:size]
        rest = size - last
        pieces.append(_FRAME_HEADER.pack(rest >> 8, rest & 0xFF, _DATA, _END_STREAM if end_stream else 0, stream_id))
        if rest:
            pieces.append(data)
            self.queued += size

    def data_to_send(self, amount: int | None = None) -> bytes:
        if not self._pieces:
            return super().data_to_send(amount)
        data = b"".join(self.pieces_to_send())
        if amount is not None:
            self._data_to_send += data[amount:]
            data = data[:amount]
        return data

    def pieces_to_send(self) -> list[Any]:
        """All that ``data_to_send`` would give, as the pieces it is held in (frames of h2's,
        DATA frame headers, payloads as the app gave them), for a gathering write."""
        pieces = self._pieces
        if self._data_to_send:
            pieces.append(bytes(self._data_to_send))  # bytes, as h2 gives them (Twisted writes only bytes)
            self._data_to_send = bytearray()
        self._pieces = []
        self.queued = 0
        return pieces

    def clear_outbound_data_buffer(self) -> None:
        self._pieces.clear()
        self.queued = 0
        super().clear_outbound_data_buffer()

    # DATA in.

    def receive_data(self, data: Any) -> list[Any]:
        """h2's ``receive_data``, with unpadded DATA frames that do not end an open stream
        read here; the frames between them go to h2 in order, as they came."""
        held, self._held = self._held, b""
        data = held + data if held else bytes(data)  # payloads are bytes, as h2 gives them
        first = self._owed_to_h2(data)
        if first == len(data):
            return super().receive_data(data)
        events: list[Any] = super().receive_data(data[:first]) if first else []
        if first:
            data = data[first:]
        handed, position = self._read_frames(data, events)
        if handed < position:
            events += super().receive_data(data[handed:position] if handed or position < len(data) else data)
        self._held = data[position:]  # no more than a frame header, or the start of a DATA frame
        return events

    def _owed_to_h2(self, data: bytes) -> int:
        """How much of ``data`` h2 must have first: the rest of the connection preface, or
        of a frame it holds the start of (all of ``data`` if that does not end in it)."""
        buffer = self.incoming_buffer
        if buffer._preamble_len:
            return min(buffer._preamble_len, len(data))
        held = len(buffer._data)
        if not held:
            return 0
        header = bytes(buffer._data[:9]) + data[:max(0, 9 - held)]
        if len(header) < 9:
            return len(data)
        return min(9 + int.from_bytes(header[:3], "big") - held, len(data))

    def _read_frames(self, data: bytes, events: list[Any]) -> tuple[int, int]:
        """Read the DATA frames of ``data`` that can be, handing h2 the frames before each.
        Returns how far h2 was handed the frames, and how far they go (the rest is kept:
        the start of a DATA frame, so the next read starts at a frame)."""
        size = len(data)
        position = handed = 0
        unpack = _FRAME_HEADER.unpack_from
        while size - position >= 9:
            high, low, kind, flags, stream_id = unpack(data, position)
            length = high << 8 | low
            end = position + 9 + length
            stream_id &= 0x7FFFFFFF
            if kind != _DATA or flags & (_PADDED | _END_STREAM) or length > self.max_inbound_frame_size \
                    or not stream_id:
                if end > size:
                    return handed, size  # h2 holds the rest
                position = end
                continue
            handed = self._hand(data, handed, position, events)
            if end > size:
                return handed, size if self.incoming_buffer._headers_buffer else position
            if self._takes_data(stream_id):
                events.append(self._received_data(stream_id, data[position + 9:end], length))
                handed = end
            position = end
        return handed, position

    def _hand(self, data: bytes, start: int, stop: int, events: list[Any]) -> int:
        """Give h2 the frames from ``start`` to ``stop``; where h2's part now ends."""
        if start < stop:
            events += super().receive_data(data[start:stop])
        return stop

    def _takes_data(self, stream_id: int) -> bool:
        """Whether h2 would take a DATA frame on ``stream_id`` now and raise nothing but flow
        control's or the body length's errors."""
        if self.state_machine.state not in _OPEN_CONNECTION or self.incoming_buffer._headers_buffer:
            return False
        stream = self.streams.get(stream_id)
        return stream is not None and stream.state_machine.state in _RECEIVING and \
            bool(stream.state_machine.headers_received)

    def _received_data(self, stream_id: int, payload: bytes, length: int) -> DataReceived:
        """What h2's ``_receive_data_frame`` does for such a frame, in its order."""
        try:
            self._inbound_flow_control_window_manager.window_consumed(length)
            stream = self.streams[stream_id]
            stream._inbound_window_manager.window_consumed(length)
            stream._track_content_length(length, False)
        except ProtocolError as error:
            self._terminate_connection(error.error_code)
            raise
        event = DataReceived(stream_id=stream_id)
        event.data = payload
        event.flow_controlled_length = length
        return event

    def _receive_frame(self, frame: Frame) -> list[Any]:
        """h2's own, without building ``repr(frame)`` for its trace call."""
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as error:
            if not self._stream_is_closed_by_reset(error.stream_id):
                raise
            reset = RstStreamFrame(error.stream_id)
            reset.error_code = error.error_code
            self._prepare_for_sending([reset])
            return error._events
        except StreamIDTooLowError as error:
            return self._stream_id_too_low(error)
        self._prepare_for_sending(frames)
        return events

    def _stream_id_too_low(self, error: StreamIDTooLowError) -> list[Any]:
        """A frame for a stream already gone: a stream error if it was reset, else a
        connection error, as h2 decides it."""
        if self._stream_is_closed_by_reset(error.stream_id):
            reset = RstStreamFrame(error.stream_id)
            reset.error_code = ErrorCodes.STREAM_CLOSED
            self._prepare_for_sending([reset])
            return []
        if self._stream_is_closed_by_end(error.stream_id):
            raise StreamClosedError(error.stream_id) from error
        raise error


class _ServerSettings(h2.settings.Settings):
    """The server's settings, as h2 sees them. h2 answers a stream past the advertised
    MAX_CONCURRENT_STREAMS with a GOAWAY that ends every stream of the connection (and
    counts from its own default, 100, before the client has our SETTINGS, when RFC 9113
    section 6.5.2 sets no limit yet). Here h2 takes them all and ``HTTP2Connection``
    refuses the streams past the limit one by one, with RST_STREAM REFUSED_STREAM, which a
    client may retry (section 5.1.2)."""

    @property  # type: ignore[misc]  # read-only on purpose: h2 only reads it
    def max_concurrent_streams(self) -> int:
        return 2**31 - 1


def server_engine(config: Config) -> H2Engine:
    """The engine of one server connection: this server's settings, and none of h2's header
    checks, which are done already. Outbound headers are checked once
    (``stream.checked_headers``), then lower-cased, trimmed and stripped of
    connection-specific fields by ``h2_headers.response_block``; inbound ones are checked
    in one pass (``h2_headers.request_problem``), their cookies joined by
    ``h2_headers.split_request``."""
    engine = H2Engine(
        h2.config.H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False,
                                  normalize_outbound_headers=False, validate_inbound_headers=False,
                                  normalize_inbound_headers=False)
    )
    engine.local_settings = _ServerSettings(
        client=False,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: config.h2_max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.max_head_size,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: config.h2_initial_window_size,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: config.h2_max_frame_size,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: int(config.websocket),  # RFC 8441
        },
    )
    return engine
