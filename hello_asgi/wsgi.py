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
import inspect
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeGuard

from twisted.logger import Logger

from . import __version__
from .config import Config
from .loading import Message, Receive, Scope, Send
from .stream import ClientDisconnected
from .wsgi_call import ACK, DONE, MARK, SEND, Channel, FileWrapper, WSGICall, may_have_body
from .wsgi_io import ErrorStream
from .wsgi_pool import ThreadPool

log = Logger(namespace="hello_asgi.wsgi")

#: Worker threads per process unless told otherwise (``--wsgi-threads``): 10, as a2wsgi
#: and Uvicorn's old WSGI middleware, enough for an app that waits on a database, few
#: enough that a process does not thrash the GIL.
DEFAULT_THREADS: int = Config.wsgi_threads

WSGICallable = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


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
        self._error_stream: ErrorStream | None = None
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
        if scope["type"] == "http":
            await self._serve(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
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
        """Admit the request, hand its call to a thread, and carry out what the thread posts
        until it finishes; then raise the app's error, or one ``send()`` raised (a response
        the stream refused), for the stream to turn into a 500 or a cut response."""
        pool = self.pool
        if pool.busy < pool.size:
            pool.busy += 1
        else:
            await pool.admit()
        loop = asyncio.get_running_loop()
        channel = Channel(pool.waker(loop), pool.release)
        pool.run(WSGICall(self, scope, channel, loop, _first_message(receive, scope)))
        failure: BaseException | None = None
        try:
            while True:
                batch = channel.take()
                if isinstance(batch, asyncio.Future):
                    await batch
                    continue
                for kind, value in batch:
                    if kind == SEND:
                        failure = await _send(channel, send, value) or failure
                    elif kind == DONE:
                        pool.release()
                        if value is not None and not isinstance(value, ClientDisconnected):
                            raise value
                        if failure is not None:
                            raise failure
                        return
                    elif kind == MARK:
                        channel.answer(ACK)
                    else:  # READ
                        channel.answer(await _read(channel, receive))
        except asyncio.CancelledError as error:  # shutdown ran out of time, or --timeout-request
            if channel.abandon(error):
                pool.release()
            raise

    def errors(self, loop: asyncio.AbstractEventLoop) -> ErrorStream:
        """``wsgi.errors``: one for every call on ``loop`` (each thread keeps its own partial line)."""
        errors = self._error_stream
        if errors is None or errors.loop is not loop:
            errors = self._error_stream = ErrorStream(loop)
        return errors


async def _send(channel: Channel, send: Send, message: Message) -> BaseException | None:
    """Send one message the thread posted, unless the exchange is over; a refused response's error."""
    if channel.gone is not None:
        return None
    try:
        await send(message)
    except ClientDisconnected as error:
        channel.fail(error)
    except Exception as error:
        channel.fail(error)
        return error
    return None


def _is_coroutine_function(receive: Receive) -> TypeGuard[Callable[[], Coroutine[Any, Any, Message]]]:
    """Whether ``receive`` makes a coroutine, which can be asked without waiting (the
    server's own ``receive`` is a method of its ``HTTPStream``: the answer is kept per class)."""
    function = getattr(receive, "__func__", None)
    if function is None:
        return False
    known = _COROUTINE_FUNCTIONS.get(function)
    if known is None:
        known = _COROUTINE_FUNCTIONS[function] = inspect.iscoroutinefunction(function)
    return known


_COROUTINE_FUNCTIONS: dict[Callable[..., Any], bool] = {}  # by a bound method's function


def _first_message(receive: Receive, scope: Scope) -> Message | None:
    """The request's first message, if ``receive()`` has it without waiting (a request
    without a body, or whose body came with its head), so the thread need not ask the loop
    for it; else ``None``, and nothing taken.

    A request that says ``Expect: 100-continue`` is not looked at: asking would send the
    ``100 Continue`` that should wait until the app reads.
    """
    if not may_have_body(scope) or any(name == b"expect" for name, _ in scope["headers"]) \
            or not _is_coroutine_function(receive):
        return None
    asking = receive()
    try:
        asking.send(None)
    except StopIteration as done:
        return done.value
    asking.close()  # it waits for the body: the thread asks when it reads (receive() keeps no state of it)
    return None


async def _read(channel: Channel, receive: Receive) -> Message:
    if channel.gone is not None:
        return {"type": "http.disconnect"}
    message = await receive()
    if message["type"] == "http.disconnect":
        channel.gone = ClientDisconnected("the client went away")
    return message
