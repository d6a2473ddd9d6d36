"""HTTP/2 receive windows that grow while the app keeps up, as gRPC's and Go's do.

At the default 65,535-byte window a client uploading a large body spends most of its time
waiting for WINDOW_UPDATE. When a stream's app takes a whole window within ``GROW_WITHIN``
of the window's last change, the window was what held the client back, so it doubles, up
to the maximum; an app that reads slowly keeps the window it has. Together, a
connection's streams grow by at most the maximum, so what a client can make the server
buffer stays bounded: a stream's window, and per connection the initial windows plus the
maximum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# The window is sized to about what the app reads in this long: enough to keep a path of up
# to this round-trip time full.
GROW_WITHIN = 0.1


@dataclass(slots=True)
class StreamWindow:
    """One request stream's receive window, kept on its ``h2_stream.H2Stream``."""

    size: int
    taken: int = 0  # bytes the app took since the window last changed
    since: float = 0.0  # when that was


class ReceiveWindows:
    """The receive windows of one connection's request streams: when to grow which."""

    def __init__(self, initial: int, maximum: int, seconds: Callable[[], float]) -> None:
        self._initial = initial
        self._maximum = maximum
        self._seconds = seconds
        self._grown = 0  # by how much the open streams' windows exceed the initial one, together
        self._connection_grown = 0  # by how much the connection window was grown for them

    def open(self) -> StreamWindow:
        """The window of a new request stream, at the initial size."""
        return StreamWindow(self._initial, since=self._seconds())

    def close(self, window: StreamWindow) -> None:
        """The stream ended: what its window grew by may go to others."""
        self._grown -= window.size - self._initial

    def taken(self, window: StreamWindow, size: int) -> tuple[int, int]:
        """The app took ``size`` bytes of the stream's body. Returns the size to open the
        stream's window to, and by how much to grow the connection's (0 and 0: neither)."""
        window.taken += size
        if window.taken < window.size:
            return 0, 0
        now = self._seconds()
        quick = now - window.since <= GROW_WITHIN
        window.taken, window.since = 0, now
        growth = min(window.size, self._maximum - window.size, self._maximum - self._grown) if quick else 0
        if growth <= 0:
            return 0, 0
        window.size += growth
        self._grown += growth
        connection_growth = max(0, self._grown - self._connection_grown)
        self._connection_grown += connection_growth
        return window.size, connection_growth
