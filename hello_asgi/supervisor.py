"""``--workers N`` and ``--reload``: one process owns the listening sockets, workers serve.

The supervisor opens every listener once and starts each worker as the same ``twist
hello-asgi`` command, listening on the inherited sockets (``--listen fd:N``), so all of
them accept from the same queues and a worker that goes away refuses nothing: the others,
and the kernel's backlog, carry on. It replaces a worker that dies, restarts them one by
one on SIGHUP (each replacement is serving before the one it replaces is told to stop),
and with ``--reload`` does the same when a Python file under the app's directory changes.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .process import READY_FD_VARIABLE, exit_after_shutdown, stop_and_exit, stop_once_on_signals

log = Logger(namespace="hello_asgi.supervisor")


class _Worker(ProcessProtocol):
    """One worker process: ``ready`` fires once it serves, ``ended`` when it has exited."""

    def __init__(self, ready_fd: int) -> None:
        self._ready_fd = ready_fd
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[Any] = Deferred()
        self.pid = 0

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == self._ready_fd and b"ready" in data and not self.ready.called:
            self.ready.callback(None)

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(reason)
            self.ready.addErrback(lambda _: None)  # the supervisor hears of it by ended
        self.ended.callback(reason.value)

    def stop(self) -> Deferred[Any]:
        if not self.ended.called:
            self.transport.signalProcess("TERM")  # type: ignore[union-attr]
        return self.ended


class _NeverAccepts(Factory):
    """The factory of the supervisor's own listeners, which only ever hand their sockets on."""

    noisy = False
    protocol = Protocol


class Supervisor(Service):
    """Runs ``workers`` copies of ``command`` (argv without listeners) on ``listen``."""

    def __init__(self, command: list[str], listen: list[str], workers: int, reactor: Any,
                 watch: Path | None = None) -> None:
        self._command = command
        self._listen = listen
        self._count = workers
        self._reactor = reactor
        self._watch = watch
        self._ports: list[Any] = []
        self._workers: list[_Worker] = []
        self._stopping = False
        self._restarting: Deferred[None] | None = None
        self._mtimes: dict[Path, float] = {}
        self._poll: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        stop_once_on_signals()
        ensureDeferred(self._start()).addErrback(self._failed)

    async def _start(self) -> None:
        for description in self._listen:
            # Listen with Twisted, then never accept here: the workers accept from these sockets.
            port = await serverFromString(self._reactor, description).listen(_NeverAccepts())
            port.stopReading()
            self._ports.append(port)
            log.info("Listening on {description} for {count} worker(s)", description=description, count=self._count)
        for _ in range(self._count):
            self._spawn()
        signal.signal(signal.SIGHUP, lambda *_: self._reactor.callFromThread(self.restart, "SIGHUP"))
        if self._watch is not None:
            self._mtimes = dict(self._python_files())
            self._poll = LoopingCall(self._check_files)
            self._poll.clock = self._reactor
            self._poll.start(0.5, now=False)

    def _failed(self, failure: Any) -> None:
        log.critical("hello-asgi could not start: {error}", error=failure.getErrorMessage())
        stop_and_exit(self._reactor, 1)

    def _spawn(self) -> _Worker:
        inherited = {3 + index: port.fileno() for index, port in enumerate(self._ports)}
        ready_fd = 3 + len(inherited)
        listeners = [argument for fd in inherited for argument in ("--listen", f"fd:{fd}:domain={self._domain(fd)}")]
        worker = _Worker(ready_fd)
        environment = {**os.environ, READY_FD_VARIABLE: str(ready_fd)}
        process = self._reactor.spawnProcess(
            worker, self._command[0], [*self._command, *listeners], env=environment,
            childFDs={0: 0, 1: 1, 2: 2, **inherited, ready_fd: "r"},
        )
        worker.pid = process.pid
        log.info("Started worker {pid}", pid=process.pid)
        self._workers.append(worker)
        worker.ended.addCallback(self._ended, worker)
        return worker

    def _domain(self, fd: int) -> str:
        family = self._ports[fd - 3].socket.family
        return {socket.AF_INET: "INET", socket.AF_INET6: "INET6"}.get(family, "UNIX")

    def _ended(self, reason: Any, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
            if not self._stopping:
                log.warn("Worker {pid} exited ({reason}); starting another", pid=worker.pid, reason=reason)
                self._spawn()

    def restart(self, why: str) -> Deferred[None]:
        """Replace every worker, one at a time, each only once its replacement serves."""
        if self._restarting is None:
            log.info("Restarting {count} worker(s) one by one ({why})", count=len(self._workers), why=why)
            self._restarting = ensureDeferred(self._restart())
            self._restarting.addBoth(self._restarted)
        return self._restarting

    async def _restart(self) -> None:
        for old in list(self._workers):
            if self._stopping:
                return
            new = self._spawn()
            try:
                await new.ready
            except Exception:
                log.error("A new worker failed to start; keeping worker {pid}", pid=old.pid)
                return
            self._workers.remove(old)
            await old.stop()
        log.info("Restarted {count} worker(s)", count=len(self._workers))

    def _restarted(self, result: Any) -> None:
        self._restarting = None
        if result is not None:
            log.failure("Restart failed", result)

    def _python_files(self) -> Iterator[tuple[Path, float]]:
        assert self._watch is not None
        for path in self._watch.rglob("*.py"):
            try:
                yield path, path.stat().st_mtime
            except OSError:
                continue  # gone between listing and reading

    def _check_files(self) -> None:
        mtimes = dict(self._python_files())
        changed = sorted(str(path) for path in mtimes.keys() | self._mtimes.keys()
                         if mtimes.get(path) != self._mtimes.get(path))
        self._mtimes = mtimes
        if changed:
            self.restart(f"--reload: {changed[0]} changed")

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Each worker stops gracefully on its SIGTERM; then the sockets close; then exit 0."""
        log.info("Stopping {count} worker(s)", count=len(self._workers))
        await DeferredList([worker.stop() for worker in list(self._workers)])
        await DeferredList([port.stopListening() for port in self._ports])
        exit_after_shutdown(self._reactor, 0)
