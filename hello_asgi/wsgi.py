"""WSGI apps served as ASGI 3 apps: each call on a bounded pool of worker threads.

``WSGIApp`` is what the loader makes of a WSGI callable, so the server below it does not
know: HTTP/1.1, HTTP/2, TLS, proxies, workers, graceful shutdown and the access log serve
a WSGI app as they serve an ASGI one. Its coroutine admits the request to the pool (or
waits for a free thread), hands the call to a thread (``wsgi_call.py``), and then sends
what the thread posts with the exchange's own ``send()``, whose waits for a slow client
hold the thread back; it reads the request body with ``receive()`` when the thread asks.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger

from . import __version__
from .config import Config
from .loading import Message, Receive, Scope, Send
from .stream import ClientDisconnected
from .wsgi_call import ACK, DONE, MARK, READ, SEND, Channel, FileWrapper, WSGICall
from .wsgi_environ import build_environ
from .wsgi_io import ErrorStream, InputStream

log = Logger(namespace="hello_asgi.wsgi")

#: Worker threads per process unless told otherwise (``--wsgi-threads``): 10, as a2wsgi
#: and Uvicorn's old WSGI middleware, enough for an app that waits on a database, few
#: enough that a process does not thrash the GIL.
DEFAULT_THREADS: int = Config.wsgi_threads

WSGICallable = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ThreadPool:
    """``size`` worker threads, started as requests need them, and the admission of
    requests to them: a request beyond ``size`` waits on the loop (in arrival order) for a
    thread to come free, so the threads' queue never holds more than ``size`` calls.

    The threads are daemons: a WSGI call stuck for ever must not keep the process from
    exiting once the server has given up on it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0  # calls admitted and not yet finished
        self._started = 0
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

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

    def run(self, job: Callable[[], None]) -> None:
        """Hand ``job`` to a thread, starting one if every started thread may be busy."""
        self._jobs.put(job)
        if self._started < self.busy:
            self._started += 1
            threading.Thread(target=self._work, name=f"hello-asgi-wsgi-{self._started}", daemon=True).start()

    def stop(self) -> None:
        """Let the idle threads end (the busy ones end after their call)."""
        for _ in range(self._started):
            self._jobs.put(None)
        self._started = 0

    def _work(self) -> None:
        jobs = self._jobs
        while (job := jobs.get()) is not None:
            job()


class WSGIApp:
    """A WSGI callable as an ASGI 3 app (``loading.as_asgi3`` makes one for a WSGI app).

    ``threads`` bounds the calls running at once; ``multiprocess`` is
    ``wsgi.multiprocess``, true when a supervisor runs this process as one of its workers.
    Lifespan does not apply to WSGI: it is answered here, and on shutdown the idle threads
    end. A WebSocket request is denied (403): a WSGI app cannot take one over.
    """

    asgi_version = "3.0"

    def __init__(self, app: WSGICallable, threads: int = DEFAULT_THREADS, multiprocess: bool | None = None) -> None:
        if threads < 1:
            raise ValueError("a WSGI app needs at least one thread (wsgi_threads)")
        if multiprocess is None:
            from .process import is_worker

            multiprocess = is_worker()
        self.app = app
        self.threads = threads
        self.pool = ThreadPool(threads)
        self.constants: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.multithread": threads > 1,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SERVER_SOFTWARE": f"hello-asgi/{__version__}",
        }

    def __repr__(self) -> str:
        return f"WSGIApp({self.app!r}, threads={self.threads})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._serve(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.pool.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        pool = self.pool
        await pool.admit()
        loop = asyncio.get_running_loop()
        channel = Channel(loop, pool.release)
        call = WSGICall(self.app, {}, channel, "http.response.pathsend" in scope.get("extensions", ()),
                        scope["method"] == "HEAD")
        pool.run(lambda: self._call(call, scope, loop))
        try:
            failure = await _pump(channel, receive, send)
        except BaseException as error:  # cancelled: shutdown ran out of time, or --timeout-request
            if channel.abandon(error):
                pool.release()
            raise
        pool.release()
        if failure is not None:
            raise failure

    def _call(self, call: WSGICall, scope: Scope, loop: asyncio.AbstractEventLoop) -> None:
        """In a worker thread: the environ, then the app."""
        try:
            environ = build_environ(scope, self.constants)
            environ["wsgi.input"] = InputStream(call.fetch_body)
            environ["wsgi.errors"] = ErrorStream(loop)
            call.environ = environ
        except BaseException as error:
            call.channel.finish([], error)
            return
        call.run()


async def _pump(channel: Channel, receive: Receive, send: Send) -> BaseException | None:
    """Carry out what the thread posts until it finishes; the error to raise, if any: the
    app's, or one ``send()`` raised (a response the stream refused)."""
    failure: BaseException | None = None
    while True:
        batch = channel.take()
        if isinstance(batch, asyncio.Future):
            await batch
            continue
        for kind, value in batch:
            if kind == SEND:
                if channel.gone is None:
                    try:
                        await send(value)
                    except ClientDisconnected as error:
                        channel.fail(error)
                    except Exception as error:
                        failure = error
                        channel.fail(error)
            elif kind == MARK:
                channel.replies.put(ACK)
            elif kind == READ:
                message = await _read(channel, receive)
                channel.replies.put(message)
            elif kind == DONE:
                return value if value is not None and not isinstance(value, ClientDisconnected) else failure


async def _read(channel: Channel, receive: Receive) -> Message:
    if channel.gone is not None:
        return {"type": "http.disconnect"}
    message = await receive()
    if message["type"] == "http.disconnect":
        channel.gone = ClientDisconnected("the client went away")
    return message
