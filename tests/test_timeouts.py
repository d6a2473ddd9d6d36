"""Deadlines on shared ticks (``hello_asgi.timeouts``), on a ``task.Clock``."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from hello_asgi.timeouts import RESOLUTION, Deadline, Ticks


class DeadlineTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.ticks = Ticks(self.clock)
        self.expired: list[int] = []

    def deadline(self, name: int) -> Deadline:
        return Deadline(self.ticks, lambda: self.expired.append(name))

    def test_many_deadlines_share_one_timer(self) -> None:
        deadlines = [self.deadline(n) for n in range(1000)]
        for n, deadline in enumerate(deadlines):
            deadline.set(5.01 + n * RESOLUTION / 2000)  # all within one tick
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(5.06 + RESOLUTION + 0.001)
        self.assertEqual(sorted(self.expired), list(range(1000)))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fires_within_a_tick_of_the_deadline_and_not_before(self) -> None:
        self.deadline(1).set(1.0)
        self.clock.advance(0.999)
        self.assertEqual(self.expired, [])
        self.clock.advance(RESOLUTION)
        self.assertEqual(self.expired, [1])

    def test_moved_later_it_waits_for_the_later_time_without_a_new_timer(self) -> None:
        deadline = self.deadline(1)
        deadline.set(1.0)
        timers = self.clock.getDelayedCalls()
        deadline.set(3.0)
        self.assertEqual(self.clock.getDelayedCalls(), timers)
        self.clock.advance(2.0)
        self.assertEqual(self.expired, [])
        self.clock.advance(1.0 + RESOLUTION)
        self.assertEqual(self.expired, [1])

    def test_moved_earlier_it_leaves_its_tick_and_the_empty_tick_goes(self) -> None:
        deadline = self.deadline(1)
        deadline.set(10.0)
        deadline.set(1.0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.0 + RESOLUTION)
        self.assertEqual(self.expired, [1])

    def test_cleared_or_cancelled_it_never_fires_and_no_timer_stays(self) -> None:
        cleared, cancelled = self.deadline(1), self.deadline(2)
        cleared.set(1.0)
        cleared.set(None)
        cancelled.set(2.0)
        cancelled.cancel()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the cleared one's tick still runs
        self.clock.advance(3.0)
        self.assertEqual(self.expired, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
