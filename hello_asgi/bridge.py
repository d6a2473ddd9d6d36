"""Where Twisted and asyncio meet: the asyncio reactor, app tasks, Deferreds and futures.

On the asyncio reactor, apps run as asyncio tasks on the loop the reactor itself runs on,
so an app that uses asyncio (Starlette, Django, database drivers) sees an ordinary running
loop and ``asyncio.current_task()``, and no thread hop sits between a socket and the app.
Under any other reactor (epoll, select, a ``twistd`` service's default), an ``AppLoop``
runs an asyncio loop in a companion thread; ``threaded.py`` carries connections across.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.python.failure import Failure

T = TypeVar("T")


def install_asyncio_reactor() -> IReactorCore:
    """Install Twisted's asyncio reactor on a fresh loop, unless a reactor is installed already.

    ``twist`` installs its default reactor only after a plugin's options are parsed, so the
    plugin calls this first and users need no ``--reactor`` flag. Whatever reactor this
    returns can serve apps: one that is not asyncio's gets an ``AppLoop`` thread.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import reactor

    return reactor  # type: ignore[return-value]


def start_task(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``coroutine`` as a task on ``loop``: the one way app code is started."""
    return loop.create_task(coroutine)


def as_deferred(awaitable: Awaitable[T]) -> Deferred[T]:
    """Wrap a coroutine or future as a Deferred, for Twisted callers at the public edges."""
    return Deferred.fromFuture(asyncio.ensure_future(awaitable))


class LoopClock:
    """``callLater`` and ``seconds`` on an asyncio loop's own thread: the part of
    ``IReactorTime`` the protocols use for their timeouts, for the companion thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def seconds(self) -> float:
        return self._loop.time()  # the clock the loop's timers keep, so getTime() agrees

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> _LoopCall:
        return _LoopCall(self._loop.call_later(delay, f, *args))


class _LoopCall:
    """What ``LoopClock.callLater`` returns: the ``IDelayedCall`` methods its callers use
    (``Deadline`` and autobahn's timers cancel, and ``Deadline`` reads the time)."""

    def __init__(self, handle: asyncio.TimerHandle) -> None:
        self._handle = handle

    def cancel(self) -> None:
        self._handle.cancel()

    def getTime(self) -> float:
        return self._handle.when()


class AppLoop:
    """The asyncio loop apps run on, and the way between it and the reactor's thread.

    On the asyncio reactor it is the reactor's own loop and every crossing is a plain call.
    Under any other reactor it is a loop in a daemon thread of its own, stopped when the
    reactor shuts down; ``threaded`` is then true and crossings are marshalled.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        loop = getattr(reactor, "_asyncioEventloop", None)
        self.threaded = loop is None
        if loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="hello-asgi apps", daemon=True).start()
            reactor.addSystemEventTrigger("after", "shutdown", loop.call_soon_threadsafe, loop.stop)
        self.loop: asyncio.AbstractEventLoop = loop
        self.clock: Any = LoopClock(loop) if self.threaded else reactor

    def to_loop(self, f: Callable[..., Any], *args: Any) -> None:
        """Call ``f`` on the loop's thread (now, if this is it)."""
        if self.threaded:
            self.loop.call_soon_threadsafe(f, *args)
        else:
            f(*args)

    def to_reactor(self, f: Callable[..., Any], *args: Any) -> None:
        """Call ``f`` on the reactor's thread (now, if this is it)."""
        if self.threaded:
            self.reactor.callFromThread(f, *args)
        else:
            f(*args)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
        """Run ``coroutine`` as a task on the loop; the Deferred fires on the reactor's thread."""
        if not self.threaded:
            return Deferred.fromFuture(start_task(self.loop, coroutine))
        result: Deferred[T] = Deferred()

        def settle(future: Any) -> None:
            error = future.exception() if not future.cancelled() else asyncio.CancelledError()
            if error is None:
                result.callback(future.result())
            else:
                result.errback(Failure(error))

        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        future.add_done_callback(lambda done: self.reactor.callFromThread(settle, done))
        return result


_app_loops: dict[int, AppLoop] = {}


def app_loop(reactor: Any) -> AppLoop:
    """The one ``AppLoop`` of ``reactor``: every server and resource on it shares its thread."""
    found = _app_loops.get(id(reactor))
    if found is None or found.reactor is not reactor:
        found = _app_loops[id(reactor)] = AppLoop(reactor)
    return found
