"""Per-connection deadlines that cost nothing to move and share a few timers between them.

Every connection has a deadline (the request head, keep-alive, an HTTP/2 stall), and most
never expire. A timer each (a Twisted ``DelayedCall`` is about 0.7 KiB) would be the
largest thing an idle connection holds. So deadlines are rounded up to the next tick of
``Ticks`` (a tenth of a second) and wait in that tick's set; one timer per tick in use
serves them all, however many connections there are. A timeout fires up to a tick late.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

RESOLUTION = 0.1  # seconds per tick: how late a deadline may fire

log = Logger(namespace="hello_asgi.timeouts")


class Ticks:
    """The shared timer of one server's deadlines: one ``callLater`` per tick in use, and
    none once no deadline waits (a stopped server leaves no timer behind)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock  # IReactorTime's callLater and seconds, on the thread of the protocols
        self._waiting: dict[int, tuple[set[Deadline], Any]] = {}  # tick: its deadlines, its timer

    def add(self, deadline: Deadline, when: float) -> int:
        """Wake ``deadline`` at the first tick at or after ``when``; that tick."""
        tick = math.ceil(when / RESOLUTION)
        if tick * RESOLUTION < when:  # ceil of a rounded quotient can fall short of ``when``
            tick += 1
        waiting = self._waiting.get(tick)
        if waiting is None:
            delay = max(0.0, tick * RESOLUTION - self.clock.seconds())
            waiting = self._waiting[tick] = set(), self.clock.callLater(delay, self._fire, tick)
        waiting[0].add(deadline)
        return tick

    def remove(self, deadline: Deadline, tick: int) -> None:
        waiting = self._waiting.get(tick)
        if waiting is not None:
            deadlines, timer = waiting
            deadlines.discard(deadline)
            if not deadlines:
                timer.cancel()
                del self._waiting[tick]

    def _fire(self, tick: int) -> None:
        deadlines, _ = self._waiting.pop(tick)
        for deadline in deadlines:
            try:
                deadline.woken(tick)
            except Exception:
                log.failure("A connection's timeout failed")  # the others still get theirs


class Deadline:
    """Calls ``expired`` once the deadline passes; ``set`` moves it, ``set(None)`` clears it.

    Moving a deadline later is an assignment: woken at its tick before the deadline, it
    waits again for a later one. Only a deadline earlier than its tick moves it to another.
    So a keep-alive connection serving request after request touches the ticks rarely.
    """

    __slots__ = ("_expired", "_tick", "_ticks", "_when")

    def __init__(self, ticks: Ticks, expired: Callable[[], None]) -> None:
        self._ticks = ticks
        self._expired = expired
        self._when: float | None = None
        self._tick: int | None = None

    def set(self, seconds: float | None) -> None:
        if seconds is None:
            self._when = None
            return
        ticks = self._ticks
        when = self._when = ticks.clock.seconds() + seconds
        tick = self._tick
        if tick is not None:
            if tick * RESOLUTION <= when:
                return
            ticks.remove(self, tick)
        self._tick = ticks.add(self, when)

    def cancel(self) -> None:
        self._when = None
        if self._tick is not None:
            self._ticks.remove(self, self._tick)
            self._tick = None

    def woken(self, tick: int) -> None:
        """``tick`` came: expire, or wait for the tick of a deadline moved later meanwhile."""
        if self._tick != tick:
            return  # cancelled, or moved to another tick, by an earlier callback of this tick
        self._tick = None
        when = self._when
        if when is None:
            return
        if when > self._ticks.clock.seconds():
            self._tick = self._ticks.add(self, when)
        else:
            self._when = None
            self._expired()
