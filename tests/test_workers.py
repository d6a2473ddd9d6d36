"""Processes: --workers under a supervisor, rolling restarts, --reload, and SIGTERM under load."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from .support import header, hello_app, parse_responses
from .test_cli import TWIST, _Server, free_port

PID_APP = """
import asyncio, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            phase = (await receive())["type"].split(".")[1]
            print("lifespan", phase, os.getpid(), flush=True)
            await send({"type": f"lifespan.{phase}.complete"})
            if phase == "shutdown":
                return
    if scope["type"] != "http":
        return
    print("app saw", scope["path"], flush=True)
    await asyncio.sleep(float(os.environ.get("APP_DELAY", "0")))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": (VERSION + " " + str(os.getpid()) + " " + scope["path"]).encode()})
"""


async def get(port: int, path: str = "/") -> bytes:
    """One request on a new connection; the body, or an OSError if no whole response came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    try:
        [(response, body)] = parse_responses(data)
    except Exception as error:
        raise ConnectionError(f"incomplete response {data!r}") from error
    if response.status_code != 200:
        raise ConnectionError(f"status {response.status_code}")
    return body


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``, from /proc (what is really running)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and stat.rsplit(")", 1)[1].split()[0] != "Z":
                found.add(int(entry))
    return found



class ProcessTests(unittest.TestCase):
    def start(self, *options: str, version: str = "one", delay: float = 0) -> tuple[_Server, int, Any, Path]:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "app.py").write_text(f"VERSION = {version!r}\n" + PID_APP)
        port = free_port()
        server = _Server()
        args = [*TWIST, "--log-format=text", "hello-asgi", "--app", "app:app", "--port", str(port), *options]
        environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
        process = reactor.spawnProcess(server, TWIST[0], args, env={**environment, "APP_DELAY": str(delay)},
                                       path=str(directory))
        self.addCleanup(self._kill_leftovers, server, process)
        return server, port, process, directory

    def _kill_leftovers(self, server: _Server, process: Any) -> Deferred[Any] | None:
        """After a test that failed before stopping it: stop the supervisor and its workers."""
        if server.ended.called:
            return None
        for pid in self.worker_pids(server):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.signalProcess("KILL")
        return server.ended

    async def until_up(self, port: int) -> bytes:
        for _ in range(400):
            try:
                return await get(port)
            except OSError:
                await asyncio.sleep(0.05)  # the processes are still starting
        return await get(port)

    async def stop(self, server: _Server, process: Any) -> tuple[int, Any]:
        process.signalProcess(signal.SIGTERM)
        return await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 60)  # type: ignore[no-any-return]

    @staticmethod
    def worker_pids(server: _Server) -> list[int]:
        return [int(pid) for pid in re.findall(rb"Started worker (\d+)", server.output)]

    @asyncio_test
    async def test_workers_are_replaced_when_they_die_and_stop_with_the_supervisor(self) -> None:
        server, port, process, _ = self.start("--workers", "2")
        first = int((await self.until_up(port)).split()[1])
        self.assertIn(first, self.worker_pids(server))
        replaced: Deferred[None] = Deferred()
        server.watch_for(b"Started worker", replaced)
        os.kill(first, signal.SIGKILL)
        await replaced.asFuture(asyncio.get_running_loop())
        self.assertIn(b"Worker %d exited" % first, server.output)
        replacement = self.worker_pids(server)[-1]
        if b"lifespan startup %d" % replacement not in server.output:
            started: Deferred[None] = Deferred()
            server.watch_for(b"lifespan startup %d" % replacement, started)
            await started.asFuture(asyncio.get_running_loop())
        for _ in range(20):  # the survivor and the replacement serve on
            self.assertNotEqual(int((await get(port)).split()[1]), first)
        pids = self.worker_pids(server)
        self.assertEqual(len(pids), 3)
        self.assertEqual(await self.stop(server, process), (0, None), server.output)
        # each worker ran the lifespan protocol: startup in all three, shutdown in the two stopped
        self.assertEqual(sorted(int(pid) for pid in re.findall(rb"lifespan startup (\d+)", server.output)), sorted(pids))
        self.assertEqual(sorted(int(pid) for pid in re.findall(rb"lifespan shutdown (\d+)", server.output)),
                         sorted(set(pids) - {first}))
        for pid in pids:
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)

    @asyncio_test
    async def test_sighup_restarts_the_workers_one_by_one_refusing_nothing(self) -> None:
        server, port, process, _ = self.start("--workers", "2")
        await self.until_up(port)
        old = set(self.worker_pids(server))
        restarted: Deferred[None] = Deferred()
        server.watch_for(b"Restarted 2 worker(s)", restarted)
        served: list[int] = []
        failures: list[Exception] = []

        async def keep_asking() -> None:
            while not restarted.called:
                try:
                    served.append(int((await get(port)).split()[1]))
                except OSError as error:
                    failures.append(error)

        asking = asyncio.ensure_future(keep_asking())
        process.signalProcess(signal.SIGHUP)
        await restarted.asFuture(asyncio.get_running_loop())
        await asking
        self.assertEqual(failures, [])
        new = set(self.worker_pids(server)) - old
        self.assertEqual(len(new), 2)
        self.assertIn(int((await get(port)).split()[1]), new)
        self.assertGreater(len(served), 0)
        self.assertEqual(await self.stop(server, process), (0, None), server.output)

    @asyncio_test
    async def test_reload_restarts_on_a_changed_python_file(self) -> None:
        server, port, process, directory = self.start("--reload")
        self.assertTrue((await self.until_up(port)).startswith(b"one "))
        restarted: Deferred[None] = Deferred()
        server.watch_for(b"Restarted 1 worker(s)", restarted)
        app = directory / "app.py"
        compiled = app.stat()
        app.write_text("VERSION = 'two'\n" + PID_APP)  # the same size as 'one'...
        os.utime(app, ns=(compiled.st_atime_ns, compiled.st_mtime_ns))  # ...and time: no .pyc may pass for it
        await restarted.asFuture(asyncio.get_running_loop())
        self.assertTrue((await get(port)).startswith(b"two "))
        self.assertIn(b"app.py changed", server.output)
        self.assertEqual(await self.stop(server, process), (0, None), server.output)

    @asyncio_test
    async def test_sigterm_under_load_answers_every_request_it_accepted(self) -> None:
        server, port, process, _ = self.start(delay=0.05)
        await self.until_up(port)
        completed: set[str] = set()
        stopped = False

        async def client(number: int) -> None:
            sequence = 0
            while not stopped:
                sequence += 1
                path = f"/c{number}-{sequence}"
                try:
                    body = await get(port, path)
                except OSError:
                    continue  # not accepted (refused, or never read): nothing was promised
                self.assertTrue(body.endswith(path.encode()))
                completed.add(path)

        clients = [asyncio.ensure_future(client(number)) for number in range(20)]
        while len(completed) < 100:
            await asyncio.sleep(0.05)  # let the load run a while before the signal
        code = await self.stop(server, process)
        stopped = True
        await asyncio.gather(*clients)
        accepted = {path.decode() for path in re.findall(rb"app saw (/c[0-9-]+)", server.output)}
        self.assertEqual(code, (0, None))
        self.assertGreater(len(accepted), 100)
        self.assertEqual(accepted - completed, set(), "requests the app got whose clients got no whole response")

    @asyncio_test
    async def test_a_broken_edit_then_sighup_then_a_fix_leaves_exactly_the_workers_asked_for(self) -> None:
        server, port, process, directory = self.start("--workers", "2")
        await self.until_up(port)
        while server.output.count(b"Serving http") < 2:
            await asyncio.sleep(0.05)  # both have imported the app: the edit must not reach a first start
        first = set(self.worker_pids(server))
        (directory / "app.py").write_text("VERSION = 'two'\nthis is not python\n")
        process.signalProcess(signal.SIGHUP)
        for attempt, delay in ((1, b"0.5"), (2, b"1.0"), (3, b"2.0")):  # one line an attempt, each pause doubled
            await self.seen(server, b"failed to start (attempt %d); keeping worker" % attempt)
            self.assertIn(b"(attempt %d); keeping worker" % attempt, server.output)
            self.assertIn(b"trying again in %s s" % delay, server.output)
            self.assertEqual(children(process.pid), first)  # the old two serve on, and nothing else runs
        self.assertTrue((await get(port)).startswith(b"one "))
        restarted: Deferred[None] = Deferred()
        server.watch_for(b"Restarted 2 worker(s)", restarted)
        (directory / "app.py").write_text("VERSION = 'three'\n" + PID_APP)
        await asyncio.wait_for(restarted.asFuture(asyncio.get_running_loop()), 30)
        await asyncio.sleep(3)  # longer than the next pause would have been: no late spawn appears
        workers = children(process.pid)
        self.assertEqual(len(workers), 2, server.output)
        self.assertFalse(workers & first)
        for _ in range(10):
            body = await get(port)
            self.assertTrue(body.startswith(b"three "), body)
            self.assertIn(int(body.split()[1]), workers)
        self.assertEqual(await self.stop(server, process), (0, None), server.output)

    @asyncio_test
    async def test_reload_ignores_a_virtualenv_and_a_broken_edit_then_a_fix_leaves_one_worker(self) -> None:
        server, port, process, directory = self.start("--reload")
        await self.until_up(port)
        await self.seen(server, b"Watching")
        (directory / ".venv" / "lib").mkdir(parents=True)
        (directory / ".venv" / "lib" / "site.py").write_text("x = 1\n")  # an install into the virtualenv
        (directory / "notes.txt").write_text("not python\n")
        failed: Deferred[None] = Deferred()
        server.watch_for(b"failed to start (attempt 1)", failed)
        (directory / "app.py").write_text("this is not python\n")
        await asyncio.wait_for(failed.asFuture(asyncio.get_running_loop()), 30)
        self.assertNotIn(b".venv", server.output)
        self.assertNotIn(b"notes.txt", server.output)
        restarted: Deferred[None] = Deferred()
        server.watch_for(b"Restarted 1 worker(s)", restarted)
        (directory / "app.py").write_text("VERSION = 'two'\n" + PID_APP)  # a change retries at once
        await asyncio.wait_for(restarted.asFuture(asyncio.get_running_loop()), 30)
        await asyncio.sleep(2)  # longer than the pause after the failure: no late spawn appears
        self.assertEqual(len(children(process.pid)), 1, server.output)
        self.assertTrue((await get(port)).startswith(b"two "))
        self.assertEqual(server.output.count(b"Restarting 1 worker(s)"), 2, server.output)
        self.assertEqual(await self.stop(server, process), (0, None), server.output)

    @asyncio_test
    async def test_a_worker_that_served_its_limit_is_replaced_refusing_nothing(self) -> None:
        server, port, process, _ = self.start("--limit-max-requests", "20", "--max-requests-jitter", "5")
        await self.until_up(port)
        served: list[int] = []
        failures: list[Exception] = []

        async def keep_asking() -> None:
            while len(set(served)) < 4:
                try:
                    served.append(int((await get(port)).split()[1]))
                except OSError as error:
                    failures.append(error)

        await asyncio.wait_for(asyncio.gather(*(keep_asking() for _ in range(4))), 60)
        self.assertEqual(failures, [])
        pids = self.worker_pids(server)
        self.assertLessEqual(set(served), set(pids))
        self.assertEqual(server.output.count(b"asking for a fresh worker"), len(pids) - 1, server.output)
        for count in (len([pid for pid in served if pid == worker]) for worker in pids[:2]):
            self.assertGreaterEqual(count, 20)  # each replaced worker served at least its limit
        while len(children(process.pid)) > 1:
            await asyncio.sleep(0.05)  # the last replaced worker finishing its requests
        self.assertEqual(await self.stop(server, process), (0, None), server.output)

    async def seen(self, server: _Server, text: bytes) -> None:
        """Wait until ``text`` is in the output (failing with the output after 30 s)."""
        if text not in server.output:
            seen: Deferred[None] = Deferred()
            server.watch_for(text, seen)
            try:
                await asyncio.wait_for(seen.asFuture(asyncio.get_running_loop()), 30)
            except asyncio.TimeoutError:
                self.fail(f"no {text!r} in {server.output.decode(errors='replace')}")


class ShutdownRaceTests(unittest.TestCase):
    @asyncio_test
    async def test_a_connection_accepted_just_before_shutdown_gets_its_request_answered(self) -> None:
        server = await serve(self, hello_app)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        while not server.service.factory.connections:  # accepted, nothing sent yet
            await asyncio.sleep(0.01)
        server.service.factory.shutdown()  # what stopService does once it stopped listening
        writer.write(b"GET /late HTTP/1.1\r\nhost: x\r\n\r\n")
        [(response, body)] = parse_responses(await asyncio.wait_for(reader.read(), 10))
        writer.close()
        self.assertEqual((response.status_code, body), (200, b"hello /late "))
        self.assertEqual(header(response, b"connection"), b"close")

