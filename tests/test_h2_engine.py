"""The caching HPACK coders against hpack's own, and h2's connection without its frame reprs."""

from __future__ import annotations

import asyncio
from typing import Any

import hpack
from hyperframe.frame import Frame
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from hello_asgi.h2_engine import CachingDecoder, CachingEncoder, H2Engine, _with_cache
from hello_asgi.testing import asyncio_test, serve

from .support import hello_app

RESPONSE = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"server", b"hello-asgi")]
DATES = [b"Tue, 01 Dec 2026 21:00:0%d GMT" % second for second in range(3)]
# One step: encode a block (with one of the dates, or a header too large to index), or
# change the table size as a peer's SETTINGS does.
steps = st.one_of(
    st.tuples(st.just("encode"), st.sampled_from([[], *([(b"date", date)] for date in DATES), [(b"x-big", b"b" * 5000)]]),
              st.booleans()),
    st.tuples(st.just("resize"), st.sampled_from([0, 64, 4096]), st.just(False)),
)


def caching(coder: hpack.Encoder | hpack.Decoder) -> hpack.Encoder | hpack.Decoder:
    _with_cache(coder, CachingEncoder if isinstance(coder, hpack.Encoder) else CachingDecoder)
    return coder


def decoded(decoder: hpack.Decoder, block: bytes) -> list[tuple[bytes, bytes]] | None:
    """The headers, or ``None`` for a block the decoder refuses."""
    try:
        return decoder.decode(block, raw=True)  # type: ignore[no-any-return]
    except Exception:
        return None


class CoderTests(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(steps, max_size=30))
    def test_the_caching_coders_give_what_hpacks_give(self, script: list[tuple[str, object, bool]]) -> None:
        plain_encoder, cached_encoder = hpack.Encoder(), caching(hpack.Encoder())
        plain_decoder, cached_decoder = hpack.Decoder(), caching(hpack.Decoder())
        for action, value, huffman in script:
            if action == "resize":
                for coder in (plain_encoder, cached_encoder):
                    coder.header_table_size = value
                continue
            headers = RESPONSE + value  # type: ignore[operator]
            block = plain_encoder.encode(headers, huffman)
            self.assertEqual(cached_encoder.encode(headers, huffman), block)
            plain, cached = decoded(plain_decoder, block), decoded(cached_decoder, block)
            self.assertEqual(cached, plain)
            if plain is None:
                break  # hpack's own bug: a size set twice loses its update (both coders alike)

    def test_a_repeated_block_is_not_encoded_or_decoded_again(self) -> None:
        encoder, decoder = caching(hpack.Encoder()), caching(hpack.Decoder())
        headers = [*RESPONSE, (b"date", DATES[0])]
        first = encoder.encode(headers)  # indexes the fields
        second = encoder.encode(headers)  # from the table: leaves it unchanged
        decoder.decode(first, raw=True)
        expected = decoder.decode(second, raw=True)
        counts = {"encode": 0, "decode": 0}

        def counting(kind: str, original: object) -> object:
            def count(*args: object) -> object:
                counts[kind] += 1
                return original(*args)  # type: ignore[operator]
            return count

        self.patch(hpack.Encoder, "add", counting("encode", hpack.Encoder.add))
        self.patch(hpack.Decoder, "_decode_indexed", counting("decode", hpack.Decoder._decode_indexed))
        self.assertEqual(encoder.encode(headers), second)
        self.assertEqual(decoder.decode(second, raw=True), expected)
        self.assertEqual(counts, {"encode": 0, "decode": 0})
        encoder.encode([*RESPONSE, (b"date", DATES[1])])  # a new Date: the table changes
        self.assertEqual(encoder.encode(headers), encoder.encode(headers))
        self.assertGreater(counts["encode"], 0)


class FrameReprTests(unittest.TestCase):
    @asyncio_test
    async def test_frames_received_are_not_formatted(self) -> None:
        reprs: list[str] = []
        original = Frame.__repr__

        def counted(frame: Frame) -> str:
            reprs.append(type(frame).__name__)
            return original(frame)

        self.patch(Frame, "__repr__", counted)
        server = await serve(self, hello_app)
        loop = asyncio.get_running_loop()
        out, err, code = await getProcessOutputAndValue(
            "curl", ["-sS", "--http2-prior-knowledge", server.url + "/a"]).asFuture(loop)
        self.assertEqual((out, err, code), (b"hello /a ", b"", 0))
        self.assertEqual(reprs, [])


# The DATA fast paths, held to h2 itself: the same client bytes, cut into the same reads, and
# the same server calls, given to h2's connection and to ours, must give the same events,
# the same errors, the same bytes out and the same windows and stream states.

_CONFIG = dict(client_side=False, header_encoding=None, validate_outbound_headers=False,
               normalize_outbound_headers=False, validate_inbound_headers=False, normalize_inbound_headers=False)
_REQUEST = [(b":method", b"POST"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"x")]
_STREAMS = [0, 1, 3, 5, 7]  # 0 is the connection; 5 is opened only by a script that says so; 7 never
_SIZES = [0, 1, 100, 16384, 16385, 65535]

_data_frames = st.tuples(st.just("data"), st.sampled_from([1, 1, 1, 3, 3, *_STREAMS]),
                        st.sampled_from([0, 1, 100, 100, 16384, 16384, 16385, 65535]),
                        st.sampled_from([0, 0, 0, 0x1, 0x8, 0x9, 0x2, 0x20]), st.integers(0, 20))
# Two requests open (one with a Content-Length), then mostly DATA, among frames of every other kind.
client_frames = st.tuples(
    st.sampled_from([None, 100, 20000]), st.booleans(),
    st.lists(st.one_of(
        _data_frames, _data_frames, _data_frames, _data_frames, _data_frames, _data_frames,
        st.tuples(st.just("headers"), st.sampled_from([1, 3, 5]), st.sampled_from([None, 0, 100, 20000]),
                  st.booleans(), st.booleans()),
        st.tuples(st.just("window"), st.sampled_from([0, 1, 3]), st.sampled_from([1, 65535, 2**31 - 1])),
        st.tuples(st.just("reset"), st.sampled_from([1, 3]), st.just(0)),
        st.tuples(st.just("settings"), st.sampled_from([16384, 65536]), st.sampled_from([0, 65535, 1 << 20])),
        st.tuples(st.just("ping"), st.just(0)),
        st.tuples(st.just("goaway"), st.just(0)),
    ), max_size=14),
).map(lambda opening: [("headers", 1, opening[0], False, opening[1]), ("headers", 3, None, False, False),
                       *opening[2]])
more_frames = st.lists(_data_frames, max_size=6)
server_calls = st.lists(st.one_of(
    st.tuples(st.just("send"), st.sampled_from([1, 3, 5, 7]), st.sampled_from(_SIZES + [70000]), st.booleans(),
              st.sampled_from(["bytes", "bytearray", "view", "pad"])),
    st.tuples(st.just("frames"), st.sampled_from([1, 3, 5, 7]), st.sampled_from([1, 16384, 16385, 65535, 70000]),
              st.sampled_from([1, 100, 16384, 65536, 70000]), st.booleans(), st.sampled_from(["bytes", "bytearray"])),
    st.tuples(st.just("respond"), st.sampled_from([1, 3, 5]), st.booleans()),
    st.tuples(st.just("end"), st.sampled_from([1, 3])),
    st.tuples(st.just("ack"), st.sampled_from([1, 3]), st.sampled_from([1, 100, 65535])),
    st.tuples(st.just("grow"), st.sampled_from([0, 1, 3]), st.sampled_from([1, 1 << 20])),
), max_size=8)


def client_bytes(script: list[tuple[Any, ...]]) -> bytes:
    """The client's side of a connection: preface, SETTINGS, then the script's frames."""
    from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame,
                                  RstStreamFrame, SettingsFrame, WindowUpdateFrame)

    encoder = hpack.Encoder()
    out = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", SettingsFrame(0).serialize()]
    for step in script:
        kind = step[0]
        if kind == "data":
            _, stream_id, size, flags, pad = step
            frame = DataFrame(stream_id) if stream_id else None
            if frame is None:  # hyperframe will not make one on stream 0: by hand
                out.append(size.to_bytes(3, "big") + bytes([0, flags]) + b"\0\0\0\0" + b"d" * size)
                continue
            frame.data = b"d" * size
            frame.flags = {name for bit, name in ((0x1, "END_STREAM"), (0x8, "PADDED")) if flags & bit}
            frame.pad_length = pad if flags & 0x8 else 0
            raw = bytearray(frame.serialize())
            raw[4] |= flags & ~0x9  # flags DATA does not define, which must be ignored
            out.append(bytes(raw))
        elif kind == "headers":
            _, stream_id, length, end, split = step
            fields = _REQUEST + ([(b"content-length", b"%d" % length)] if length is not None else [])
            block = encoder.encode(fields)
            frame = HeadersFrame(stream_id, block[:3] if split else block)
            frame.flags = {"END_STREAM"} if end else set()
            if not split:
                frame.flags.add("END_HEADERS")
                out.append(frame.serialize())
                continue
            rest = ContinuationFrame(stream_id, block[3:])
            rest.flags = {"END_HEADERS"}
            out += [frame.serialize(), rest.serialize()]
        elif kind == "window":
            out.append(WindowUpdateFrame(step[1], window_increment=step[2]).serialize())
        elif kind == "reset":
            out.append(RstStreamFrame(step[1], error_code=8).serialize())
        elif kind == "settings":
            settings_frame = SettingsFrame(0)
            settings_frame.settings = {0x5: step[1], **({0x4: step[2]} if step[2] else {})}
            out.append(settings_frame.serialize())
        elif kind == "ping":
            out.append(PingFrame(0, opaque_data=b"12345678").serialize())
        else:
            out.append(GoAwayFrame(0, last_stream_id=0).serialize())
    return b"".join(out)


def described(events: list[Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(type(event).__name__, sorted((key, repr(value)) for key, value in vars(event).items()))
            for event in events]


def state(connection: Any) -> tuple[Any, ...]:
    """Windows, stream states and lengths: what the accounting leaves behind."""
    streams = {stream_id: (stream.state_machine.state, stream.inbound_flow_control_window,
                           stream.outbound_flow_control_window, stream._actual_content_length)
               for stream_id, stream in connection.streams.items()}
    return (connection.state_machine.state, connection.inbound_flow_control_window,
            connection.outbound_flow_control_window, streams)


def outcome(connection: Any, call: Any) -> tuple[Any, ...]:
    """What one call did: its events (or its error), the bytes to send, and the state."""
    try:
        result: Any = described(call() or [])
    except Exception as error:
        result = (type(error).__name__, str(error))
    return result, connection.data_to_send(), state(connection)


def in_frames_by_h2(connection: Any, stream_id: int, data: bytes, end: bool) -> None:
    """What ``H2Engine.send_in_frames`` stands for: h2's ``send_data`` of each frame."""
    frame_size = connection.max_outbound_frame_size
    for start in range(0, len(data), frame_size):
        stop = start + frame_size
        connection.send_data(stream_id, data[start:stop], end_stream=end and stop >= len(data))


def server_call(connection: Any, step: tuple[Any, ...]) -> Any:
    kind = step[0]
    if kind == "send":
        _, stream_id, size, end, form = step
        payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        data = {"bytes": payload, "bytearray": bytearray(payload), "view": memoryview(payload),
                "pad": payload}[form]
        return lambda: connection.send_data(stream_id, data, end_stream=end, pad_length=3 if form == "pad" else None)
    if kind == "frames":  # what of a chunk the windows (and a cap) take, as http2 sends it
        _, stream_id, size, cap, end, form = step
        payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        data = payload if form == "bytes" else bytearray(payload)

        def in_frames() -> None:
            fitted = min(size, cap, connection.local_flow_control_window(stream_id))
            if fitted <= 0:
                return
            if isinstance(connection, H2Engine):
                connection.send_in_frames(stream_id, data, fitted, end and fitted == size)
            else:
                in_frames_by_h2(connection, stream_id, payload[:fitted], end and fitted == size)
        return in_frames
    if kind == "respond":
        return lambda: connection.send_headers(step[1], [(b":status", b"200")], end_stream=step[2])
    if kind == "end":
        return lambda: connection.end_stream(step[1])
    if kind == "ack":
        return lambda: connection.acknowledge_received_data(step[2], step[1])
    return lambda: connection.increment_flow_control_window(step[2], step[1] or None)


class DataFastPathTests(unittest.TestCase):
    def pair(self) -> tuple[Any, Any]:
        import h2.config
        import h2.connection

        from hello_asgi.h2_engine import H2Engine

        plain = h2.connection.H2Connection(h2.config.H2Configuration(**_CONFIG))
        fast = H2Engine(h2.config.H2Configuration(**_CONFIG))
        for connection in (plain, fast):
            connection.initiate_connection()
        self.assertEqual(fast.data_to_send(), plain.data_to_send())
        return plain, fast

    @settings(max_examples=400, deadline=None)
    @given(client_frames, st.lists(st.integers(1, 200000), max_size=6), server_calls, more_frames)
    def test_same_results_as_h2_alone(self, script: list[Any], cuts: list[int], calls: list[Any],
                                      more: list[Any]) -> None:
        plain, fast = self.pair()
        data = client_bytes(script + more)
        middle = len(client_bytes(script))  # the server's calls come after the first script
        cuts = sorted({cut % (len(data) + 1) for cut in cuts} | {middle})
        for start, stop in zip([0, *cuts], [*cuts, len(data)]):
            chunk = data[start:stop]
            expected = outcome(plain, lambda: plain.receive_data(chunk))
            self.assertEqual(outcome(fast, lambda: fast.receive_data(chunk)), expected)
            if isinstance(expected[0], tuple):
                return  # a connection error: h2 takes nothing more
            if stop == middle:
                for step in calls:
                    expected = outcome(plain, server_call(plain, step))
                    self.assertEqual(outcome(fast, server_call(fast, step)), expected, step)

    def test_a_chunk_in_frames_is_h2s_frames(self) -> None:
        """``send_in_frames`` of chunks of one frame, several frames and a part frame, from
        bytes and a bytearray, ending the stream or not: the same bytes, windows and states
        as h2's ``send_data`` frame by frame (hypothesis reaches these calls only now and then)."""
        payload = bytes(range(256)) * 300  # 76,800 bytes
        for size, end, form in [(100, False, bytes), (16384, False, bytes), (40000, False, bytes),
                                (40000, True, bytearray), (49152, True, bytes), (65535, False, bytearray)]:
            plain, fast = self.pair()
            script = client_bytes([("headers", 1, None, True, False)])  # half-closed (remote): the fast path
            for connection in (plain, fast):
                connection.receive_data(script)
                connection.send_headers(1, [(b":status", b"200")])
            self.assertEqual(fast.data_to_send(), plain.data_to_send())
            in_frames_by_h2(plain, 1, payload[:size], end)
            fast.send_in_frames(1, form(payload), size, end)
            self.assertEqual((fast.data_to_send(), state(fast)), (plain.data_to_send(), state(plain)), (size, end))

    def test_the_fast_paths_are_taken(self) -> None:
        """An upload's DATA frames, cut mid-frame, are not parsed by hyperframe, and a
        response's DATA frames are not built by it; the bytes are h2's all the same."""
        from hyperframe.frame import DataFrame

        plain, fast = self.pair()
        script = [("headers", 1, None, False, False)] + [("data", 1, 16384, 0, 0)] * 3
        data = client_bytes(script)
        built: list[int] = []
        original = DataFrame.__init__

        def counted(frame: Any, *args: Any, **kwargs: Any) -> None:
            built.append(1)
            original(frame, *args, **kwargs)

        self.patch(DataFrame, "__init__", counted)
        for chunk in (data[:100], data[100:30000], data[30000:]):
            expected = outcome(plain, lambda: plain.receive_data(chunk))
            built.clear()
            self.assertEqual(outcome(fast, lambda: fast.receive_data(chunk)), expected)
            self.assertEqual(built, [])
        body = b"b" * 40000
        plain.send_headers(1, [(b":status", b"200")])
        fast.send_headers(1, [(b":status", b"200")])
        for offset in range(0, len(body), 16384):
            plain.send_data(1, body[offset:offset + 16384])
            built.clear()
            fast.send_data(1, memoryview(body)[offset:offset + 16384])
            self.assertEqual(built, [])
        self.assertEqual(fast.data_to_send(), plain.data_to_send())
