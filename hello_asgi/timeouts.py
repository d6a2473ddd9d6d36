"""A per-connection deadline that costs nothing to move on the hot path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall


class Deadline:
    """Calls ``expired`` once the deadline passes; ``set`` moves it, ``set(None)`` clears it.

    Moving a deadline later is an assignment: the one timer, when it fires early, sleeps
    again until the current deadline. Only a deadline earlier than the timer replaces it.
    So a keep-alive connection serving request after request schedules almost no timers.
    """

    def __init__(self, reactor: Any, expired: Callable[[], None]) -> None:
        self._reactor = reactor
        self._expired = expired
        self._when: float | None = None
        self._timer: IDelayedCall | None = None

    def set(self, seconds: float | None) -> None:
        if seconds is None:
            self._when = None
            return
        when = self._when = self._reactor.seconds() + seconds
        timer = self._timer
        if timer is not None:
            if timer.getTime() <= when:
                return
            timer.cancel()
        self._timer = self._reactor.callLater(seconds, self._check)

    def cancel(self) -> None:
        self._when = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        when = self._when
        if when is None:
            return
        remaining = when - self._reactor.seconds()
        if remaining > 0:
            self._timer = self._reactor.callLater(remaining, self._check)
        else:
            self._when = None
            self._expired()
