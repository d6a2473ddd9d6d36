"""Where Twisted and asyncio meet: the asyncio reactor, app tasks, Deferreds and futures.

Apps run as asyncio tasks on the loop the reactor itself runs on, so an app that uses
asyncio (Starlette, Django, database drivers) sees an ordinary running loop and
``asyncio.current_task()``, and no thread hop sits between a socket and the app.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore

T = TypeVar("T")


class ReactorError(Exception):
    """The installed reactor cannot run asyncio apps; the message says what to do."""


def install_asyncio_reactor() -> IReactorCore:
    """Install Twisted's asyncio reactor on a fresh loop, or return it if it already is.

    ``twist`` installs its default reactor only after a plugin's options are parsed, so the
    plugin calls this first and users need no ``--reactor`` flag.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import reactor

    asyncio_loop(reactor)
    return reactor  # type: ignore[return-value]


def asyncio_loop(reactor: Any) -> asyncio.AbstractEventLoop:
    """The asyncio loop under ``reactor``, or a ``ReactorError`` saying how to get one."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None:
        raise ReactorError(
            f"hello-asgi runs ASGI apps on the asyncio reactor, but {type(reactor).__name__} is "
            "installed: drop --reactor (or pass --reactor=asyncio), or install "
            "twisted.internet.asyncioreactor before anything imports twisted.internet.reactor"
        )
    return loop  # type: ignore[no-any-return]


def start_task(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``coroutine`` as a task on ``loop``: the one way app code is started."""
    return loop.create_task(coroutine)


def as_deferred(awaitable: Awaitable[T]) -> Deferred[T]:
    """Wrap a coroutine or future as a Deferred, for Twisted callers at the public edges."""
    return Deferred.fromFuture(asyncio.ensure_future(awaitable))
