"""The edges of a process hello-asgi owns: its signals, its exit status, and a worker's word
to its supervisor."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger, LogLevel

log = Logger(namespace="hello_asgi.process")

READY_FD_VARIABLE = "HELLO_ASGI_READY_FD"  # the pipe a worker says "serving" on


def exit_after_shutdown(reactor: Any, code: int) -> None:
    """Exit with ``code`` once the reactor has shut down. ``twist`` would end a process
    stopped by a signal by that signal; a graceful stop is a success, so it is exit 0."""

    def exit_now() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    reactor.addSystemEventTrigger("after", "shutdown", exit_now)


def stop_and_exit(reactor: Any, code: int) -> None:
    """Stop the reactor, then exit with ``code``: ``twist`` itself would always exit 0."""
    exit_after_shutdown(reactor, code)
    _stop_reactor(reactor)


def _stop_reactor(reactor: Any) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass  # already stopping, for another reason


_to_supervisor: int | None = None  # the pipe, kept after "ready" for "replace me"


def worker_ready() -> None:
    """In a worker: tell the supervisor this process is serving (nothing if not a worker)."""
    global _to_supervisor
    descriptor = os.environ.pop(READY_FD_VARIABLE, None)
    if descriptor is not None:
        _to_supervisor = int(descriptor)
        os.write(_to_supervisor, b"ready\n")


def ask_to_be_replaced() -> bool:
    """In a worker: ask the supervisor for a replacement, which stops this one once it
    serves. False when there is no supervisor to ask."""
    return tell_supervisor(b"replace")


def tell_supervisor(line: bytes) -> bool:
    """In a worker that has said it is ready: one line to the supervisor. False if none."""
    if _to_supervisor is None:
        return False
    os.write(_to_supervisor, line + b"\n")
    return True


def is_worker() -> bool:
    """Whether a supervisor started this process (until it has said it is ready)."""
    return READY_FD_VARIABLE in os.environ


class ProcessSignals:
    """SIGTERM and SIGINT (Ctrl-C) stop gracefully, once; SIGHUP calls ``hangup``.

    A supervisor and the signal of a whole process group (a terminal's Ctrl-C, ``timeout``,
    systemd's control-group kill) both reach a worker, so a repeat during the stop is one
    line and changes nothing: the graceful stop keeps its ``--timeout-graceful-shutdown``.
    ``stopping`` runs inside the signal handler itself, before the reactor's next turn,
    for a supervisor that must not replace workers the same signal is stopping.
    """

    def __init__(self, reactor: Any, hangup: Callable[[], object],
                 stopping: Callable[[], None] = lambda: None, repeat_level: LogLevel = LogLevel.info) -> None:
        self._reactor = reactor
        self._hangup = hangup
        self._stopping_now = stopping
        self._repeat_level = repeat_level  # a worker expects its supervisor's SIGTERM after a Ctrl-C
        self.stopping = False

    def install(self) -> None:
        """Install the handlers once the reactor runs: Twisted installs its own as it starts,
        and keeps away from a SIGINT that is no longer Python's default."""
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hup)

    def _stop(self, number: int, frame: Any) -> None:
        name = signal.Signals(number).name
        if self.stopping:  # log from the reactor, never from inside a handler that may interrupt a write
            self._reactor.callFromThread(log.emit, self._repeat_level,
                                         "Received {signal} while stopping; the graceful stop goes on", signal=name)
            return
        self.stopping = True
        self._stopping_now()
        self._reactor.callFromThread(self._stop_gracefully, name)

    def _stop_gracefully(self, name: str) -> None:
        log.info("Received {signal}, shutting down.", signal=name)
        _stop_reactor(self._reactor)

    def _hup(self, number: int, frame: Any) -> None:
        if not self.stopping:
            self._reactor.callFromThread(self._hangup)
