"""The ASGI lifespan protocol: startup before the server listens, shutdown after it stops."""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.logger import Logger

from .loading import ASGIApp, Message
from .stream import SPEC_VERSION

log = Logger(namespace="hello_asgi.lifespan")


class LifespanFailure(Exception):
    """The app reported ``lifespan.startup.failed`` or ``shutdown.failed``, or raised in ``on`` mode."""


class Lifespan:
    """Runs one lifespan scope for ``app``; ``state`` is shared with every request scope."""

    def __init__(self, app: ASGIApp, mode: str, asgi_version: str, state: dict[str, Any]) -> None:
        self._app = app
        self._mode = mode
        self._asgi_version = asgi_version
        self.state = state
        self.supported = mode != "off"
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._outgoing: asyncio.Queue[Message | BaseException | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._running = False  # startup completed and shutdown not yet run
        self._spoke_lifespan = False

    async def startup(self) -> None:
        if not self.supported:
            return
        scope = {
            "type": "lifespan",
            "asgi": {"version": self._asgi_version, "spec_version": SPEC_VERSION},
            "state": self.state,
        }
        self._task = asyncio.get_running_loop().create_task(self._run(scope))
        try:
            await self._exchange("startup")
        except BaseException:
            await self._stop_task()
            raise
        self._running = self.supported

    async def shutdown(self) -> None:
        """Run lifespan shutdown, if startup completed: an app that failed to start is not asked."""
        task = self._task
        if not self._running or task is None:  # (running only once startup made the task)
            return
        self._running = False
        await self._exchange("shutdown")
        await task

    async def _exchange(self, phase: str) -> None:
        await self._incoming.put({"type": f"lifespan.{phase}"})
        reply = await self._outgoing.get()
        if self._mode == "auto" and phase == "startup" and not self._spoke_lifespan:
            # An app without lifespan support raises, returns, or answers as if it were HTTP.
            log.debug("The app does not support lifespan ({reason}); carrying on without it",
                      reason=reply or "it returned")
            self.supported = False
            await self._stop_task()
            return
        if reply is None or isinstance(reply, BaseException):
            raise LifespanFailure(f"lifespan {phase}: the app {'raised ' + repr(reply) if reply else 'returned'}")
        if reply["type"] == f"lifespan.{phase}.failed":
            raise LifespanFailure(f"lifespan {phase} failed: {reply.get('message', '')}")
        if reply["type"] != f"lifespan.{phase}.complete":
            raise LifespanFailure(f"lifespan {phase}: unexpected message {reply['type']!r}")

    async def _stop_task(self) -> None:
        """Cancel the lifespan call (an app that failed or does not speak lifespan) and wait for it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self._app(scope, self._incoming.get, self._send)
        except asyncio.CancelledError:
            pass
        except BaseException as error:
            if self._mode == "on" or self._spoke_lifespan:
                log.failure("Exception in ASGI app during lifespan")
            await self._outgoing.put(error)
        else:
            await self._outgoing.put(None)

    async def _send(self, message: Message) -> None:
        if not message["type"].startswith("lifespan."):
            await self._outgoing.put(message)
            raise RuntimeError(f"unexpected ASGI message {message['type']!r} in the lifespan scope")
        self._spoke_lifespan = True
        await self._outgoing.put(message)
