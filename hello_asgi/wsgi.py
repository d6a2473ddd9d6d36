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
        channel = Channel(pool.waker(loop), pool.release)
        call = WSGICall(self.app, channel, "http.response.pathsend" in scope["extensions"],
                        scope["method"] == "HEAD", _may_have_body(scope))
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

    def _errors(self, loop: asyncio.AbstractEventLoop) -> ErrorStream:
        """``wsgi.errors``: one for every call on ``loop`` (each thread keeps its own partial line)."""
        errors = self._error_stream
        if errors is None or errors.loop is not loop:
            errors = self._error_stream = ErrorStream(loop)
        return errors

    def _call(self, call: WSGICall, scope: Scope, loop: asyncio.AbstractEventLoop) -> None:
        """In a worker thread: the environ, then the app."""
        try:
            environ = build_environ(scope, self.constants)
            environ["wsgi.input"] = InputStream(call.fetch_body)
            environ["wsgi.errors"] = self._errors(loop)
            call.environ = environ
        except BaseException as error:
            call.channel.finish([], error)
            return
        call.run()


def _may_have_body(scope: Scope) -> bool:
    """Whether the request may have a body: over HTTP/1 only with a Content-Length other
    than 0 or a Transfer-Encoding (RFC 9112 section 6.3); over HTTP/2 unless its
    Content-Length is 0. ``wsgi.input`` of one that cannot is at its end without asking."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() != b"0"
        if name == b"transfer-encoding":
            return True
    return not scope["http_version"].startswith("1")


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
