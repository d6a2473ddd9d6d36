"""Bulk transfers: 200 MB down (three apps) and up, per server and protocol, with curl.

    flock /tmp/bench.lock python3 benchmarks/bulk.py --rounds 3 --scenarios h1-plain,h1-file \\
        --servers hello-asgi,uvicorn,granian --peers /path/to/venv

Each server runs ``bulk_app.py`` as one process pinned to CPU 0, curl runs pinned to CPU 1;
servers are interleaved round by round. Each round starts the server, makes one transfer
to warm it up, then ``--transfers`` more: their median wall time (curl's) and the server's
CPU time (every process of its session) divided by them. Median and range over the rounds.
hello-asgi runs from this checkout's ``.venv``; the peers from ``--peers`` (a venv with
uvicorn[standard], hypercorn, granian and starlette).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bulk_app import FILE, SIZE  # noqa: E402
from run import cpu_seconds, free_port, wait_until_up  # noqa: E402

OURS = HERE.parent / ".venv" / "bin"


def commands(peers: Path, port: int, tls: tuple[str, str] | None) -> dict[str, list[str]]:
    cert, key = tls or ("", "")
    return {
        "hello-asgi": [str(OURS / "twist"), "hello-asgi", "--app", "bulk_app:app", "--app-dir", str(HERE),
                       "--port", str(port), "--no-access-log", *(["--cert", cert, "--key", key] if tls else [])],
        "uvicorn": [str(peers / "uvicorn"), "bulk_app:app", "--port", str(port), "--http", "httptools",
                    "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
                    *(["--ssl-certfile", cert, "--ssl-keyfile", key] if tls else [])],
        "hypercorn": [str(peers / "hypercorn"), "bulk_app:app", "-b", f"127.0.0.1:{port}",
                      *(["--certfile", cert, "--keyfile", key] if tls else [])],
        "granian": [str(peers / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1", "--runtime-threads", "1", "--no-access-log",
                    *(["--ssl-certificate", cert, "--ssl-keyfile", key] if tls else []), "bulk_app:app"],
    }


# scenario -> (TLS, curl options, path)
SCENARIOS = {
    f"{proto}-{what}": (proto.endswith("tls"), options, f"/{what}")
    for proto, options in (("h1", ["--http1.1"]), ("h1tls", ["--http1.1"]), ("h2c", ["--http2-prior-knowledge"]),
                           ("h2tls", ["--http2"]))
    for what in ("plain", "stream", "file", "upload")
}


def curl(url: str, options: list[str], upload: bool) -> tuple[float, int, str]:
    command = ["taskset", "-c", "1", "curl", "-sk", "--max-time", "60", *options, "-w", "%{time_total} %{http_code}",
               "-H", "Expect:"]
    command += ["-T", FILE, "-o", "/tmp/bulk-upload-answer"] if upload else ["-o", "/dev/null"]
    out = subprocess.run([*command, url], capture_output=True, text=True, timeout=90)
    seconds, status = out.stdout.split()
    if upload:
        received = int(Path("/tmp/bulk-upload-answer").read_text() or 0)
    else:
        received = SIZE if status == "200" and out.returncode == 0 else 0
    return float(seconds), received, status


def run_one(server: str, scenario: str, peers: Path, tls: tuple[str, str], transfers: int) -> dict[str, float | str]:
    secure, options, path = SCENARIOS[scenario]
    port = free_port()
    command = commands(peers, port, tls if secure else None)[server]
    process = subprocess.Popen(["taskset", "-c", "0", *command], cwd=HERE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_up(port, process)
        url = f"{'https' if secure else 'http'}://127.0.0.1:{port}{path}"
        curl(url, options, path == "/upload")  # warm-up
        before = cpu_seconds(process.pid)
        times, failures = [], []
        for _ in range(transfers):
            seconds, received, status = curl(url, options, path == "/upload")
            times.append(seconds)
            if received != SIZE or status != "200":
                failures.append(f"FAILED ({status}, {received} bytes)")
        cpu = (cpu_seconds(process.pid) - before) / transfers
        return {"seconds": statistics.median(times), "cpu": cpu, "ok": failures[0] if failures else "ok"}
    except Exception as error:
        return {"seconds": 0.0, "cpu": 0.0, "ok": f"FAILED ({error})"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", default="hello-asgi,uvicorn,hypercorn,granian")
    parser.add_argument("--scenarios", default="h1-plain,h1-stream,h1-file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transfers", type=int, default=3, help="per server start: the median wall time of "
                        "these, and their CPU time divided by them (/proc counts CPU in 10 ms ticks)")
    parser.add_argument("--peers", type=Path, default=HERE.parent / ".peers" / "bin")
    args = parser.parse_args()
    if not os.path.exists(FILE) or os.path.getsize(FILE) != SIZE:
        with open(FILE, "wb") as file:
            file.write(os.urandom(SIZE))
    tls_dir = Path("/tmp/bulk-tls")
    subprocess.run([str(OURS / "python"), "-c", "import sys; from pathlib import Path; "
                    "from hello_asgi.tls import development_certificate; development_certificate(Path(sys.argv[1]))",
                    str(tls_dir)], check=True)
    tls = (str(tls_dir / "dev-cert.pem"), str(tls_dir / "dev-key.pem"))
    for scenario in args.scenarios.split(","):
        results: dict[str, list[dict[str, float | str]]] = {}
        for _ in range(args.rounds):
            for server in args.servers.split(","):
                if server == "uvicorn" and scenario.startswith("h2"):
                    continue  # no HTTP/2
                results.setdefault(server, []).append(run_one(server, scenario, args.peers.resolve(), tls, args.transfers))
        for server, runs in results.items():
            failed = [run["ok"] for run in runs if run["ok"] != "ok"]
            seconds = [float(run["seconds"]) for run in runs]
            cpu = [float(run["cpu"]) for run in runs]
            print(f"{scenario:14} {server:11} wall s median {statistics.median(seconds):.3f} "
                  f"({min(seconds):.3f}-{max(seconds):.3f})  server CPU s median {statistics.median(cpu):.2f} "
                  f"({min(cpu):.2f}-{max(cpu):.2f})  {'INVALID: ' + '; '.join(map(str, failed)) if failed else ''}",
                  flush=True)


if __name__ == "__main__":
    main()
