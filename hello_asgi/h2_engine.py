"""h2's connection and HPACK coders, minus work the server repeats for nothing on each request.

- HPACK: a client's requests and the server's responses repeat their header blocks (the
  Date changes once a second). Encoding or decoding a block that leaves the dynamic table
  as it was gives the same result every time while the table stays unchanged, so such
  results are kept per connection, and dropped whenever the table changes.
- h2 builds ``repr(frame)`` for a trace call that logs nowhere, for every frame received.
"""

from __future__ import annotations

from typing import Any

import h2.connection
import h2.exceptions
import hpack
from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError, StreamIDTooLowError
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hpack.table import HeaderTable
from hyperframe.frame import Frame, RstStreamFrame

# Kept per connection: this many blocks, each of at most this many bytes.
CACHED_BLOCKS = 16
CACHED_BLOCK_SIZE = 1024


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

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self.header_table
        if table.resized:  # a table size update is due: not a block to repeat
            return super().encode(headers, huffman)  # type: ignore[no-any-return]
        key = (tuple(headers), huffman)
        before = table.changes
        encoded = self._cache.get(key, before)
        if encoded is None:
            encoded = super().encode(key[0], huffman)
            if len(encoded) <= CACHED_BLOCK_SIZE:  # kept only while the table stays as it is
                self._cache.put(key, before, encoded)
        return encoded  # type: ignore[no-any-return]


class CachingDecoder(hpack.Decoder):
    """h2's HPACK decoder, reusing the headers of a block it has just decoded without change,
    and raising ``CompressionError`` for a block it cannot decode."""

    _cache: _BlockCache

    def decode(self, data: bytes, raw: bool = False) -> list[tuple[Any, Any]]:
        valid_for = (self.header_table.changes, self.max_header_list_size, self.max_allowed_table_size)
        key = (data, raw)
        headers = self._cache.get(key, valid_for)
        if headers is None:
            headers = self._decode(data, raw)
            if len(data) <= CACHED_BLOCK_SIZE:  # kept only while the table stays as it is
                self._cache.put(key, valid_for, headers)
        return headers  # type: ignore[no-any-return]

    def _decode(self, data: bytes, raw: bool) -> list[tuple[Any, Any]]:
        try:
            return super().decode(data, raw)  # type: ignore[no-any-return]
        except OversizedHeaderListError:
            raise  # h2 makes this a DenialOfServiceError: ENHANCE_YOUR_CALM
        except (HPACKError, IndexError, TypeError, UnicodeDecodeError) as error:
            raise CompressionError(f"a header block HPACK cannot decode: {error}") from error


def _with_cache(coder: hpack.Encoder | hpack.Decoder, cls: type) -> None:
    """Make an h2 coder a caching one, its table, state and limits kept."""
    coder.header_table.__class__ = _CountedTable
    coder.__class__ = cls
    coder._cache = _BlockCache()  # type: ignore[union-attr]


class Connection(h2.connection.H2Connection):
    """h2's connection with caching HPACK coders, and no ``repr`` of each frame received."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        _with_cache(self.encoder, CachingEncoder)
        _with_cache(self.decoder, CachingDecoder)

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
            return error._events  # type: ignore[no-any-return]
        except StreamIDTooLowError as error:
            return self._stream_id_too_low(error)
        self._prepare_for_sending(frames)
        return events  # type: ignore[no-any-return]

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
