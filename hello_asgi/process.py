"""The edges of a process hello-asgi owns: its exit status, and a worker's word to its supervisor."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

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
    reactor.stop()


def worker_ready() -> None:
    """In a worker: tell the supervisor this process is serving (nothing if not a worker)."""
    descriptor = os.environ.pop(READY_FD_VARIABLE, None)
    if descriptor is not None:
        os.write(int(descriptor), b"ready\n")
        os.close(int(descriptor))


def stop_once_on_signals() -> None:
    """Let the first SIGTERM or SIGINT stop the reactor, and a repeat only be noted.

    A supervisor and the signal of a whole process group (``timeout``, a shell's Ctrl-C,
    systemd's control-group kill) both reach a worker; Twisted's own handler would answer
    the second with a ReactorNotRunning traceback. Call it once the reactor runs, when
    Twisted's handlers are in place."""
    stopping = False

    def handle(number: int, frame: Any, first: Any) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            first(number, frame)

    for number in (signal.SIGTERM, signal.SIGINT):
        first = signal.getsignal(number)
        if callable(first):
            signal.signal(number, lambda number, frame, first=first: handle(number, frame, first))
