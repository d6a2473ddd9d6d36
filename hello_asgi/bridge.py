"""Where Twisted and asyncio meet: the asyncio reactor, app tasks, Deferreds and futures.

On the asyncio reactor, apps run as asyncio tasks on the loop the reactor itself runs on,
so an app that uses asyncio (Starlette, Django, database drivers) sees an ordinary running
loop and ``asyncio.current_task()``, and no thread hop sits between a socket and the app.
Under any other reactor (epoll, select, a ``twistd`` service's default), an ``AppLoop``
runs an asyncio loop in a companion thread; ``threaded.py`` carries connections across.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.python.failure import Failure

T = TypeVar("T")


LOOPS = ("auto", "asyncio", "uvloop")


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """A fresh loop of ``kind``: ``uvloop`` (``hello-asgi[uvloop]``), ``asyncio``, or ``auto``,
    uvloop when it is installed and asyncio's own otherwise. Twisted's asyncio reactor runs
    on either: it drives sockets through ``add_reader``/``add_writer`` and timers through
    ``call_later``, which uvloop implements on libuv, in C."""
    if kind not in LOOPS:
        raise ValueError(f"loop must be auto, asyncio or uvloop, not {kind!r}")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ValueError("loop uvloop needs uvloop: pip install 'hello-asgi[uvloop]'") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def install_asyncio_reactor(loop: str = "auto") -> IReactorCore:
    """Install Twisted's asyncio reactor on a fresh loop of ``loop``'s kind (see
    ``new_event_loop``), unless a reactor is installed already.

    ``twist`` installs its default reactor only after a plugin's options are parsed, so the
    plugin calls this first and users need no ``--reactor`` flag. Whatever reactor this
    returns can serve apps: one that is not asyncio's gets an ``AppLoop`` thread.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        event_loop = new_event_loop(loop)
        asyncio.set_event_loop(event_loop)
        if is_uvloop(event_loop):
            from twisted.internet.main import installReactor

            installReactor(_uvloop_reactor(event_loop))
        else:
            asyncioreactor.install(event_loop)
    from twisted.internet import reactor

    return reactor


def _uvloop_reactor(event_loop: asyncio.AbstractEventLoop) -> Any:
    """Twisted's asyncio reactor on a uvloop loop, hearing of child processes' exits.

    Twisted learns of a child's exit by pointing the signal wakeup fd at a pipe of its own
    (with a SIGCHLD handler that does nothing, the kernel's byte on the pipe waking the
    reactor). uvloop points that fd at its own socket each time its loop starts, after
    Twisted, so Twisted never heard and its children stayed zombies: a supervisor never saw
    a worker end. So each time Twisted installs its signal handling (every start: trial
    restarts the reactor per test), a Python SIGCHLD handler, which uvloop runs as the
    signal arrives, asks the reactor to reap instead.
    """
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    class UvloopReactor(AsyncioSelectorReactor):
        def _reallyStartRunning(self) -> None:
            super()._reallyStartRunning()
            if self._installSignalHandlers:
                _reap_children_from_a_handler(self)

    return UvloopReactor(event_loop)


def _reap_children_from_a_handler(reactor: Any) -> None:
    from twisted.internet.process import reapAllProcesses

    def exited(number: int, frame: Any) -> None:
        reactor.callFromThread(reapAllProcesses)

    signal.signal(signal.SIGCHLD, exited)
    signal.siginterrupt(signal.SIGCHLD, False)


def log_loop(reactor: Any) -> None:
    """The start-up line that says which loop serves (the one way to tell ``--loop auto``'s choice)."""
    name = loop_name(reactor)
    if name is not None:
        from twisted.logger import Logger

        Logger(namespace="hello_asgi.bridge").info("Running on the asyncio reactor, on {loop}'s event loop",
                                                   loop=name)


def loop_name(reactor: Any) -> str | None:
    """``uvloop`` or ``asyncio``: the kind of loop the asyncio reactor runs on; None under
    another reactor."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None:
        return None
    return "uvloop" if is_uvloop(loop) else "asyncio"


def is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.split(".")[0] == "uvloop"


def as_deferred(awaitable: Awaitable[T]) -> Deferred[T]:
    """Wrap a coroutine or future as a Deferred, for Twisted callers at the public edges."""
    return Deferred.fromFuture(asyncio.ensure_future(awaitable))


class LoopClock:
    """``callLater`` and ``seconds`` on an asyncio loop's own thread: the part of
    ``IReactorTime`` the protocols use for their timeouts, for the companion thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def seconds(self) -> float:
        return self._loop.time()  # the clock the loop's timers keep

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> _LoopCall:
        return _LoopCall(self._loop, delay, f, args)


class _LoopCall:
    """What ``LoopClock.callLater`` returns: the ``IDelayedCall`` methods its callers use,
    ``cancel`` (``Ticks``, autobahn's timers) and ``active`` (``websocket.py`` asks it before
    cancelling the wait for an app's answers, as a Twisted call must not be cancelled twice)."""

    __slots__ = ("_called", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, f: Callable[..., Any],
                 args: tuple[Any, ...]) -> None:
        self._called = False
        self._handle = loop.call_later(delay, self._call, f, args)

    def _call(self, f: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._called = True
        f(*args)

    def cancel(self) -> None:
        self._handle.cancel()

    def active(self) -> bool:
        """Whether the call is still to come: neither made nor cancelled."""
        return not self._called and not self._handle.cancelled()


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
            return Deferred.fromFuture(self.loop.create_task(coroutine))
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
