"""``--workers N`` and ``--reload``: one process owns the listening sockets, workers serve.

The supervisor opens every listener once and starts each worker as the same ``twist
hello-asgi`` command, listening on the inherited sockets (``--listen fd:N``), so all of
them accept from the same queues and a worker that goes away refuses nothing: the others,
and the kernel's backlog, carry on.

It keeps ``N`` slots, each held by one worker. A slot whose worker died, or whose worker
runs code older than the last SIGHUP or ``--reload`` change, is filled one slot at a time:
a replacement starts, and only once it serves does it take the slot and the old worker
get told to stop. A replacement that fails to start is tried again after a pause that
doubles each time (0.5 s up to 30 s) while the old worker keeps serving, so a broken
edit never leaves more or fewer than ``N`` slots, and never a spawn every half second.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger

from .metrics import REPORT_VARIABLE, Figures, serve_metrics
from .process import READY_FD_VARIABLE, ProcessSignals, exit_after_shutdown, stop_and_exit

log = Logger(namespace="hello_asgi.supervisor")

FIRST_RETRY = 0.5  # seconds before a failed spawn is tried again; doubled on each failure
LAST_RETRY = 30.0  # the longest pause between attempts


class _Worker(ProcessProtocol):
    """One worker process: ``ready`` fires once it serves, ``ended`` when it has exited.
    ``generation`` is the supervisor's restart count when it was started."""

    # ProcessProtocol's is Optional, for before makeConnection; spawnProcess connects the
    # worker before it returns it, so every later call finds the process transport set.
    transport: IProcessTransport

    def __init__(self, ready_fd: int, generation: int) -> None:
        self._ready_fd = ready_fd
        self.generation = generation
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[Any] = Deferred()
        self.pid = 0
        self.retiring = False  # it asked to be replaced (--limit-max-requests)
        self.figures: Figures | None = None  # its last report (--metrics-listen)
        self._unread = b""
        self.asked_to_retire: Callable[[_Worker], None] = lambda worker: None

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """The worker's lines: ``ready``, ``replace``, ``metrics {...}``."""
        if childFD != self._ready_fd:
            return
        *lines, self._unread = (self._unread + data).split(b"\n")
        for line in lines:
            self._heard(line)

    def _heard(self, line: bytes) -> None:
        if line == b"ready" and not self.ready.called:
            self.ready.callback(None)
        elif line == b"replace" and not self.retiring:
            self.retiring = True
            self.asked_to_retire(self)
        elif line.startswith(b"metrics "):
            self.figures = Figures.from_snapshot(line[8:].decode())

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(reason)
            self.ready.addErrback(lambda _: None)  # the supervisor hears of it by ended
        self.ended.callback(reason.value)

    def stop(self) -> Deferred[Any]:
        if not self.ended.called:
            self.transport.signalProcess("TERM")
        return self.ended


class _NeverAccepts(Factory):
    """The factory of the supervisor's own listeners, which only ever hand their sockets on."""

    noisy = False
    protocol = Protocol


class Supervisor(Service):
    """Runs ``workers`` copies of ``command`` (argv without listeners) on ``listen``.

    ``watch``, for ``--reload``, is an object with ``start(changed)`` and ``stop()`` that
    calls ``changed(path)`` when the app's files change.
    """

    def __init__(self, command: list[str], listen: list[str], workers: int, reactor: Any,
                 watch: Any = None, environment: dict[str, str] | None = None,
                 metrics_listen: str | None = None) -> None:
        self._command = command
        self._environment = dict(os.environ if environment is None else environment)
        self._metrics_listen = metrics_listen
        self._retired = Figures()  # the figures of workers gone, so counters never go back
        self._metrics_port: list[Any] = []
        if metrics_listen is not None:
            self._environment[REPORT_VARIABLE] = "1"
        self._listen = listen
        self._reactor = reactor
        self._watch = watch
        self._ports: list[Any] = []
        self._slots: list[_Worker | None] = [None] * workers
        self._processes: set[_Worker] = set()  # every worker alive: in a slot, starting, or stopping
        self._generation = 0
        self._restart_pending = False
        self._failures = 0
        self._filling: Deferred[None] | None = None
        self._wake: Deferred[None] | None = None
        self._stopping = False

    @property
    def workers(self) -> list[_Worker]:
        """The workers holding the slots now."""
        return [worker for worker in self._slots if worker is not None]

    def startService(self) -> None:
        super().startService()
        ProcessSignals(self._reactor, lambda: self.restart("SIGHUP"), self._stop_replacing).install()
        ensureDeferred(self._start()).addErrback(self._failed)

    def _stop_replacing(self) -> None:
        self._stopping = True  # the same signal may be stopping the workers: do not replace them

    async def _start(self) -> None:
        for description in self._listen:
            # Listen with Twisted, then never accept here: the workers accept from these sockets.
            port = await serverFromString(self._reactor, description).listen(_NeverAccepts())
            port.stopReading()
            self._ports.append(port)
            log.info("Listening on {description} for {count} worker(s)", description=description,
                     count=len(self._slots))
        if self._metrics_listen is not None:
            self._metrics_port = [await serve_metrics(self._reactor, self._metrics_listen, self.figures)]
        for index in range(len(self._slots)):  # all at once: start-up is not a rolling restart
            self._slots[index] = self._spawn()
        if self._watch is not None:
            self._watch.start(lambda path: self.restart(f"--reload: {path} changed"))

    def _failed(self, failure: Any) -> None:
        log.critical("hello-asgi could not start: {error}", error=failure.getErrorMessage())
        stop_and_exit(self._reactor, 1)

    def _spawn(self) -> _Worker:
        inherited = {3 + index: port.fileno() for index, port in enumerate(self._ports)}
        ready_fd = 3 + len(inherited)
        listeners = [argument for fd in inherited for argument in ("--listen", f"fd:{fd}:domain={self._domain(fd)}")]
        worker = _Worker(ready_fd, self._generation)
        worker.asked_to_retire = self._retire
        environment = {**self._environment, READY_FD_VARIABLE: str(ready_fd)}
        process = self._reactor.spawnProcess(
            worker, self._command[0], [*self._command, *listeners], env=environment,
            childFDs={0: 0, 1: 1, 2: 2, **inherited, ready_fd: "r"},
        )
        worker.pid = process.pid
        log.info("Started worker {pid}", pid=process.pid)
        self._processes.add(worker)
        worker.ended.addCallback(self._ended, worker)
        return worker

    def _domain(self, fd: int) -> str:
        family = self._ports[fd - 3].socket.family
        return {socket.AF_INET: "INET", socket.AF_INET6: "INET6"}.get(family, "UNIX")

    def figures(self) -> Figures:
        """Every worker's last report, and those of workers gone, summed."""
        total = Figures()
        total.add(self._retired)
        for worker in self._processes:
            if worker.figures is not None:
                total.add(worker.figures)
        return total

    def _ended(self, reason: Any, worker: _Worker) -> None:
        self._processes.discard(worker)
        if worker.figures is not None:
            self._retired.add(worker.figures, gauges=False)
        if worker in self._slots:
            self._slots[self._slots.index(worker)] = None
            if not self._stopping:
                log.warn("Worker {pid} exited ({reason}); starting another", pid=worker.pid, reason=reason)
                self._fill()

    def _retire(self, worker: _Worker) -> None:
        if worker in self._slots and not self._stopping:
            log.info("Replacing worker {pid}, which has served its --limit-max-requests", pid=worker.pid)
            self._fill()

    def restart(self, why: str) -> Deferred[None]:
        """Replace every worker, one at a time, each only once its replacement serves.
        The Deferred fires once every slot holds a worker started after this call."""
        log.info("Restarting {count} worker(s) one by one ({why})", count=len(self._slots), why=why)
        self._generation += 1
        self._restart_pending = True
        self._failures = 0  # a new edit or signal deserves a prompt try
        return self._fill()

    def _fill(self) -> Deferred[None]:
        """Start filling the slots, or, while a failed spawn waits, try again now."""
        waiter: Deferred[None] = Deferred()
        if self._filling is None:
            filling = self._filling = ensureDeferred(self._fill_slots())
            filling.addBoth(self._filled)
        else:
            filling = self._filling
            if self._wake is not None:
                self._wake.callback(None)
        filling.addBoth(lambda _: waiter.callback(None))
        return waiter

    def _next_slot(self) -> int | None:
        """An empty slot first, then one whose worker is older than the last restart or has
        asked to be replaced."""
        for index, worker in enumerate(self._slots):
            if worker is None:
                return index
        for index, worker in enumerate(self._slots):
            if worker is not None and (worker.generation < self._generation or worker.retiring):
                return index
        return None

    async def _fill_slots(self) -> None:
        while not self._stopping and (index := self._next_slot()) is not None:
            new = self._spawn()
            self._retired.restarts += 1
            try:
                await new.ready
            except Exception:
                await self._retry_later(new, self._slots[index])
                continue
            self._failures = 0
            old, self._slots[index] = self._slots[index], new
            if old is not None:
                await old.stop()
        if self._restart_pending and not self._stopping:
            self._restart_pending = False
            log.info("Restarted {count} worker(s)", count=len(self._slots))

    async def _retry_later(self, failed: _Worker, kept: _Worker | None) -> None:
        self._failures += 1
        delay = min(FIRST_RETRY * 2 ** (self._failures - 1), LAST_RETRY)
        keeping = f"; keeping worker {kept.pid}" if kept is not None else ""
        log.error("Worker {pid} failed to start (attempt {attempt}){keeping}; trying again in {delay} s",
                  pid=failed.pid, attempt=self._failures, keeping=keeping, delay=delay)
        self._wake = Deferred()
        call = self._reactor.callLater(delay, self._wake.callback, None)
        await self._wake
        self._wake = None
        if call.active():
            call.cancel()

    def _filled(self, result: Any) -> None:
        self._filling = None
        if result is not None:
            log.failure("Replacing workers failed", result)
        return None

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        if self._watch is not None:
            self._watch.stop()
        if self._wake is not None:
            self._wake.callback(None)
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Each worker stops gracefully on its SIGTERM; then the sockets close; then exit 0."""
        log.info("Stopping {count} worker(s)", count=len(self._processes))
        await DeferredList([worker.stop() for worker in list(self._processes)])
        await DeferredList([port.stopListening() for port in [*self._ports, *self._metrics_port]])
        exit_after_shutdown(self._reactor, 0)
