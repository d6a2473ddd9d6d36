"""Values a check has already passed, so that the check runs once per new value.

A server hears the same few request fields, hosts and response headers again and again,
and a set lookup costs a fraction of the regular expressions that check them. Only values
that passed go in, so a bad one is never let through; the set is bounded in number (emptied
when full) and in the size of a value kept, so unusual traffic cannot grow it.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class KnownGood(set[T]):
    """``value in known`` where the check would pass; ``remember`` after it did."""

    __slots__ = ("most", "longest")

    def __init__(self, most: int, longest: int) -> None:
        super().__init__()
        self.most = most  # values kept at once
        self.longest = longest  # the largest value kept, by the size its caller gives

    def remember(self, value: T, size: int) -> None:
        if size <= self.longest:
            if len(self) >= self.most:
                self.clear()
            self.add(value)
