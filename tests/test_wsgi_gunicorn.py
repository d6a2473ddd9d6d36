"""Flask and Django apps, and the hello world, through hello-asgi and through Gunicorn (gthread
worker): the same requests, and the answers diffed (status, headers, body, environ); 200 MB
up and down with hello-asgi's memory held to a bound."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from hello_asgi.testing import asyncio_test

from .support import get_when_up
from .test_cli import TWIST, _Server, free_port

TESTS = str(Path(__file__).parent)
BIG = 200_000_000
ZEROS_DIGEST = hashlib.sha256(bytes(BIG)).hexdigest()
# Headers that say which server answered, when, or how the connection goes on.
UNCOMPARED = {"date", "server", "connection", "keep-alive"}
# Environ values that differ between any two servers: the ports, and the objects.
PER_SERVER = {"REMOTE_PORT", "SERVER_PORT", "HTTP_HOST"}
# What Gunicorn adds beyond PEP 3333 (its own extensions), and hello-asgi does not.
GUNICORN_ONLY = {"RAW_URI", "gunicorn.socket", "wsgi.early_hints"}
# PEP 3333 allows these empty or absent: hello-asgi gives them empty, Gunicorn leaves them out.
EMPTY_NOT_ABSENT = {"CONTENT_TYPE", "CONTENT_LENGTH"}


def gunicorn_available() -> bool:
    try:
        import gunicorn  # noqa: F401
        import flask  # noqa: F401
    except ImportError:
        return False
    return True


class Pair:
    """hello-asgi and Gunicorn, each a process serving ``app`` from ``tests/wsgi_apps.py``."""

    def __init__(self, test: unittest.TestCase, app: str) -> None:
        self.test = test
        self.ports = {"hello-asgi": free_port(), "gunicorn": free_port()}
        self.processes: dict[str, tuple[_Server, Any]] = {}
        self.start("hello-asgi", [*TWIST, "hello-asgi", "--app", app, "--app-dir", TESTS, "--no-access-log",
                                  "--port", str(self.ports["hello-asgi"]), "--wsgi-threads", "4"])
        self.start("gunicorn", [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "4",
                                "--no-control-socket", "--chdir", TESTS, "-b",
                                f"127.0.0.1:{self.ports['gunicorn']}", app])

    def start(self, name: str, args: list[str]) -> None:
        server = _Server()
        process = reactor.spawnProcess(server, args[0], args, env=os.environ, path=TESTS)
        self.processes[name] = (server, process)
        self.test.addCleanup(lambda: Deferred.fromFuture(asyncio.ensure_future(self.stop(name))))

    async def stop(self, name: str) -> None:
        server, process = self.processes[name]
        if not server.ended.called:
            process.signalProcess(signal.SIGTERM)
            await asyncio.wait_for(server.ended.asFuture(asyncio.get_running_loop()), 30)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def up(self) -> None:
        for name in self.ports:
            await get_when_up(self.url(name) + "/hello")

    def peak_rss(self, name: str) -> int:
        """The server's largest resident set so far, in bytes (VmHWM)."""
        pid = self.processes[name][1].pid
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    async def both(self, method: str, path: str, **options: Any) -> dict[str, httpx.Response]:
        answers = {}
        chunks = options.get("chunks")
        for name in self.ports:
            # Gunicorn, the reference, now and then cuts a chunked upload off (the client
            # reads a reset: 18 of 40 times under load, Django app): its answer is asked
            # again, up to twice; hello-asgi's, the server under test, never is.
            for attempt in range(3 if name == "gunicorn" else 1):
                try:
                    async with httpx.AsyncClient(timeout=60) as client:
                        answers[name] = await client.request(
                            method, self.url(name) + path,
                            content=_chunked(chunks) if chunks is not None else options.get("content"),
                            headers=options.get("headers"))
                    break
                except httpx.ReadError:
                    if name != "gunicorn" or attempt == 2:
                        raise
        return answers


async def _chunked(parts: list[bytes]) -> Any:
    for part in parts:
        yield part


def headers_of(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((name.lower(), value) for name, value in response.headers.multi_items()
                  if name.lower() not in UNCOMPARED)


def environ_diff(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The keys whose values differ, apart from those that differ between any two servers."""
    keys_ours, keys_theirs = set(ours.pop("keys")), set(theirs.pop("keys"))
    for key in EMPTY_NOT_ABSENT:
        if ours.get(key) == "" and theirs.get(key) == "<absent>":
            theirs[key] = ""
    diff = {key: (ours.get(key), theirs.get(key)) for key in set(ours) | set(theirs)
            if key not in PER_SERVER and ours.get(key) != theirs.get(key)}
    missing = keys_theirs - keys_ours - GUNICORN_ONLY
    if missing:
        diff["keys only Gunicorn gives"] = (None, sorted(missing))
    return diff


class GunicornDiffTests(unittest.TestCase):
    if not gunicorn_available():
        skip = "needs gunicorn and flask (pip install -e '.[test]')"

    def compare(self, answers: dict[str, httpx.Response], what: str) -> None:
        ours, theirs = answers["hello-asgi"], answers["gunicorn"]
        self.assertEqual(ours.status_code, theirs.status_code, what)
        self.assertEqual(headers_of(ours), headers_of(theirs), what)
        self.assertEqual(ours.content, theirs.content, what)

    async def diff_app(self, app: str) -> None:
        pair = Pair(self, app)
        await pair.up()
        for method, path in [("GET", "/hello"), ("HEAD", "/hello"), ("GET", "/stream"), ("GET", "/nothing-here"),
                             ("GET", "/download?size=3000001"), ("GET", "/download?size=3000001&length=1"),
                             ("HEAD", "/download?size=3000001&length=1")]:
            self.compare(await pair.both(method, path), f"{method} {path}")
        body = os.urandom(2_000_003)
        self.compare(await pair.both("POST", "/upload", content=body), "POST /upload with Content-Length")
        self.compare(await pair.both("POST", "/upload", chunks=[body[:1000], body[1000:]]), "POST /upload chunked")
        headers = [("X-Twice", "one"), ("X-Twice", "two"), ("Accept", "text/plain"), ("Cookie", "a=1")]
        for method, options in [("GET", {"headers": headers}), ("POST", {"headers": headers, "content": b"abc"}),
                                ("POST", {"headers": headers, "chunks": [b"ab", b"c"]})]:
            answers = await pair.both(method, "/environ?q=%C3%A9&r=1", **options)
            self.assertEqual(answers["hello-asgi"].status_code, 200)
            diff = environ_diff(answers["hello-asgi"].json(), answers["gunicorn"].json())
            self.assertEqual(diff, {}, f"{method} /environ {options}")

    @asyncio_test
    async def test_flask_app_as_gunicorn_serves_it(self) -> None:
        await self.diff_app("wsgi_apps:flask_app")

    @asyncio_test
    async def test_django_app_as_gunicorn_serves_it(self) -> None:
        await self.diff_app("wsgi_apps:django_app")

    @asyncio_test
    async def test_the_hello_world_environ_key_by_key(self) -> None:
        pair = Pair(self, "hello_asgi.demo:wsgi")
        for name in pair.ports:
            await get_when_up(pair.url(name))
        headers = [("X-Twice", "one"), ("X-Twice", "two")]
        answers = await pair.both("GET", "/a%20path/caf%C3%A9?x=1&y=%20", headers=headers)
        ours, theirs = answers["hello-asgi"].json(), answers["gunicorn"].json()
        differ = {key: (ours.get(key, "<absent>"), theirs.get(key, "<absent>")) for key in set(ours) | set(theirs)
                  if ours.get(key) != theirs.get(key)}
        objects = {"wsgi.input", "wsgi.errors", "wsgi.file_wrapper", "SERVER_SOFTWARE"}  # each server's own
        self.assertEqual(set(differ), PER_SERVER | objects | GUNICORN_ONLY | EMPTY_NOT_ABSENT, differ)
        for key in EMPTY_NOT_ABSENT:
            self.assertEqual((ours[key], key in theirs), ("", False))
        for key in GUNICORN_ONLY:
            self.assertNotIn(key, ours)

    @asyncio_test
    async def test_200_mb_up_and_down_in_bounded_memory(self) -> None:
        for app in ("wsgi_apps:flask_app", "wsgi_apps:django_app"):
            pair = Pair(self, app)
            await pair.up()
            before = pair.peak_rss("hello-asgi")
            upload = Path(self.mktemp())
            with open(upload, "wb") as file:
                file.truncate(BIG)  # sparse: 200 MB of zeros that take no disk
            expected = {"size": BIG, "sha256": ZEROS_DIGEST}
            for name in pair.ports:
                result = await curl("--data-binary", f"@{upload}", pair.url(name) + "/upload")
                self.assertEqual(json.loads(result), expected, f"{app} {name}: upload")
                if "flask" in app:  # Django reads no body without Content-Length, under any WSGI server
                    result = await curl("-X", "POST", "-T", str(upload), "-H", "Transfer-Encoding: chunked",
                                        pair.url(name) + "/upload")
                    self.assertEqual(json.loads(result), expected, f"{app} {name}: chunked upload")
                download = await curl_digest(pair.url(name) + f"/download?size={BIG}")
                self.assertEqual(download, (BIG, pattern_digest(BIG)), name)
            grown = pair.peak_rss("hello-asgi") - before
            self.assertLess(grown, 40 * 1024 * 1024, f"{app}: hello-asgi grew by {grown} bytes")


def pattern_digest(size: int) -> str:
    """The SHA-256 of ``wsgi_apps.pattern(size)`` (that module is not imported here: it
    configures Django for its process)."""
    block = bytes(range(256)) * 4096
    hashed = hashlib.sha256()
    while size > 0:
        hashed.update(block[:size])
        size -= len(block)
    return hashed.hexdigest()


# curl runs as a Twisted process, not asyncio's: under uvloop, libuv takes SIGCHLD for its own
# children and Twisted never hears that its servers ended (they stay zombies, and stop() waits).
CURL = ["curl", "-sS", "--fail", "--max-time", "60"]


async def curl(*args: str) -> bytes:
    output, errors, code = await getProcessOutputAndValue(CURL[0], [*CURL[1:], *args]).asFuture(
        asyncio.get_running_loop())
    assert code == 0, (args, code, errors)
    return output


class _Hashing(ProcessProtocol):
    """A process whose output is hashed as it comes, not kept."""

    def __init__(self) -> None:
        self.hashed = hashlib.sha256()
        self.size = 0
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.hashed.update(data)
        self.size += len(data)

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


async def curl_digest(url: str) -> tuple[int, str]:
    """Download ``url`` with curl, hashing it as it comes: its size and SHA-256."""
    hashing = _Hashing()
    reactor.spawnProcess(hashing, CURL[0], [*CURL, url], env=os.environ)
    code = await asyncio.wait_for(hashing.ended.asFuture(asyncio.get_running_loop()), 90)
    assert code == 0, code
    return hashing.size, hashing.hashed.hexdigest()
