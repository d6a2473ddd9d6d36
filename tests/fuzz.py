"""Structured fuzzing of the wire protocols (issue 7): hypothesis makes the inputs, real
sockets carry them, and invariants judge what comes back.

Each check is a plain function run in a thread (``deferToThread``) against a server on
the reactor, so hypothesis can drive a blocking client while the server runs as usual.
``FUZZ_EXAMPLES`` sets the examples per check: a few hundred in the ordinary suite, as many
as you like under ``tox -e fuzz``. Any exception the server logs fails the test (trial
turns logged errors into failures), so "the server never raises out of a protocol
callback" needs no assertion of its own.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import read_body

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("FUZZ_RANDOM"),
                    suppress_health_check=list(HealthCheck), database=None)


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what it understood of the request, for the differential check."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    seen = {"method": scope["method"], "target": scope["raw_path"].decode("latin-1")
            + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""),
            "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]],
            "body": body.decode("latin-1")}
    data = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(data))]})
    await send({"type": "http.response.body", "body": data})


def exchange(port: int, data: bytes, timeout: float = 2) -> tuple[bytes, bool]:
    """Send ``data`` and read until the server closes; also whether it was still waiting
    for more input after ``timeout`` seconds of silence (the client never half-closes: a
    server may take that as the client leaving)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        try:
            client.sendall(data)
        except OSError:
            pass  # the server may close first, having seen enough to refuse
        received = b""
        try:
            while chunk := client.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # the server may reset a connection it refused with unread input pending
        except TimeoutError:
            return received, True
    return received, False


# HTTP/1.1 requests, mostly valid, sometimes subtly not.

_token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~", min_size=1, max_size=12)
# No HEAD: its response has no body whatever its Content-Length says, so reading the
# responses back would need to know which requests were HEAD (test_http1 covers HEAD).
_method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]) | _token.filter(lambda m: m != "HEAD")
_path = st.lists(st.text("abcXYZ019-._~%!$&'()*+,;=:@", max_size=6), max_size=4).map(lambda parts: "/" + "/".join(parts))
_target = st.one_of(
    st.just("/"),
    _path, _path, _path,
    st.builds(lambda path, query: path + "?" + query, _path, st.text("a=1&b=%20c", max_size=12)),
    st.text(max_size=10).map(lambda text: "/" + text),  # any characters at all, most of them invalid
)
_header_name = _token | _token | _token | st.sampled_from(
    ["Content-Type", "Accept", "X-Forwarded-For", "Cookie", "Connection", " Host", "Host ", "Transfer-Encoding "])
_header_value = st.one_of(  # mostly printable; sometimes anything a byte can be
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=20),
)
_version = st.sampled_from(["HTTP/1.1"] * 16 + ["HTTP/1.0", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1.1 "])
_line_end = st.sampled_from(["\r\n"] * 24 + ["\n", "\r", "\r\r\n"])


@st.composite
def http_request(draw: Any) -> bytes:
    """One request: its head, with a body framed by Content-Length, chunked, both, or wrongly."""
    end = draw(_line_end)
    lines = [f"{draw(_method)} {draw(_target)} {draw(_version)}"]
    headers = draw(st.lists(st.tuples(_header_name, _header_value), max_size=5))
    if draw(st.sampled_from([True] * 9 + [False])):  # HTTP/1.1 requires Host: one in ten goes without
        headers.insert(0, ("Host", "fuzz.test"))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["none"] * 3 + ["length"] * 4 + ["chunked"] * 4 + ["both", "wrong-length",
                                                                                     "bad-chunk", "double-length"]))
    encoded = b""
    if framing in ("length", "both"):
        headers.append(("Content-Length", str(len(body))))
    if framing == "double-length":
        headers += [("Content-Length", str(len(body))), ("Content-Length", str(len(body) + 1))]
    if framing == "wrong-length":
        headers.append(("Content-Length", draw(st.sampled_from(["-1", "1e3", "0x10", "+5", "5 5", "99999999999999999999"]))))
        body = b""  # none of these may be taken for a length
    if framing in ("chunked", "both", "bad-chunk"):
        headers.append(("Transfer-Encoding", draw(st.sampled_from(["chunked"] * 12 + ["Chunked", "gzip, chunked",
                                                                                     "chunked, gzip", "xchunked"]))))
        size = draw(st.sampled_from(["%x" % len(body)] * 8 + ["%X" % len(body), "%x;ext=1" % len(body)]
                                    + (["-1", "g", " %x" % len(body)] if framing == "bad-chunk" else [])))
        encoded = (size.encode() + b"\r\n" + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    elif framing in ("length", "double-length", "wrong-length"):
        encoded = body
    head = end.join(lines + [f"{name}: {value}" for name, value in headers]) + end + end
    return head.encode("utf-8") + encoded


def h11_requests(data: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The requests h11 (a second, independent parser) reads from ``data``, and whether it
    read all of it without an error."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    server.receive_data(b"")
    requests: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    try:
        while True:
            event = server.next_event()
            if isinstance(event, h11.Request):
                current = {"method": event.method.decode("latin-1"), "target": event.target.decode("latin-1"),
                           "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in event.headers],
                           "body": b""}
            elif isinstance(event, h11.Data) and current is not None:
                current["body"] += event.data
            elif isinstance(event, h11.EndOfMessage) and current is not None:
                current["body"] = current["body"].decode("latin-1")
                requests.append(current)
                current = None
                server.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                server.send(h11.EndOfMessage())
                if server.their_state is not h11.DONE or server.our_state is not h11.DONE:
                    return requests, True  # "Connection: close", or HTTP/1.0: nothing after it counts
                server.start_next_cycle()
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return requests, current is None
    except (h11.RemoteProtocolError, h11.LocalProtocolError):
        return requests, False


def responses(data: bytes, count: int) -> list[tuple[int, bytes]]:
    """Parse what the server sent as HTTP/1.1 responses (with h11, as a client): every byte
    must belong to a well-formed response."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    client.receive_data(b"")
    parsed: list[tuple[int, bytes]] = []
    for _ in range(count + 1):
        if not client.trailing_data[0]:
            return parsed  # nothing more was sent
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        status, body = 0, b""
        while True:
            event = client.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                parsed.append((status, body))
                break
            elif isinstance(event, h11.ConnectionClosed) and status == 0:
                return parsed
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"a truncated response in {data!r}")
        if client.our_state is not h11.DONE or client.their_state is not h11.DONE:
            return parsed
        client.start_next_cycle()
    raise AssertionError(f"more responses than requests in {data!r}")


# Every pipeline ends with this, so that a server that read everything closes at once.
_LAST = b"GET /last HTTP/1.1\r\nHost: fuzz.test\r\nConnection: close\r\n\r\n"


def run_cases(inputs: st.SearchStrategy[Any], check: Callable[[Any], None]) -> int:
    """Call ``check`` on ``EXAMPLES`` inputs drawn from ``inputs``; the number of cases run."""
    cases = 0

    @SETTINGS
    @given(inputs)
    def run(case: Any) -> None:
        nonlocal cases
        cases += 1
        check(case)

    run()
    return cases


def check_http1(port: int) -> int:
    """Pipelines of fuzzed requests; the invariants in ``_judge``. Returns the cases run."""

    def check(pipeline: list[bytes]) -> None:
        data = b"".join(pipeline) + _LAST
        received, waiting = exchange(port, data)
        try:
            _judge(data, received, len(pipeline) + 1, waiting)
        except (AssertionError, h11.ProtocolError) as error:
            raise AssertionError(f"{error}\nsent: {data!r}\nreceived: {received!r}") from error

    return run_cases(st.lists(http_request(), min_size=1, max_size=3), check)


_H11_LOWERS = {"transfer-encoding", "expect"}  # compared without case: h11 lowercases them


def _judge(sent: bytes, received: bytes, count: int, waiting: bool) -> None:
    ours = responses(received, count)
    theirs, h11_read_all = h11_requests(sent)
    answered = [json.loads(body) for status, body in ours if status == 200]
    refused = [status for status, _ in ours if status != 200]
    # Never more answers than requests (smuggling), and a refusal is a 4xx or 5xx that ends it.
    assert len(ours) <= count, (sent, received)
    assert all(400 <= status < 600 for status in refused), (sent, received)
    assert not refused or ours[-1][0] != 200, ("answered after a refusal", sent, received)
    # Where both parsers accepted a request, they agree on it (h11 keeps header case, and
    # hello-asgi lowercases, as ASGI asks; h11 lowercases the values of the fields it acts
    # on, which ASGI passes as sent; an empty query, "/p?", is "/p" in an ASGI scope).
    for mine, other in zip(answered, theirs):
        other_headers = [[name.lower(), value.lower() if name.lower() in _H11_LOWERS else value]
                         for name, value in other["headers"]]
        mine["headers"] = [[name, value.lower() if name in _H11_LOWERS else value] for name, value in mine["headers"]]
        other_target = other["target"].removesuffix("?") if other["target"].count("?") == 1 else other["target"]
        assert (mine["method"], mine["target"], mine["body"]) == (other["method"], other_target, other["body"]), \
            ("the parsers disagree", sent, mine, other)
        assert mine["headers"] == other_headers, ("the parsers disagree on headers", sent, mine, other)
    # A request both read whole, in a stream h11 read without an error, is answered; and
    # a server still waiting for input is waiting for a request h11 has not seen end either.
    if h11_read_all and len(answered) < len(theirs):
        assert refused, ("a valid request went unanswered", sent, received)
    if waiting:
        assert not refused and not h11_read_all, ("waited for more input than the request has", sent, received)


# WebSocket frames after a valid handshake.

_HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: fuzz.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@st.composite
def websocket_frame(draw: Any) -> bytes:
    """A client frame, usually well formed: odd opcodes, RSV bits, no mask, bad UTF-8,
    oversize or fragmented control frames, lying lengths."""
    fin = draw(st.booleans() | st.just(True))
    rsv = draw(st.sampled_from([0] * 8 + [1, 2, 4]))
    opcode = draw(st.sampled_from([0x1, 0x1, 0x2, 0x2, 0x0, 0x8, 0x9, 0xA, 0x3, 0xB, 0xF]))
    payload = draw(st.binary(max_size=140) | st.text(max_size=40).map(str.encode)
                   | st.sampled_from([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x03\xe8ok", b"\x03"]))
    masked = draw(st.booleans() | st.just(True))
    length = len(payload)
    head = bytes([(fin << 7) | (rsv << 4) | opcode])
    encoding = draw(st.sampled_from(["short"] * 6 + ["16", "64"]))
    if encoding == "short" and length < 126:
        head += bytes([(masked << 7) | length])
    elif encoding == "64":
        head += bytes([(masked << 7) | 127]) + struct.pack("!Q", length)
    else:
        head += bytes([(masked << 7) | 126]) + struct.pack("!H", length)
    if masked:
        mask = draw(st.binary(min_size=4, max_size=4))
        payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        head += mask
    return head + payload


async def websocket_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
    elif scope["type"] == "http":
        await echo_app(scope, receive, send)


_CLOSE_CODES = {1000, 1002, 1007, 1009}  # normal, protocol error, bad UTF-8, too big


def check_websocket(port: int) -> int:
    """Fuzzed frame sequences: the server echoes valid messages and ends a broken stream
    with a close frame whose code names the fault; the connection always ends cleanly."""

    def check(frames: list[bytes]) -> None:
        # a close of our own last, so that the server ends the connection either way
        received, waiting = exchange(port, _HANDSHAKE + b"".join(frames) + b"\x88\x82abcd" + bytes([0x03 ^ 0x61, 0xE8 ^ 0x62]))
        assert not waiting, ("the connection did not end", frames)
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), received
        codes = []
        while rest:
            assert len(rest) >= 2, rest
            opcode, length, offset = rest[0] & 0x0F, rest[1] & 0x7F, 2
            assert not rest[1] & 0x80, "a server frame is never masked"
            if length == 126:
                length, offset = struct.unpack("!H", rest[2:4])[0], 4
            elif length == 127:
                length, offset = struct.unpack("!Q", rest[2:10])[0], 10
            payload, rest = rest[offset : offset + length], rest[offset + length :]
            assert len(payload) == length, "a truncated frame"
            if opcode == 0x8:
                codes.append(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005)
        assert codes and codes[0] in _CLOSE_CODES and len(codes) == 1, (frames, codes)

    return run_cases(st.lists(websocket_frame(), min_size=1, max_size=4), check)


# HTTP/2 frame sequences from a client that misbehaves.

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_GOAWAY_CODES = {0x0, 0x1, 0x2, 0x3, 0x5, 0x6, 0x7, 0x9, 0xB}  # none, protocol, internal, flow, closed, size, refused, compression, calm


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack("!I", len(payload))[1:] + bytes([kind, flags]) + struct.pack("!I", stream & 0x7FFFFFFF) + payload


@st.composite
def h2_frame(draw: Any) -> bytes:
    """One client frame: usually plausible, often on the wrong stream or with a wrong size."""
    stream = draw(st.sampled_from([1, 1, 3, 5, 0, 2, 7, 0x7FFFFFFF]))
    kind = draw(st.sampled_from(["headers"] * 4 + ["data"] * 3 + ["settings", "window", "rst", "ping", "priority",
                                                                   "goaway", "continuation", "unknown", "push"]))
    if kind == "headers":
        import hpack

        fields = [(":method", draw(st.sampled_from(["GET", "POST", "CONNECT", "get"]))),
                  (":scheme", "http"), (":path", draw(st.sampled_from(["/", "/x?y=1", "", "*"]))),
                  (":authority", "fuzz.test")]
        fields = draw(st.permutations(fields)) if draw(st.booleans()) else fields
        fields = fields[: draw(st.integers(2, len(fields)))]
        fields += draw(st.lists(st.sampled_from([("x-a", "b"), ("connection", "close"), ("TE", "trailers"),
                                                 ("te", "trailers"), ("content-length", "3"), ("Upper", "x"),
                                                 (":extra", "1")]), max_size=2))
        block = hpack.Encoder().encode(fields) if draw(st.integers(0, 9)) else draw(st.binary(max_size=20))
        flags = 0x4 | (0x1 if draw(st.booleans()) else 0)  # END_HEADERS, and maybe END_STREAM
        return _frame(0x1, flags, stream, block)
    if kind == "data":
        return _frame(0x0, draw(st.sampled_from([0, 1])), stream, draw(st.binary(max_size=64)))
    if kind == "settings":
        parameters = draw(st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0x99]),
                                             st.sampled_from([0, 1, 100, 16384, 2**24, 2**31, 2**32 - 1])), max_size=3))
        payload = b"".join(struct.pack("!HI", key, value) for key, value in parameters)
        return _frame(0x4, draw(st.sampled_from([0, 0, 1])), draw(st.sampled_from([0, 0, 0, 1])), payload)
    if kind == "window":
        return _frame(0x8, 0, draw(st.sampled_from([0, stream])),
                      struct.pack("!I", draw(st.sampled_from([0, 1, 65535, 2**31 - 1]))))
    if kind == "rst":
        return _frame(0x3, 0, stream, struct.pack("!I", draw(st.integers(0, 15))))
    if kind == "ping":
        return _frame(0x6, draw(st.sampled_from([0, 1])), draw(st.sampled_from([0, 0, 1])),
                      draw(st.sampled_from([b"12345678", b"1234"])))
    if kind == "priority":
        return _frame(0x2, 0, stream, struct.pack("!IB", draw(st.sampled_from([0, stream, 3])), 16))
    if kind == "goaway":
        return _frame(0x7, 0, 0, struct.pack("!II", 0, draw(st.integers(0, 13))))
    if kind == "continuation":
        return _frame(0x9, 0x4, stream, b"\x82")
    if kind == "push":
        return _frame(0x5, 0x4, stream, struct.pack("!I", 2) + b"\x82")
    return _frame(0x20, 0, stream, b"unknown")


def _server_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Split what the server sent into frames (kind, flags, stream, payload); every byte
    must belong to a whole frame."""
    frames = []
    while data:
        assert len(data) >= 9, ("a truncated frame header", data)
        length = int.from_bytes(data[:3], "big")
        kind, flags, stream = data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        assert len(data) >= 9 + length, ("a truncated frame", data)
        frames.append((kind, flags, stream, data[9 : 9 + length]))
        data = data[9 + length :]
    return frames


def check_http2(port: int) -> int:
    """Fuzzed frame sequences after the preface: the server answers in whole frames, with
    response headers that decode, ends a broken connection with GOAWAY and a code that says
    why, and never raises."""
    import hpack

    def check(frames: list[bytes]) -> None:
        received, waiting = exchange(port, _PREFACE + _frame(0x4, 0, 0, b"") + b"".join(frames))
        # A request left open (HEADERS without END_STREAM) may rightly wait for its body.
        left_open = any(frame[3] == 0x1 and not frame[4] & 0x1 for frame in frames)
        assert left_open or not waiting, ("the connection did not end", frames)
        decoder = hpack.Decoder()
        goaways = []
        for kind, _, _, payload in _server_frames(received):
            if kind == 0x1:  # HEADERS: the server's HPACK state must stay in step with ours
                status = dict(decoder.decode(payload)).get(":status")
                assert status is not None and status.isdigit(), (frames, payload)
            elif kind == 0x7:
                goaways.append(int.from_bytes(payload[4:8], "big"))
        client_left = any(frame[3] == 0x7 for frame in frames)  # after its GOAWAY a close is enough
        assert (goaways or client_left or waiting) and all(code in _GOAWAY_CODES for code in goaways), (frames, goaways)

    return run_cases(st.lists(h2_frame(), min_size=1, max_size=6), check)


