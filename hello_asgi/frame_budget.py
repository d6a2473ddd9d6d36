"""A budget for the HTTP/2 frames that cost the server more than they cost the client.

A PING or a SETTINGS frame makes the server answer; an empty DATA frame, a PRIORITY
frame, a WINDOW_UPDATE with nothing waiting for window, or a frame of an unknown type
asks for nothing, yet each costs h2 a parse and an event (the CVE-2019-9512, -9515 and
-9518 floods: 100k empty DATA frames cost 1.1-1.9 s of server CPU). ``FrameBudget`` reads
only the nine-byte header of each frame, before h2 sees the bytes, so a limit means what
it says: the frame over it and everything after it are never given to h2 (which would
have answered every PING of a read at once, thousands past the limit).
"""

from __future__ import annotations

from collections.abc import Callable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # the client's connection preface, before its first frame
PREFACE_SIZE = len(PREFACE)
WINDOW = 10.0  # seconds: the budgets are per ten seconds

_DATA, _SETTINGS, _PRIORITY, _PING, _WINDOW_UPDATE, _LAST_KNOWN = 0x0, 0x4, 0x2, 0x6, 0x8, 0x9
_ACK = _END_STREAM = 0x1


class FrameBudget:
    """Counts one connection's frames as they arrive; ``admit`` says where a budget ran out."""

    __slots__ = ("_control", "_control_limit", "_empty", "_empty_limit", "_header", "_now", "_skip",
                 "_window_start")

    def __init__(self, now: Callable[[], float], control_limit: int, empty_limit: int) -> None:
        self._now = now
        self._control_limit = control_limit  # PING and SETTINGS, each answered
        self._empty_limit = empty_limit  # frames that ask for nothing
        self._control = self._empty = 0
        self._window_start = now()
        self._skip = PREFACE_SIZE  # bytes still to pass before the next frame header
        self._header = b""  # a frame header split between two reads

    def admit(self, data: bytes, output_waiting: bool) -> tuple[bytes, str | None]:
        """The part of ``data`` within the budgets, and what ran over (``None`` if nothing).

        ``output_waiting``: response data waits for flow-control window, so a WINDOW_UPDATE
        does work and is not counted."""
        position, size = 0, len(data)
        while position < size:
            if self._skip:
                step = min(self._skip, size - position)
                position += step
                self._skip -= step
                continue
            start = position - len(self._header)  # where this frame began (before this read, if < 0)
            header = self._header + data[position:position + 9 - len(self._header)]
            position += 9 - len(self._header)
            if len(header) < 9:
                self._header = header
                break
            self._header = b""
            self._skip = int.from_bytes(header[:3], "big")
            over = self._count(header[3], header[4], self._skip, output_waiting)
            if over is not None:
                return data[:max(start, 0)], over
        return data, None

    def _count(self, kind: int, flags: int, length: int, output_waiting: bool) -> str | None:
        if kind == _PING or kind == _SETTINGS:
            if not flags & _ACK:
                return self._spend(control=True)
        elif not (kind > _LAST_KNOWN or kind == _PRIORITY or (kind == _WINDOW_UPDATE and not output_waiting)
                  or (kind == _DATA and not length and not flags & _END_STREAM)):
            return None
        return self._spend(control=False)

    def _spend(self, control: bool) -> str | None:
        """Count a frame of the control budget (``control``) or the empty one; past it, why."""
        now = self._now()
        if now - self._window_start > WINDOW:
            self._window_start = now
            self._control = self._empty = 0
        if control:
            self._control += 1
            count, limit, what = self._control, self._control_limit, "PING and SETTINGS frames"
        else:
            self._empty += 1
            count, limit, what = self._empty, self._empty_limit, "frames that carry nothing"
        return f"more than {limit} {what} in {WINDOW:g} s" if count > limit else None
