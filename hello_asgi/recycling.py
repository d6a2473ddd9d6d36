"""``--limit-max-requests``: a worker that has served its share asks to be replaced."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from .loading import ASGIApp

log = Logger(namespace="hello_asgi.recycling")


def share(limit: int, jitter: int) -> int:
    """This worker's number of requests: ``limit`` plus up to ``jitter`` more, at random."""
    return limit + random.randint(0, jitter)


class RequestBudget:
    """The app, counting the HTTP requests and WebSocket sessions it is given; once there
    have been ``budget``, ``spent`` is called, once. Lifespan is not a request.

    A wrapper costs a call per request, so it is put in front of the app only when
    ``--limit-max-requests`` asks for it."""

    def __init__(self, app: ASGIApp, budget: int, spent: Callable[[int], None]) -> None:
        self.__wrapped__ = app
        self._budget = budget
        self._spent = spent
        self._count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            self._count += 1
            if self._count == self._budget:
                self._spent(self._count)
        await self.__wrapped__(scope, receive, send)


def replace_or_stop(reactor: Any) -> Callable[[int], None]:
    """What a spent budget does: ask the supervisor for a replacement, or, in a process of
    its own, stop gracefully (a process manager restarts it)."""
    from .process import ask_to_be_replaced, stop_and_exit

    def spent(count: int) -> None:
        if ask_to_be_replaced():
            log.info("Served {count} requests: asking for a fresh worker", count=count)
        else:
            log.info("Served {count} requests: stopping gracefully", count=count)
            reactor.callLater(0, stop_and_exit, reactor, 0)

    return spent
