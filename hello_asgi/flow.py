"""Write flow control: the one way an app's ``send()`` waits for a slow client.

Every writer of response bytes (HTTP/1.1, an HTTP/2 stream, a WebSocket, twisted.web's
request) is told by its transport, as an ``IPushProducer``, when the client stops
reading and when it reads again. A ``Drain`` keeps that fact and the futures of the
``send()`` calls waiting on it, so they all pause, resume and give up the same way.
Its ``waiter()`` and ``release()`` also serve what waits for something other than a
transport: an HTTP/3 stream's window, and a graceful stop waiting for the last
connection to close (the factory's and the QUIC endpoint's ``drained()``).
"""

from __future__ import annotations

import asyncio


class Drain:
    """Whether the transport takes more bytes now, and who waits until it does.

    ``wait()`` gives ``None`` while bytes may flow (the common case costs no future), or
    a future that ``resume()`` or ``release()`` resolves. ``release()`` is for the end:
    a closing connection wakes its waiters so that they learn of it at once.
    """

    __slots__ = ("_loop", "_waiters", "paused")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: list[asyncio.Future[None]] | None = None  # made once a send waits
        self.paused = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.release()

    def wait(self) -> asyncio.Future[None] | None:
        """A future to await before writing more, or ``None`` when not paused."""
        if not self.paused:
            return None
        return self.waiter()

    def waiter(self) -> asyncio.Future[None]:
        """A future resolved by the next ``release()``, paused or not: for writers that
        wait on more than the transport (an HTTP/2 stream's flow-control window)."""
        waiter = self._loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        return waiter

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    def release(self) -> None:
        """Resolve every waiting future, and forget them."""
        waiters = self._waiters
        if not waiters:
            return
        self._waiters = None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
