"""``wsgi.input`` and ``wsgi.errors``: the two streams of a WSGI environ, used in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

from twisted.logger import Logger

log = Logger(namespace="hello_asgi.wsgi")


class InputStream:
    """``wsgi.input``: the request body, fetched from the loop a chunk at a time as the app
    reads (``fetch`` blocks the worker thread while the server reads the socket).

    Only what the app asked for and one chunk more is held: ``read(n)``, ``readline`` and
    iteration never gather the whole body; ``read()`` does, because it was asked to.
    ``wsgi.input_terminated`` is true: a read past the end returns ``b""``, whatever the
    framing (a chunked HTTP/1.1 body, an HTTP/2 body without Content-Length).
    """

    __slots__ = ("_buffer", "_ended", "_fetch")

    def __init__(self, fetch: Callable[[], bytes | None]) -> None:
        self._fetch = fetch  # the next chunk of the body, or None once it has ended
        self._buffer = bytearray()
        self._ended = False

    def _more(self) -> bool:
        """Add the next non-empty chunk to the buffer; False once the body has ended."""
        while not self._ended:
            chunk = self._fetch()
            if chunk is None:
                self._ended = True
            elif chunk:
                self._buffer += chunk
                return True
        return False

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._more():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._more():
            pass
        return self._take(size)

    def read1(self, size: int = -1) -> bytes:
        """What is buffered, or the next chunk: at most one wait (for apps that stream)."""
        if not self._buffer:
            self._more()
        return self._take(len(self._buffer) if size < 0 else size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end != -1:
                return self._take(end + 1 if limit < 0 else min(end + 1, limit))
            if 0 <= limit <= len(self._buffer):
                return self._take(limit)
            start = len(self._buffer)
            if not self._more():
                return self._take(len(self._buffer) if limit < 0 else limit)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class ErrorStream:
    """``wsgi.errors``: text the app writes, logged a line at a time on the loop's thread
    (namespace ``hello_asgi.wsgi``, level error), as Gunicorn sends it to its error log.
    One serves every call; each thread's unfinished line is its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._local = threading.local()

    @property
    def _partial(self) -> str:
        return getattr(self._local, "partial", "")

    @_partial.setter
    def _partial(self, text: str) -> None:
        self._local.partial = text

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._emit(line)
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._emit(line)

    def _emit(self, line: str) -> None:
        try:
            self.loop.call_soon_threadsafe(_log_line, line)
        except RuntimeError:  # the loop has closed: the process is ending
            pass


def _log_line(line: str) -> None:
    log.error("{line}", line=line)
