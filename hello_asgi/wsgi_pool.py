"""The threads WSGI calls run on, the admission of requests to them, and their way back
to the loop.

Every crossing between the loop's thread and a worker is a thread wake-up, and the woken
thread then wants the GIL its waker holds: on one core, two context switches each. So the
pool wakes as few threads as it can. The loop wakes one idle worker for a burst of calls
(not one per call); a worker takes calls while there are any, and wakes one more worker
only when it takes a call and others still wait (so calls that block, on a database say,
still get a thread each, a wake-up apart). Back to the loop, ``Waker`` carries a burst of
results with one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable

from .threaded import Crossing


class Waker(Crossing):
    """Runs callbacks on the loop for worker threads: a burst of them, from any number of
    calls, with one ``call_soon_threadsafe`` (one write to the loop's self-pipe, one
    wake-up), where each call's own would cost one each."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop.call_soon_threadsafe)
        self.loop = loop


class ThreadPool:
    """``size`` worker threads, started as calls need them, and the admission of requests
    to them: a request beyond ``size`` waits on the loop (in arrival order) for a thread to
    come free, so no more than ``size`` calls are ever queued or running.

    The threads are daemons: a WSGI call stuck for ever must not keep the process from
    exiting once the server has given up on it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0  # calls admitted and not yet finished (the loop's count)
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waker: Waker | None = None
        # The threads' side, under _lock:
        self._lock = threading.Lock()
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._idle: list[threading.Lock] = []  # an idle worker waits to acquire its lock
        self._waking = False  # a worker was woken (or started) and has not yet looked for calls
        self._threads = 0
        self._stopped = False

    def waker(self, loop: asyncio.AbstractEventLoop) -> Waker:
        """The threads' way to the loop (one per loop: an embedded app may serve on two)."""
        waker = self._waker
        if waker is None or waker.loop is not loop:
            waker = self._waker = Waker(loop)
        return waker

    # Admission, on the loop.

    async def admit(self) -> None:
        """Take a thread's slot, waiting for one while all ``size`` are busy."""
        if self.busy < self.size:
            self.busy += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter  # release() passes its slot straight on: busy stays as it is
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot came just as the request was cancelled
            else:
                self._waiting.remove(waiter)
            raise

    def release(self) -> None:
        """A call finished: its slot goes to the longest-waiting request, or back to the pool."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.busy -= 1

    # The threads.

    def run(self, job: Callable[[], None]) -> None:
        """Queue ``job`` for a thread: wake an idle one, or start one, unless one is on its way."""
        with self._lock:
            self._stopped = False
            self._jobs.append(job)
            idle = self._wake_one()
            start = idle is None and not self._waking and self._threads < self.size
            if start:
                self._threads += 1
                self._waking = True
        if idle is not None:
            idle.release()
        elif start:
            threading.Thread(target=self._work, name=f"hello-asgi-wsgi-{self._threads}", daemon=True).start()

    def stop(self) -> None:
        """Let the idle threads end (the busy ones end after their call)."""
        with self._lock:
            self._stopped = True
            idle, self._idle = self._idle, []
        for lock in idle:
            lock.release()

    def _wake_one(self) -> threading.Lock | None:
        """Under ``_lock``: the idle worker to wake, unless one is already on its way."""
        if self._waking or not self._idle:
            return None
        self._waking = True
        return self._idle.pop()

    def _work(self) -> None:
        wake = threading.Lock()
        wake.acquire()  # held: acquiring it again waits until a waker releases it
        with self._lock:
            self._waking = False
        while True:
            with self._lock:
                job = self._jobs.popleft() if self._jobs else None
                idle = self._wake_one() if job is not None and self._jobs else None
                if job is None:
                    if self._stopped:
                        self._threads -= 1
                        return
                    self._idle.append(wake)
            if job is None:
                wake.acquire()
                with self._lock:
                    self._waking = False
                continue
            if idle is not None:
                idle.release()
            job()
