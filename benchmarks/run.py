"""hello-asgi against its peers, in one run, on one machine: a table of figures and ratios.

    python3 benchmarks/run.py [--scenario http1|http1-unix|h2c|h2-tls|ws-echo|ws-large|ws-idle|http-idle]
                              [--duration 10] [--connections N] [--servers a,b]

Each server runs one process pinned to CPU 0; the load generator (wrk, h2load, or
ws_load.py on the websockets client) runs pinned to CPU 1. The peers are installed into benchmarks/.venv, with hello-asgi itself
(reinstalled from this checkout on every run, so the figures are for the code in front of you).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv"
BIN = VENV / "bin"
PEERS = ["uvicorn", "httptools", "uvloop", "websockets", "hypercorn", "daphne", "granian"]
HTTP = ("http1", "h2c", "h2-tls")
WS = ("ws-echo", "ws-large", "ws-idle")


@dataclass
class Server:
    name: str
    command: Callable[[int, "TLS | None"], list[str]]
    protocols: tuple[str, ...]
    unix: Callable[[str], list[str]] | None = None  # the command serving HTTP on a UNIX socket at a path


@dataclass
class TLS:
    cert: str
    key: str


SERVERS = [
    Server("hello-asgi", lambda port, tls: [
        str(BIN / "twist"), "hello-asgi", "--app", "app:app", "--app-dir", str(HERE), "--port", str(port),
        "--no-access-log", "--limit-concurrency", "20000", "--timeout-keep-alive", "300",
        *(["--cert", tls.cert, "--key", tls.key] if tls else [])], (*HTTP, *WS, "http-idle", "http1-unix"),
        lambda path: [str(BIN / "twist"), "hello-asgi", "--app", "app:app", "--app-dir", str(HERE),
                      "--listen", f"unix:{path}", "--no-access-log"]),
    Server("hello-asgi --reactor=epoll (apps in a thread)", lambda port, tls: [
        str(BIN / "twist"), "--reactor=epoll", "hello-asgi", "--app", "app:app", "--app-dir", str(HERE),
        "--port", str(port), "--no-access-log", "--limit-concurrency", "20000"], ("http1", "h2c", "ws-echo")),
    Server("hello-asgi ASGIResource in twisted.web (epoll)", lambda port, tls: [
        "env", f"PORT={port}", str(BIN / "twistd"), "--pidfile=", "-l", "/dev/null", "-ny", str(HERE / "resource.tac")],
        ("http1", "ws-echo")),
    Server("uvicorn-h11", lambda port, tls: [
        str(BIN / "uvicorn"), "app:app", "--port", str(port), "--http", "h11", "--loop", "asyncio",
        "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "300"], ("http1",)),
    Server("uvicorn-httptools-uvloop", lambda port, tls: [
        str(BIN / "uvicorn"), "app:app", "--port", str(port), "--http", "httptools", "--loop", "uvloop",
        "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "300"], ("http1", *WS, "http-idle", "http1-unix"),
        lambda path: [str(BIN / "uvicorn"), "app:app", "--uds", path, "--http", "httptools", "--loop", "uvloop",
                      "--no-access-log", "--log-level", "warning"]),
    Server("hypercorn", lambda port, tls: [
        str(BIN / "hypercorn"), "app:app", "-b", f"127.0.0.1:{port}", "--keep-alive", "300",
        *(["--certfile", tls.cert, "--keyfile", tls.key] if tls else [])], (*HTTP, *WS, "http-idle", "http1-unix"),
        lambda path: [str(BIN / "hypercorn"), "app:app", "-b", f"unix:{path}"]),
    Server("daphne", lambda port, tls: [
        str(BIN / "daphne"), "-v", "0",
        *(["-e", f"ssl:{port}:interface=127.0.0.1:privateKey={tls.key}:certKey={tls.cert}"] if tls
          else ["-b", "127.0.0.1", "-p", str(port)]), "app:app"], ("http1", "h2-tls", *WS, "http-idle", "http1-unix"),
        lambda path: [str(BIN / "daphne"), "-v", "0", "-u", path, "app:app"]),
    Server("granian", lambda port, tls: [
        str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--runtime-threads", "1", "--no-access-log",
        *(["--ssl-certificate", tls.cert, "--ssl-keyfile", tls.key] if tls else []), "app:app"],
        (*HTTP, *WS, "http-idle")),
    Server("bare-h2 (ceiling)", lambda port, tls: [
        str(BIN / "python"), str(HERE / "bare_h2.py"), str(port), *([tls.cert, tls.key] if tls else [])],
        ("h2c", "h2-tls")),
]


def install() -> None:
    if not BIN.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(BIN / "pip"), "install", "-q", *PEERS, str(ROOT)], check=True)
    else:
        subprocess.run([str(BIN / "pip"), "install", "-q", "--force-reinstall", "--no-deps", str(ROOT)], check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(address: int | str, process: subprocess.Popen[bytes]) -> None:
    """Until ``process`` accepts on ``address``: a port on 127.0.0.1, or a UNIX socket's path."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            if isinstance(address, int):
                socket.create_connection(("127.0.0.1", address), timeout=0.5).close()
            else:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(address)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("did not listen within 20 s")


NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
error_log {dir}/nginx-error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    upstream app {{ server unix:{socket}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


def nginx_in_front(port: int, path: str, server: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """nginx on CPU 1 (beside the load), listening on ``port`` and passing to the server's
    UNIX socket at ``path`` over keep-alive connections, as it would in production."""
    wait_until_up(path, server)
    conf = VENV / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=VENV, socket=path, port=port))
    return subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", str(conf), "-p", str(VENV)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wrk(url: str, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)] if p99 else 0
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p99_ms": float(p99.group(1)) * scale if p99 else 0.0,
        "errors": (int(errors.group(1)) if errors else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    }


def h2load(url: str, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(["taskset", "-c", "1", "h2load", f"-c{min(connections, 10)}", "-m10", "-D", str(duration), url],
                         capture_output=True, text=True).stdout
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    failed = re.search(r"(\d+) failed, (\d+) errored", out)
    if not rps or float(rps.group(1)) == 0:
        raise RuntimeError("h2load served nothing: " + out.strip().splitlines()[-1] if out else "no output")
    latency = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)  # the mean; h2load gives no p99
    return {
        "rps": float(rps.group(1)),
        "p99_ms": 0.0 if not latency else _ms(latency.group(1)),
        "errors": int(failed.group(1)) + int(failed.group(2)) if failed else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def ws_load(mode: str) -> Callable[..., dict[str, float]]:
    def load(url: str, duration: int, connections: int) -> dict[str, float]:
        out = subprocess.run(["taskset", "-c", "1", str(BIN / "python"), str(HERE / "ws_load.py"), mode, url,
                              str(connections), str(duration)], capture_output=True, text=True, check=True).stdout
        return {"rps": json.loads(out.splitlines()[-1])["rate"], "p99_ms": 0.0, "errors": 0}
    return load


def _session_stats(session: int) -> list[list[str]]:
    """/proc/PID/stat fields (after the command name) of every process in the server's
    session: Granian forks a worker, and its work counts too."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            found.append(fields)
    return found


def rss_kib(session: int) -> int:
    return sum(int(fields[21]) for fields in _session_stats(session)) * os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_seconds(session: int) -> float:
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in _session_stats(session))
    return ticks / os.sysconf("SC_CLK_TCK")


def idle_memory(url: str, session: int, connections: int) -> dict[str, float]:
    """KiB of server memory per idle connection (WebSocket, or HTTP/1.1 keep-alive after one
    request): RSS with them open, less RSS before."""
    if url.startswith("http"):
        wrk(url, 1, 1)  # warm-up: every module a request needs is loaded
    else:
        ws_load("echo")(url, 1, 1)  # warm-up: every module a WebSocket needs is loaded
    time.sleep(1)
    before = rss_kib(session)
    client = subprocess.Popen(["taskset", "-c", "1", str(BIN / "python"), str(HERE / "ws_load.py"), "idle", url,
                               str(connections)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("the idle clients could not all connect")
        time.sleep(2)
        after = rss_kib(session)
        client.stdin.close()
        still_open = json.loads(client.stdout.readline())["open"]
    finally:
        client.kill()
        client.wait()
    return {"rps": (after - before) / connections, "p99_ms": 0.0, "errors": connections - still_open}


SCENARIOS = {"http1": ("http", wrk), "http1-unix": ("http", wrk), "h2c": ("http", h2load), "h2-tls": ("https", h2load),
             "ws-echo": ("ws", ws_load("echo")), "ws-large": ("ws", ws_load("large")), "ws-idle": ("ws", None),
             "http-idle": ("http", None)}
UNITS = {"ws-echo": "round trips/s", "ws-large": "MiB/s", "ws-idle": "KiB per idle connection",
         "http-idle": "KiB per idle connection"}


def measure(server: Server, scenario: str, duration: int, connections: int, tls: TLS | None) -> dict[str, object]:
    scheme, load = SCENARIOS[scenario]
    port = free_port()
    path = str(VENV / "server.sock")  # http1-unix: the server's socket, with nginx on port
    if os.path.exists(path):
        os.unlink(path)
    command = server.unix(path) if scenario == "http1-unix" and server.unix else server.command(port, tls)
    process = subprocess.Popen(["taskset", "-c", "0", *command], cwd=HERE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    proxy = None
    try:
        if scenario == "http1-unix":
            proxy = nginx_in_front(port, path, process)
            wait_until_up(port, proxy)
        else:
            wait_until_up(port, process)
        url = f"{scheme}://127.0.0.1:{port}/"
        if load is None:
            return {"server": server.name, **idle_memory(url, process.pid, connections)}
        load(url, 2, connections)  # warm-up
        cpu = cpu_seconds(process.pid)
        started = time.monotonic()
        result = load(url, duration, connections)
        busy = (cpu_seconds(process.pid) - cpu) / (time.monotonic() - started)
        return {"server": server.name, **result, "cpu": busy}
    except Exception as error:  # a peer that fails is a row in the table, not the end of the run
        return {"server": server.name, "failed": str(error)}
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        with contextlib.suppress(ProcessLookupError):  # a server that exited is a failed row, not the end
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def make_tls() -> TLS:
    """A self-signed pair for every server, made by hello-asgi installed in the venv."""
    directory = VENV / "tls"
    subprocess.run([str(BIN / "python"), "-c", "import sys; from pathlib import Path; "
                    "from hello_asgi.tls import development_certificate; "
                    "development_certificate(Path(sys.argv[1]))", str(directory)], check=True, cwd=VENV)
    return TLS(str(directory / "dev-cert.pem"), str(directory / "dev-key.pem"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="http1")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int,
                        help="default: 50 for HTTP/1.1 (http1, http1-unix), 10 for HTTP/2 and ws-echo, 1 for ws-large, 10000 for ws-idle and http-idle")
    parser.add_argument("--servers", help="comma-separated names; default: all that speak the scenario")
    args = parser.parse_args()
    connections = args.connections or {"http1": 50, "http1-unix": 50, "ws-large": 1, "ws-idle": 10000,
                                       "http-idle": 10000}.get(args.scenario, 10)
    install()
    tls = make_tls() if args.scenario == "h2-tls" else None
    wanted = set(args.servers.split(",")) if args.servers else None
    rows = [measure(s, args.scenario, args.duration, connections, tls) for s in SERVERS
            if args.scenario in s.protocols and (wanted is None or s.name in wanted)]
    ours = next((r["rps"] for r in rows if r["server"] == "hello-asgi" and "rps" in r), None)
    unit = UNITS.get(args.scenario, "req/s")
    memory = args.scenario.endswith("-idle")  # less is better: the ratio is turned round
    print(f"\nScenario {args.scenario}, {connections} connections, {args.duration} s, "
          "server on CPU 0, load on CPU 1\n")
    print(f"| server | {unit} | p99 ms (h2load: mean) | errors | server CPU | hello-asgi's advantage (×) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        if "failed" in row:
            print(f"| {row['server']} | failed: {row['failed']} | | | | |")
            continue
        ratio = "-" if not ours else f"{row['rps'] / ours:.2f}" if memory else f"{ours / row['rps']:.2f}"
        cpu = f"{row['cpu']:.0%}" if "cpu" in row else "-"
        print(f"| {row['server']} | {row['rps']:.1f} | {row['p99_ms']:.2f} | {row['errors']} | {cpu} | {ratio} |")
    (HERE / f"results-{args.scenario}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
