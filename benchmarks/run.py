"""hello-asgi against its peers, in one run, on one machine: a table of req/s, p99 and ratios.

    python3 benchmarks/run.py [--scenario http1|h2c|h2-tls] [--duration 10] [--servers a,b]

Each server runs one process pinned to CPU 0; the load generator (wrk or h2load) runs
pinned to CPU 1. The peers are installed into benchmarks/.venv, with hello-asgi itself
(reinstalled from this checkout on every run, so the figures are for the code in front of you).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv"
BIN = VENV / "bin"
PEERS = ["uvicorn", "httptools", "uvloop", "hypercorn", "daphne", "granian"]


@dataclass
class Server:
    name: str
    command: Callable[[int, "TLS | None"], list[str]]
    protocols: tuple[str, ...]


@dataclass
class TLS:
    cert: str
    key: str


SERVERS = [
    Server("hello-asgi", lambda port, tls: [
        str(BIN / "twist"), "hello-asgi", "--app", "app:app", "--app-dir", str(HERE), "--port", str(port),
        "--no-access-log", *(["--cert", tls.cert, "--key", tls.key] if tls else [])], ("http1", "h2c", "h2-tls")),
    Server("uvicorn-h11", lambda port, tls: [
        str(BIN / "uvicorn"), "app:app", "--port", str(port), "--http", "h11", "--loop", "asyncio",
        "--no-access-log", "--log-level", "warning"], ("http1",)),
    Server("uvicorn-httptools-uvloop", lambda port, tls: [
        str(BIN / "uvicorn"), "app:app", "--port", str(port), "--http", "httptools", "--loop", "uvloop",
        "--no-access-log", "--log-level", "warning"], ("http1",)),
    Server("hypercorn", lambda port, tls: [
        str(BIN / "hypercorn"), "app:app", "-b", f"127.0.0.1:{port}",
        *(["--certfile", tls.cert, "--keyfile", tls.key] if tls else [])], ("http1", "h2c", "h2-tls")),
    Server("daphne", lambda port, tls: [
        str(BIN / "daphne"), "-v", "0",
        *(["-e", f"ssl:{port}:interface=127.0.0.1:privateKey={tls.key}:certKey={tls.cert}"] if tls
          else ["-b", "127.0.0.1", "-p", str(port)]), "app:app"], ("http1", "h2-tls")),
    Server("granian", lambda port, tls: [
        str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--runtime-threads", "1", "--no-access-log",
        *(["--ssl-certificate", tls.cert, "--ssl-keyfile", tls.key] if tls else []), "app:app"],
        ("http1", "h2c", "h2-tls")),
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


def wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("did not listen within 20 s")


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


SCENARIOS = {"http1": ("http", wrk), "h2c": ("http", h2load), "h2-tls": ("https", h2load)}


def measure(server: Server, scenario: str, duration: int, connections: int, tls: TLS | None) -> dict[str, object]:
    scheme, load = SCENARIOS[scenario]
    port = free_port()
    process = subprocess.Popen(["taskset", "-c", "0", *server.command(port, tls)], cwd=HERE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until_up(port, process)
        url = f"{scheme}://127.0.0.1:{port}/"
        load(url, 2, connections)  # warm-up
        return {"server": server.name, **load(url, duration, connections)}
    except Exception as error:  # a peer that fails is a row in the table, not the end of the run
        return {"server": server.name, "failed": str(error)}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
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
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--servers", help="comma-separated names; default: all that speak the scenario")
    args = parser.parse_args()
    install()
    tls = make_tls() if args.scenario == "h2-tls" else None
    wanted = set(args.servers.split(",")) if args.servers else None
    rows = [measure(s, args.scenario, args.duration, args.connections, tls) for s in SERVERS
            if args.scenario in s.protocols and (wanted is None or s.name in wanted)]
    ours = next((r["rps"] for r in rows if r["server"] == "hello-asgi" and "rps" in r), None)
    print(f"\nScenario {args.scenario}, {args.duration} s, server on CPU 0, load on CPU 1\n")
    print("| server | req/s | p99 ms (h2load: mean) | errors | hello-asgi ÷ server |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        if "failed" in row:
            print(f"| {row['server']} | failed: {row['failed']} | | | |")
            continue
        ratio = f"{ours / row['rps']:.2f}" if ours else "-"
        print(f"| {row['server']} | {row['rps']:.0f} | {row['p99_ms']:.2f} | {row['errors']} | {ratio} |")
    (HERE / f"results-{args.scenario}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
