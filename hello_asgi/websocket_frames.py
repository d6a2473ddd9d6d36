"""The one shape of WebSocket frame the server reads without autobahn.

Echo and chat traffic is almost all small messages in one frame each. For those,
autobahn's general-purpose reader (a frame object, a masker and a UTF-8 validator per
frame, a dozen method calls) cost more than the whole rest of an echo round trip. So
``simple_messages`` reads a frame only when a few comparisons prove it unremarkable:
FIN set, no RSV bits, text or binary, masked, its length in 7 or 16 bits with the
minimal encoding, within the size limit, wholly in the buffer, and (for text) valid
UTF-8. It stops at the first frame that is anything else and leaves that frame and
all after it to autobahn, whose answers to every fault (1002, 1007, 1009) remain the
server's. ``tests/test_websocket_frames.py`` holds the two readers to the same results.
"""

from __future__ import annotations

_TEXT = 0x81  # FIN and opcode 1
_BINARY = 0x82  # FIN and opcode 2
_MASKED = 0x80
_LONGEST = 0xFFFF  # lengths in 16 bits; longer frames are rare enough to leave to autobahn


def simple_messages(data: bytes, limit: int) -> tuple[list[str | bytes], int]:
    """The messages of the simple frames at the start of ``data``, and the bytes they took.

    ``limit`` is the largest payload to read here (the smaller of the frame and message
    limits); a larger frame is left for autobahn to refuse with 1009.
    """
    messages: list[str | bytes] = []
    limit = min(limit, _LONGEST)
    taken, end = 0, len(data)
    while end - taken >= 6:
        first, second = data[taken], data[taken + 1]
        if (first != _TEXT and first != _BINARY) or second < _MASKED:
            break
        size = second - _MASKED
        start = taken + 6
        if size == 126:
            if end - taken < 8:
                break
            size = data[taken + 2] << 8 | data[taken + 3]
            start = taken + 8
            if size < 126:
                break  # not the minimal encoding: a protocol error, autobahn's to report
        elif size == 127:
            break
        stop = start + size
        if size > limit or stop > end:
            break
        key = data[start - 4 : start] * (size // 4 + 1)
        payload = (int.from_bytes(data[start:stop], "little")
                   ^ int.from_bytes(key[:size], "little")).to_bytes(size, "little")
        if first == _TEXT:
            try:
                messages.append(payload.decode("utf-8"))  # strict: RFC 3629, as RFC 6455 asks
            except UnicodeDecodeError:
                break
        else:
            messages.append(payload)
        taken = stop
    return messages, taken
