"""Deadlines on shared ticks (``hello_asgi.timeouts``), on a ``task.Clock``."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from hello_asgi.timeouts import RESOLUTION, Deadline, Ticks


class CountingClock(Clock):
    """A Clock that counts its timers and refuses to spin."""

    scheduled = 0

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        self.scheduled += 1
        if self.scheduled > 1000:
            raise AssertionError("timers scheduled without end")
        return super().callLater(delay, f, *args, **kw)


class DeadlineTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = CountingClock()
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

    def test_a_failing_callback_leaves_the_others_of_its_tick_working(self) -> None:
        def fail() -> None:
            raise RuntimeError("boom")

        failing, other = Deadline(self.ticks, fail), self.deadline(2)
        failing.set(1.0)
        other.set(1.0)
        self.clock.advance(1.0 + RESOLUTION)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.expired, [2])
        other.set(5.0)  # a keep-alive connection's next deadline still fires
        self.clock.advance(5.0 + RESOLUTION)
        self.assertEqual(self.expired, [2, 2])

    def test_a_deadline_just_past_a_tick_boundary_wakes_once(self) -> None:
        """``ceil(1.8000000000000003 / 0.1)`` is 18, whose time 1.8 falls short of the
        deadline: woken there, it would wait again with no delay, for ever under a Clock."""
        self.deadline(1).set(1.8000000000000003)
        self.clock.advance(1.8)
        self.clock.advance(RESOLUTION)
        self.assertEqual(self.expired, [1])
        self.assertEqual(self.clock.scheduled, 1)

    def test_a_callback_may_move_another_deadline_of_its_tick(self) -> None:
        """Each callback moves the other deadline to a later tick and clears it; whichever
        runs first, the moved one must not be woken by the old tick, or it would stay in
        the new tick's set where ``cancel`` cannot find it, and that timer would linger."""
        first: Deadline
        second: Deadline

        def move(other: Deadline) -> None:
            other.cancel()
            other.set(5.0)
            other.set(None)

        first = Deadline(self.ticks, lambda: move(second))
        second = Deadline(self.ticks, lambda: move(first))
        first.set(1.0)
        second.set(1.0)
        self.clock.advance(1.0 + RESOLUTION)
        first.cancel()
        second.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
