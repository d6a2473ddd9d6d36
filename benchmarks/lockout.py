"""The lockout soak (issue 14): each hostile shape thousands of times, then a fresh client.

    python benchmarks/lockout.py --rounds 2000

Starts ``twist hello-asgi`` on the demo app over TLS with ``--limit-concurrency 5``, so
that five leaked connections would give every later client a 503, and short keep-alive
and close timeouts. Then, one shape after another, each ``--rounds`` times (the large
uploads and the silent clients fewer): an error response over TLS and a client that
closes; a TLS client that goes silent after its response; a body the app does not read,
then a second request on the connection; a large upload the app does not read; a
pipelining client that never reads. After each shape it waits until the server holds no
more descriptors than at the start, and at the end a fresh client must be served. The
server's descriptors are read from ``/proc/PID/fd``. It prints one JSON object; every
request goes to 127.0.0.1 and the run ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hello_asgi.tls import development_certificate  # noqa: E402

LIMIT = 5


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def settle(pid: int, baseline: int, timeout: float = 30.0) -> float:
    """Seconds until the server holds no more descriptors than ``baseline`` (fails after ``timeout``)."""
    start = time.monotonic()
    while descriptors(pid) > baseline:
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"the server still holds {descriptors(pid) - baseline} descriptors more")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def tls_error(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    writer.write(b"BAD REQUEST\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data[:12]


def silent_tls(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    tls = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"}" not in data:
        data += tls.recv(65536)
    return tls  # never read again, never closed until the server gave up on it


async def unread_body(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    body = b"x" * 140000
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data[:12] if data.count(b"HTTP/1.1 200") == 2 else b"not both answered"


async def large_upload(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    size = 20 * 1024 * 1024
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
    data = b""
    try:
        data = await asyncio.wait_for(reader.read(), 30)
    except (ConnectionError, ssl.SSLError):
        pass
    writer.close()
    return data[:12]


async def never_reads(port: int, context: ssl.SSLContext) -> bytes:
    """Pipeline 20,000 requests and read nothing; meanwhile another client asks once: its answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20000)
    await asyncio.sleep(0.5)
    other_reader, other = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    other.write(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = (await asyncio.wait_for(other_reader.read(), 10))[:12]
    other.close()
    writer.transport.abort()
    return answer


async def main(arguments: argparse.Namespace) -> dict[str, object]:
    cert, key, _ = development_certificate(Path(tempfile.mkdtemp()))
    context = ssl.create_default_context(cafile=str(cert))
    context.set_alpn_protocols(["http/1.1"])
    port = arguments.port
    server = subprocess.Popen(
        [sys.executable, "-m", "twisted", "hello-asgi", "--app", "hello_asgi.demo:asgi", "--port", str(port),
         "--cert", str(cert), "--key", str(key), "--limit-concurrency", str(LIMIT), "--no-access-log",
         "--timeout-keep-alive", "0.3", "--timeout-close", "0.5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        baseline = descriptors(server.pid)
        results: dict[str, object] = {"limit": LIMIT, "server descriptors at start": baseline}
        rounds = arguments.rounds
        for name, shape, count in (("TLS error response", tls_error, rounds),
                                   ("body the app ignores", unread_body, rounds),
                                   ("20 MiB upload the app ignores", large_upload, max(rounds // 100, 5)),
                                   ("pipelining client that never reads", never_reads, max(rounds // 100, 5))):
            start = time.monotonic()
            answers: dict[str, int] = {}
            for _ in range(count):
                answer = (await shape(port, context)).decode("latin-1")
                answers[answer] = answers.get(answer, 0) + 1
            results[name] = {"times": count, "answers": answers, "seconds": round(time.monotonic() - start, 1),
                             "seconds until released": round(await settle(server.pid, baseline), 2)}
        start = time.monotonic()
        silent = 0
        for _ in range(max(rounds // 20, 5)):
            clients = [await asyncio.to_thread(silent_tls, port, context) for _ in range(LIMIT)]
            await settle(server.pid, baseline)  # every slot given back while the clients still hang on
            for client in clients:
                client.close()
            silent += LIMIT
        results["silent TLS clients"] = {"times": silent, "seconds": round(time.monotonic() - start, 1)}
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        writer.write(b"GET /fresh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        results["fresh client"] = (await asyncio.wait_for(reader.read(), 10))[:15].decode()
        writer.close()
        await settle(server.pid, baseline)
        results["server descriptors at end"] = descriptors(server.pid)
        return results
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8437)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
