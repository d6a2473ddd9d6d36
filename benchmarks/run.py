"""hello-asgi against its peers, in one run, on one machine: figures that hold up.

    python3 benchmarks/run.py [--scenario NAME] [--rounds N] [--duration S] [--defaults]
                              [--connections N] [--servers a,b] [--size BYTES]

Scenarios: http1, h2c, h2-tls, http1-unix, h3 (throughput), defaults (http1 with every access
log on as shipped), ws-echo, ws-large, ws-idle, http-idle, download, upload-h2, h3-download,
startup.

Each server runs as one process (with whatever threads and children it makes of its own)
pinned to CPU 0, started as its own docs tell a production user to start it; the load
generator runs pinned to CPU 1, and so does the reader of the server's output (a pipe, as
under systemd). Servers are interleaved: round 1 runs every server once, then round 2, and so
on; the table gives medians over the rounds, and every ratio is taken within one round. The
server's CPU time per request (utime+stime of every process of its session, reaped children
included, over the measured run only) stands beside every rate. A run in which any server
had errors, failed, or stopped at a round-number cap is INVALID: the table says so and the
exit status is 1. The peers are installed into benchmarks/.venv, with hello-asgi itself
(reinstalled from this checkout on every run, so the figures are for the code in front of you).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv"
BEFORE = HERE / ".before"  # the hello_asgi package as of --before REV
BIN = VENV / "bin"
PEERS = ["uvicorn", "httptools", "uvloop", "websockets", "hypercorn", "daphne", "granian", "gunicorn", "a2wsgi",
         "aioquic", "starlette"]  # starlette: bulk.py's app, so that `bulk.py --peers benchmarks/.venv/bin` works
WSGI_THREADS = 10  # every WSGI server's thread count (hello-asgi's default); wsgi_app.THREADS for a2wsgi
HYPERCORN_CONFIG = VENV / "hypercorn.toml"
# Hypercorn closes a connection after 1000 requests by default (keep_alive_max_requests, a
# setting of its configuration file only). h2load does not reconnect, so with the cap the
# load stops early and the figure is the cap's. Raised, as a production user serving
# long-lived HTTP/2 connections is told to.
HYPERCORN_TOML = "keep_alive_max_requests = 1000000000\n"
CLIENT_BOUND = 0.9  # a load generator at this fraction of its core or more was the limit
Row = dict[str, Any]


@dataclass(frozen=True)
class TLS:
    cert: str
    key: str


@dataclass(frozen=True)
class Launch:
    """How a server is started for one measurement."""

    port: int
    tls: TLS | None = None
    unix: str | None = None  # listen on this UNIX socket instead of the port
    access_log: bool = False  # its access log on, as shipped; otherwise off
    idle: bool = False  # 10,000 idle connections: connection limit and keep-alive timeout raised
    h3: bool = False  # HTTP/3 on UDP at the same port as the TLS listener


@dataclass(frozen=True)
class Server:
    name: str
    command: Callable[[Launch], list[str]]
    speaks: frozenset[str]  # http1, h2c, h2-tls, ws, unix, idle
    default: bool = True  # in the run unless --servers names others
    only_with_logs: bool = False  # a row of the defaults scenario only (hello-asgi with its log off)
    hello_only: bool = False  # answers hello world whatever the request (not app.py): throughput scenarios only
    logs: bool = True  # has an access log to turn on


def _hello_asgi(launch: Launch, *, log: bool, reactor: str | None = None, loop: str = "asyncio") -> list[str]:
    # The loop named, as this venv has uvloop (Uvicorn's) and --loop auto would take it: plain
    # `pip install hello-asgi` runs on asyncio's loop, `hello-asgi[uvloop]` on uvloop's.
    return [str(BIN / "twist"), *([f"--reactor={reactor}"] if reactor else []), "hello-asgi",
            "--app", "app:app", "--app-dir", str(HERE), *(["--loop", loop] if reactor is None else []),
            *(["--listen", f"unix:{launch.unix}"] if launch.unix else ["--port", str(launch.port)]),
            *([] if log else ["--no-access-log"]),
            *(["--limit-concurrency", "20000", "--timeout-keep-alive", "300"] if launch.idle else []),
            *(["--cert", launch.tls.cert, "--key", launch.tls.key] if launch.tls else []),
            *(["--h3"] if launch.h3 else [])]


def _uvicorn(launch: Launch, http: str = "auto", loop: str = "auto") -> list[str]:
    # `uvicorn app:app`: with httptools and uvloop installed its defaults pick both
    return [str(BIN / "uvicorn"), "app:app",
            *(["--uds", launch.unix] if launch.unix else ["--host", "127.0.0.1", "--port", str(launch.port)]),
            *(["--http", http] if http != "auto" else []), *(["--loop", loop] if loop != "auto" else []),
            *([] if launch.access_log else ["--no-access-log"]),
            *(["--timeout-keep-alive", "300"] if launch.idle else []),
            *(["--ssl-certfile", launch.tls.cert, "--ssl-keyfile", launch.tls.key] if launch.tls else [])]


def _hypercorn(launch: Launch) -> list[str]:
    # its access log is off unless given a target; "-" is stdout
    return [str(BIN / "hypercorn"), "--config", str(HYPERCORN_CONFIG),
            "-b", f"unix:{launch.unix}" if launch.unix else f"127.0.0.1:{launch.port}",
            *(["--access-logfile", "-"] if launch.access_log else []),
            *(["--keep-alive", "300"] if launch.idle else []),
            *(["--certfile", launch.tls.cert, "--keyfile", launch.tls.key] if launch.tls else []),
            *(["--quic-bind", f"127.0.0.1:{launch.port}"] if launch.h3 else []), "app:app"]


def _daphne(launch: Launch) -> list[str]:
    # at its default verbosity (1) Daphne writes an access log to stdout; -v 0 turns it off
    if launch.unix:
        where = ["-u", launch.unix]
    elif launch.tls:
        where = ["-e", f"ssl:{launch.port}:interface=127.0.0.1:privateKey={launch.tls.key}:certKey={launch.tls.cert}"]
    else:
        where = ["-b", "127.0.0.1", "-p", str(launch.port)]
    return [str(BIN / "daphne"), *where, *([] if launch.access_log else ["-v", "0"]), "app:app"]


def _granian(launch: Launch) -> list[str]:
    # one worker (its default) under granian's own supervising process
    return [str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(launch.port),
            "--access-log" if launch.access_log else "--no-access-log",
            *(["--ssl-certificate", launch.tls.cert, "--ssl-keyfile", launch.tls.key] if launch.tls else []),
            "app:app"]


def _hello_asgi_wsgi(launch: Launch, app: str = "wsgi_app:app") -> list[str]:
    return [str(BIN / "twist"), "hello-asgi", "--app", app, "--app-dir", str(HERE), "--loop", "asyncio",
            "--port", str(launch.port), "--wsgi-threads", str(WSGI_THREADS),
            *([] if launch.access_log else ["--no-access-log"])]


def _gunicorn(launch: Launch, h2c: bool = False) -> list[str]:
    # the gthread worker, as Gunicorn's docs say to run threads in production; one worker
    # under its arbiter; no access log unless asked (its default); no control socket (27's);
    # HTTP/2 in cleartext only when asked (27's --http-protocols, --http2-cleartext)
    return [str(BIN / "gunicorn"), "-k", "gthread", "--threads", str(WSGI_THREADS), "--workers", "1",
            "--no-control-socket", "--chdir", str(HERE), "-b", f"127.0.0.1:{launch.port}",
            *(["--http-protocols", "h2,h1", "--http2-cleartext", "prior-knowledge"] if h2c else []),
            *(["--access-logfile", "-"] if launch.access_log else []), "wsgi_app:app"]


def _hypercorn_wsgi(launch: Launch) -> list[str]:
    # Hypercorn finds a WSGI app itself and runs it in its loop's default executor (no thread option)
    return [str(BIN / "hypercorn"), "--config", str(HYPERCORN_CONFIG), "-b", f"127.0.0.1:{launch.port}",
            *(["--access-logfile", "-"] if launch.access_log else []), "wsgi_app:app"]


def _granian_wsgi(launch: Launch) -> list[str]:
    return [str(BIN / "granian"), "--interface", "wsgi", "--blocking-threads", str(WSGI_THREADS),
            "--host", "127.0.0.1", "--port", str(launch.port),
            "--access-log" if launch.access_log else "--no-access-log", "wsgi_app:app"]


ALL = frozenset({"http1", "h2c", "h2-tls", "ws", "unix", "idle", "h3"})
SERVERS = [
    Server("hello-asgi", lambda launch: _hello_asgi(launch, log=launch.access_log), ALL),
    Server("hello-asgi-nolog", lambda launch: _hello_asgi(launch, log=False), ALL, only_with_logs=True),
    Server("hello-asgi-uvloop", lambda launch: _hello_asgi(launch, log=launch.access_log, loop="uvloop"),
           frozenset({"http1", "h2c", "h2-tls", "ws", "unix"})),
    Server("hello-asgi --reactor=epoll (apps in a thread)",
           lambda launch: _hello_asgi(launch, log=launch.access_log, reactor="epoll"),
           frozenset({"http1", "h2c", "ws"}), default=False),
    Server("hello-asgi ASGIResource in twisted.web (epoll)", lambda launch: [
        "env", f"PORT={launch.port}", str(BIN / "twistd"), "--pidfile=", "-l", "/dev/null", "-ny",
        str(HERE / "resource.tac")], frozenset({"http1", "ws"}), default=False, logs=False),
    # hello-asgi as it was at --before REV: that commit's package first on the path, run by
    # this venv's twist (its plugin and its dependencies), for a before/after table in one run.
    Server("hello-asgi (before)", lambda launch: ["env", f"PYTHONPATH={BEFORE}",
                                                  *_hello_asgi(launch, log=launch.access_log)], ALL, default=False),
    Server("uvicorn-h11", lambda launch: _uvicorn(launch, http="h11", loop="asyncio"), frozenset({"http1"}),
           default=False),
    Server("uvicorn", _uvicorn, frozenset({"http1", "ws", "unix", "idle"})),
    Server("hypercorn", _hypercorn, ALL),
    Server("daphne", _daphne, frozenset({"http1", "h2-tls", "ws", "unix", "idle"})),
    Server("granian", _granian, frozenset({"http1", "h2c", "h2-tls", "ws", "idle"})),
    Server("bare-h2 (ceiling)", lambda launch: [
        str(BIN / "python"), str(HERE / "bare_h2.py"), str(launch.port),
        *([launch.tls.cert, launch.tls.key] if launch.tls else [])], frozenset({"h2c", "h2-tls"}), hello_only=True,
           logs=False),
    # The WSGI scenarios: the same WSGI app (wsgi_app.py) on each; hello-asgi's row is named
    # "hello-asgi" there, so the ratios are taken against it.
    Server("hello-asgi", _hello_asgi_wsgi, frozenset({"wsgi", "wsgi-h2c"})),
    Server("hello-asgi + a2wsgi", lambda launch: _hello_asgi_wsgi(launch, "wsgi_app:a2wsgi_app"),
           frozenset({"wsgi", "wsgi-h2c"})),
    Server("gunicorn gthread", _gunicorn, frozenset({"wsgi"})),
    Server("gunicorn gthread", lambda launch: _gunicorn(launch, h2c=True), frozenset({"wsgi-h2c"})),
    Server("hypercorn wsgi", _hypercorn_wsgi, frozenset({"wsgi", "wsgi-h2c"})),
    Server("granian wsgi", _granian_wsgi, frozenset({"wsgi", "wsgi-h2c"})),
]


# ---------------------------------------------------------------------------------------------
# Processes: the server, the reader of its output, the server's CPU and memory


@dataclass
class Running:
    """A server as it runs: its process (leader of its own session) and its output's reader."""

    process: subprocess.Popen[bytes]
    reader: subprocess.Popen[bytes]
    spawned: float  # time.monotonic() just before the spawn
    output: dict[str, Any] = field(default_factory=dict)  # the reader's count, once the server is gone

    @property
    def session(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def running(command: list[str]) -> Iterator[Running]:
    """``command`` pinned to CPU 0 in a session of its own, its stdout and stderr one pipe read
    by drain.py on CPU 1; stopped with SIGTERM to the whole session (SIGKILL after 10 s)."""
    read_end, write_end = os.pipe()
    reader = subprocess.Popen(["taskset", "-c", "1", sys.executable, str(HERE / "drain.py")], stdin=read_end,
                              stdout=subprocess.PIPE, start_new_session=True)
    spawned = time.monotonic()
    try:
        process = subprocess.Popen(["taskset", "-c", "0", *command], cwd=HERE, stdin=subprocess.DEVNULL,
                                   stdout=write_end, stderr=write_end, start_new_session=True)
    finally:
        os.close(read_end)
        os.close(write_end)
    server = Running(process, reader, spawned)
    try:
        yield server
    finally:
        _stop(process)
        try:
            out, _ = reader.communicate(timeout=10)
            server.output.update(json.loads(out or b"{}"))
        except subprocess.TimeoutExpired:  # a child of the server still holds the pipe
            reader.kill()
            reader.wait()


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # a server that exited is a failed row, not the end
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # whatever of the session is left
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _session_stats(session: int) -> list[list[str]]:
    """/proc/PID/stat fields (after the command name) of every process in the server's
    session: Granian runs its worker as a child process, and its work counts too."""
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


def pss_kib(session: int) -> int:
    """The proportional set size of the session's processes, summed: pages two of them share
    (a supervisor and the worker it started) are counted once between them, not twice."""
    total = 0
    for path in Path("/proc").glob("[0-9]*/stat"):
        if _in_session(path, session):
            with contextlib.suppress(OSError):
                rollup = (path.parent / "smaps_rollup").read_text()
                total += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1))
    return total


def cpu_seconds(session: int) -> float:
    """utime + stime of every process of the session (each one's figure covers all its
    threads, living and exited) + cutime + cstime (its children that exited and were reaped):
    a process reaped inside the session is counted once, in its parent's figure."""
    ticks = sum(sum(int(value) for value in fields[11:15]) for fields in _session_stats(session))
    return ticks / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Through a measured run, every 0.25 s: the server's CPU time, the time its threads spent
    runnable but waiting for the CPU, and the connections open to the load's port; to tell a
    load that stopped early from a server that was starved of its core. (The CPU comes from the
    stat files of the processes its session had at the start: cheap enough not to disturb it.)"""

    def __init__(self, session: int, port: int) -> None:
        self.processes = [path.parent for path in Path("/proc").glob("[0-9]*/stat") if _in_session(path, session)]
        self.port = f":{port:04X} "
        self.samples: list[tuple[float, float, float, int]] = []  # time, CPU, waiting, connections
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Sampler":
        self.samples.append(self._sample())
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.done.wait(0.25):
            self.samples.append(self._sample())

    def _sample(self) -> tuple[float, float, float, int]:
        ticks, waited = 0, 0
        for process in self.processes:
            with contextlib.suppress(OSError):
                ticks += sum(int(value) for value in (process / "stat").read_text().rsplit(")", 1)[1].split()[11:15])
                for task in (process / "task").iterdir():
                    with contextlib.suppress(OSError):
                        waited += int((task / "schedstat").read_text().split()[1])  # ns runnable, not running
        return time.monotonic(), ticks / os.sysconf("SC_CLK_TCK"), waited / 1e9, self._connections()

    def _connections(self) -> int:
        """Established TCP connections whose local end is the load's port (the server's side)."""
        count = 0
        with contextlib.suppress(OSError), open("/proc/net/tcp") as table:
            for line in table:
                fields = line.split(None, 4)
                if len(fields) > 3 and fields[3] == "01" and (fields[1] + " ").endswith(self.port):
                    count += 1
        return count

    def stopped_early(self) -> str | None:
        """Why the load seems to have stopped before the end of the run, if it does: the
        connections it had in the first half closed and stayed closed, or the server went from
        busy in the first half to nearly idle in the second without waiting for its core (a
        server starved by other processes waits; one that is sent nothing sleeps)."""
        if len(self.samples) < 5:
            return None
        start, end = self.samples[0][0], self.samples[-1][0]
        half = min(range(len(self.samples)), key=lambda i: abs(self.samples[i][0] - (start + end) / 2))
        opened = max(sample[3] for sample in self.samples[:half + 1])
        late = max(sample[3] for sample in self.samples[half:])
        spans = ((self.samples[0], self.samples[half]), (self.samples[half], self.samples[-1]))
        busy = [(b[1] - a[1]) / max(b[0] - a[0], 1e-9) for a, b in spans]
        waiting = [(b[2] - a[2]) / max(b[0] - a[0], 1e-9) for a, b in spans]
        if opened and late < opened / 2:
            return (f"the load stopped early: {opened} connections open in the first half of the run, at most "
                    f"{late} in the second")
        if busy[0] >= 0.2 and busy[1] < busy[0] / 4 and waiting[1] < 0.25:
            return (f"the load stopped early: server busy {busy[0]:.0%} in the first half of the run, "
                    f"{busy[1]:.0%} in the second, and not waiting for its core ({waiting[1]:.0%})")
        return None


def _in_session(stat: Path, session: int) -> bool:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[3]) == session
    except (OSError, IndexError, ValueError):
        return False


def core_busy(core: int) -> float:
    """Seconds CPU ``core`` has spent running processes (user, nice, system, steal) since
    boot: less the server's own time, what other processes took of the server's core during a
    run. Interrupt and softirq time is left out: loopback traffic's is the kernel's work for the
    server and its client, charged to no process."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, line.split()[1:9])
            return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")
    return 0.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(address: int | str, process: subprocess.Popen[bytes], limit: float = 30) -> None:
    """Until ``process`` accepts on ``address``: a port on 127.0.0.1, or a UNIX socket's path."""
    deadline = time.monotonic() + limit
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
            time.sleep(0.02)
    raise RuntimeError(f"did not listen within {limit:.0f} s")


def client(argv: list[str], timeout: float) -> tuple[str, float]:
    """Run a load generator on CPU 1: its stdout and its busy fraction of that core (its CPU
    time, from the kernel's account of reaped children, over its wall time)."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    done = subprocess.run(["taskset", "-c", "1", *argv], capture_output=True, text=True, timeout=timeout)
    wall, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} exited with {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-300:]}")
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return done.stdout, used / wall


# ---------------------------------------------------------------------------------------------
# Load generators: each returns rate, requests served, errors, and the client's CPU


def wrk(url: str, duration: float, connections: int) -> Row:
    out, busy = client(["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url], duration + 30)
    return {**parse_wrk(out), "client_cpu": busy}


def parse_wrk(out: str) -> Row:
    """wrk's report: the rate, the requests answered 2xx/3xx, every error, the p99 latency."""
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(non_2xx.group(1)) if non_2xx else 0
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    return {"rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "requests": total - bad,
            "errors": bad + (sum(map(int, sockets.groups())) if sockets else 0),
            "latency_ms": _ms(p99.group(1) + p99.group(2)) if p99 else None}


def h2load(url: str, duration: float, connections: int) -> Row:
    out, busy = client(["h2load", f"-c{connections}", "-m10", "-D", f"{duration:g}", url], duration + 30)
    return {**parse_h2load(out, connections), "client_cpu": busy}


def parse_h2load(out: str, connections: int) -> Row:
    """h2load's report: the rate, the requests that succeeded, every failure and non-2xx
    status, the mean latency, and the requests done per connection."""
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", out)
    if not rate or not counts:
        raise RuntimeError("h2load: " + (out.strip().splitlines() or ["no output"])[-1])
    total, started, done, succeeded, failed, errored, timed_out = map(int, counts.groups())
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    non_2xx = sum(map(int, statuses.groups()[1:])) if statuses else 0
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)  # h2load gives no percentiles
    return {"rate": float(rate.group(1)), "requests": succeeded, "errors": failed + errored + timed_out + non_2xx,
            "latency_ms": _ms(mean.group(1)) if mean else None, "per_connection": done / connections}


def h3_load(url: str, duration: float, connections: int) -> Row:
    """h3_load.py: 2 processes of ``connections``/2 QUIC connections with 10 requests in flight
    each (h2load's -m10), aioquic's client: its CPU, every process's, is in the row."""
    out, busy = client([str(BIN / "python"), str(HERE / "h3_load.py"), "load", url, str(max(1, connections // 2)),
                        "10", f"{duration:g}", "2"], duration + 60)
    result = json.loads(out.splitlines()[-1])
    return {"rate": result["rate"], "requests": result["count"], "errors": result["errors"], "latency_ms": None,
            "client_cpu": busy}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def ws_load(mode: str) -> Callable[[str, float, int], Row]:
    def load(url: str, duration: float, connections: int) -> Row:
        out, _ = client([str(BIN / "python"), str(HERE / "ws_load.py"), mode, url, str(connections), f"{duration:g}"],
                        duration + 60)
        result = json.loads(out.splitlines()[-1])  # the client times its own CPU over the exchange alone
        return {"rate": result["rate"], "requests": result["count"], "errors": 0, "latency_ms": None,
                "client_cpu": result["client_cpu"]}
    return load


# ---------------------------------------------------------------------------------------------
# What is measured once a server is up


@dataclass
class Context:
    url: str
    server: Running
    args: argparse.Namespace
    connections: int
    protocol: str  # http1 or h2c: the protocol of a download or upload row
    port: int  # where the load goes (nginx's, in front of a UNIX socket)


def throughput(load: Callable[[str, float, int], Row]) -> Callable[[Context], Row]:
    """A warm-up, then the measured run; the server's CPU over the measured run only."""
    def measure(ctx: Context) -> Row:
        load(ctx.url, ctx.args.warmup, ctx.connections)
        cpu, core, started = cpu_seconds(ctx.server.session), core_busy(0), time.monotonic()
        with Sampler(ctx.server.session, ctx.port) as sampler:
            result = load(ctx.url, ctx.args.duration, ctx.connections)
        wall = time.monotonic() - started  # the duration, and the client's start (ws_load.py's: a few tenths)
        used, core = cpu_seconds(ctx.server.session) - cpu, core_busy(0) - core
        served = result["requests"]
        return {**result, "server_cpu": used / wall, "cpu_us": used * 1e6 / served if served else None,
                "others_on_cpu0": max(0.0, core - used) / wall, "stopped_early": sampler.stopped_early()}
    return measure


def idle_memory(ctx: Context) -> Row:
    """KiB of server memory per idle connection (WebSocket, or HTTP/1.1 keep-alive after one
    request): RSS with them open, less RSS before."""
    session = ctx.server.session
    if ctx.url.startswith("http"):
        wrk(ctx.url, 1, 1)  # warm-up: every module a request needs is loaded
    else:
        ws_load("echo")(ctx.url, 1, 1)  # warm-up: every module a WebSocket needs is loaded
    time.sleep(1)
    before = rss_kib(session)
    holder = subprocess.Popen(["taskset", "-c", "1", str(BIN / "python"), str(HERE / "ws_load.py"), "idle", ctx.url,
                               str(ctx.connections)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if holder.stdout.readline().strip() != "ready":
            raise RuntimeError("the idle clients could not all connect")
        time.sleep(2)
        after = rss_kib(session)
        holder.stdin.close()
        still_open = json.loads(holder.stdout.readline())["open"]
    finally:
        holder.kill()
        holder.wait()
    return {"kib": (after - before) / ctx.connections, "requests": ctx.connections,
            "errors": ctx.connections - still_open}


def transfer(kind: str) -> Callable[[Context], Row]:
    """Downloads or uploads of --size bytes by curl, one after another (after a warm-up of
    1 MB) until they have taken 1 s or there have been 10: curl's mean time for one, and the
    server's CPU per one (the kernel counts CPU in 10 ms ticks, so a short transfer is repeated)."""
    def measure(ctx: Context) -> Row:
        _curl(ctx, kind, 1_000_000)
        cpu, done = cpu_seconds(ctx.server.session), []
        while not done or (sum(r["seconds"] for r in done) < 1 and len(done) < 10 and not done[-1]["errors"]):
            done.append(_curl(ctx, kind, ctx.args.size))
        used, count, seconds = cpu_seconds(ctx.server.session) - cpu, len(done), sum(r["seconds"] for r in done)
        return {"seconds": seconds / count, "cpu_s": used / count, "mb_s": ctx.args.size * count / seconds / 1e6,
                "transfers": count, "requests": count, "errors": sum(r["errors"] for r in done),
                "client_cpu": statistics.mean(r["client_cpu"] for r in done), "server_cpu": used / seconds,
                "detail": next((r["detail"] for r in done if r["errors"]), done[-1]["detail"])}
    return measure


def h2load_download(ctx: Context) -> Row:
    """``download`` with h2load as the client: 10 GETs of --size bytes one after another on
    one connection (after curl's warm-up of 1 MB). curl spends more of its own CPU on h2c
    than on HTTP/1.1, so its h2c times are partly curl's; h2load's are the server's. (h2load
    counts Hypercorn's HTTP/1.1 answers as failed, all their bytes received: its status line
    has an empty reason phrase. Leave Hypercorn out of this one.)"""
    _curl(ctx, "download", 1_000_000)
    count, cpu = 10, cpu_seconds(ctx.server.session)
    h1 = ["--h1"] if ctx.protocol == "http1" else []
    out, busy = client(["h2load", *h1, "-n", str(count), "-c1", "-m1", f"{ctx.url}download?bytes={ctx.args.size}"],
                       ctx.args.max_transfer * count + 10)
    used = cpu_seconds(ctx.server.session) - cpu
    row = parse_h2load(out, 1)
    if not row["rate"]:
        raise RuntimeError(f"h2load finished none of the {count} downloads")
    seconds = count / row["rate"]
    data = re.search(r"traffic: .*\((\d+)\) data", out)
    moved = int(data.group(1)) if data else 0
    errors = row["errors"] + (0 if row["requests"] == count and moved >= count * ctx.args.size else 1)
    return {"seconds": seconds / count, "cpu_s": used / count, "mb_s": moved / seconds / 1e6, "transfers": count,
            "requests": row["requests"], "errors": errors, "client_cpu": busy, "server_cpu": used / seconds,
            "detail": f"{row['requests']} of {count} transfers, {moved} bytes of data"}


def _curl(ctx: Context, kind: str, size: int) -> Row:
    """One transfer; an error unless the answer was 200 and every byte arrived (for an upload,
    the app's answer, the length of the body it read, says so)."""
    argv = ["curl", "-sS", "--max-time", str(ctx.args.max_transfer),
            "-w", "\n%{http_code} %{size_download} %{size_upload} %{time_total}",
            *(["--http2-prior-knowledge"] if ctx.protocol == "h2c" else ["--http1.1"])]
    if kind == "download":
        argv += ["-o", "/dev/null", f"{ctx.url}download?bytes={size}"]
    else:  # streamed from the file; no "Expect: 100-continue" wait
        argv += ["-X", "POST", "-H", "Expect:", "-T", str(_upload_file(size)), f"{ctx.url}upload"]
    out, busy = client(argv, ctx.args.max_transfer + 10)
    *body, stats = out.strip().splitlines()
    status, down, up, seconds = stats.split()
    moved = int(float(down)) if kind == "download" else int(body[0]) if body and body[0].isdigit() else 0
    ok = status == "200" and moved == size
    return {"seconds": float(seconds), "errors": 0 if ok else 1, "client_cpu": busy,
            "detail": f"status {status}, {moved} of {size} bytes " + ("received" if kind == "download" else
                                                                      f"read by the app ({int(float(up))} sent)")}


def h3_transfer(ctx: Context) -> Row:
    """One warm-up of 1 MB, then downloads of --size bytes (50 MB unless given) over HTTP/3 by
    aioquic's client until they have taken 1 s or there have been 3."""
    def one(size: int) -> Row:
        out, busy = client([str(BIN / "python"), str(HERE / "h3_load.py"), "download", ctx.url, str(size)],
                           ctx.args.max_transfer + 10)
        return {**json.loads(out.splitlines()[-1]), "busy": busy}

    size = ctx.args.size
    one(1_000_000)
    cpu, done = cpu_seconds(ctx.server.session), []
    while not done or (sum(r["seconds"] for r in done) < 1 and len(done) < 3 and not done[-1]["errors"]):
        done.append(one(size))
    used, count, seconds = cpu_seconds(ctx.server.session) - cpu, len(done), sum(r["seconds"] for r in done)
    return {"seconds": seconds / count, "cpu_s": used / count, "mb_s": size * count / seconds / 1e6,
            "transfers": count, "requests": count, "errors": sum(r["errors"] for r in done),
            "client_cpu": statistics.mean(r["client_cpu"] for r in done), "server_cpu": used / seconds,
            "detail": f"status {done[-1]['status']}, {done[-1]['bytes']} of {size} bytes received"}


def _upload_file(size: int) -> Path:
    path = VENV / f"upload-{size}.bin"
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as file:  # sparse: zeros, read from no disk
            file.truncate(size)
    return path


def startup(ctx: Context) -> Row:
    """From spawn to the first answer to a GET (polled every 5 ms), then the RSS of the
    server's session 1 s after that answer."""
    port = ctx.port
    deadline = ctx.server.spawned + 30
    while time.monotonic() < deadline:
        if ctx.server.process.poll() is not None:
            raise RuntimeError(f"exited with {ctx.server.process.returncode}")
        if _answers(port):
            first = time.monotonic() - ctx.server.spawned
            break
        time.sleep(0.005)
    else:
        raise RuntimeError("no answer within 30 s")
    time.sleep(1)
    session = ctx.server.session
    return {"first_answer_s": first, "rss_mib": rss_kib(session) / 1024, "pss_mib": pss_kib(session) / 1024,
            "processes": len(_session_stats(session)), "requests": 1, "errors": 0}


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as probe:
            probe.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return probe.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    lower_is_better: bool = False
    ratio: bool = True  # with a "hello-asgi's advantage" column
    digits: int = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    scheme: str
    needs: tuple[str, ...]  # the protocol(s) a server must speak; several: one row per server and protocol
    measure: Callable[[Context], Row]
    metrics: tuple[Metric, ...]
    connections: int = 10
    what: str = ""
    logs: bool = False  # every access log on (the defaults scenario)
    waits: bool = True  # run() waits for the server to listen (startup times that itself)
    kind: str = "load"  # load (a rate under a load generator), idle, transfer or startup


RATE = Metric("rate", "req/s")
CPU_US = Metric("cpu_us", "CPU µs/req", lower_is_better=True)
LATENCY = Metric("latency_ms", "p99 ms", lower_is_better=True, ratio=False, digits=2)
MEAN = Metric("latency_ms", "mean ms", lower_is_better=True, ratio=False, digits=2)
TRANSFER = (Metric("seconds", "seconds", lower_is_better=True, digits=3),
            Metric("cpu_s", "server CPU s", lower_is_better=True, digits=3), Metric("mb_s", "MB/s", ratio=False, digits=0))
SCENARIOS = {s.name: s for s in [
    Scenario("http1", "http", ("http1",), throughput(wrk), (RATE, CPU_US, LATENCY), 50,
             "HTTP/1.1 keep-alive hello world, wrk -t1, access logs off"),
    Scenario("defaults", "http", ("http1",), throughput(wrk), (RATE, CPU_US, LATENCY), 50,
             "http1 with every server's access log on as shipped, its output into a pipe", logs=True),
    Scenario("http1-unix", "http", ("unix",), throughput(wrk), (RATE, CPU_US, LATENCY), 50,
             "HTTP/1.1 through nginx (on CPU 1) to the server's UNIX socket"),
    Scenario("h2c", "http", ("h2c",), throughput(h2load), (RATE, CPU_US, MEAN), 10,
             "HTTP/2 prior knowledge hello world, h2load -m10"),
    Scenario("wsgi", "http", ("wsgi",), throughput(wrk), (RATE, CPU_US, LATENCY), 50,
             f"a WSGI hello world (wsgi_app.py), HTTP/1.1 keep-alive, wrk -t1, access logs off, "
             f"{WSGI_THREADS} threads each"),
    Scenario("wsgi-h2c", "http", ("wsgi-h2c",), throughput(h2load), (RATE, CPU_US, MEAN), 10,
             f"a WSGI hello world (wsgi_app.py), HTTP/2 prior knowledge, h2load -m10, {WSGI_THREADS} threads each"),
    Scenario("h2-tls", "https", ("h2-tls",), throughput(h2load), (RATE, CPU_US, MEAN), 10,
             "HTTP/2 over TLS (ALPN) hello world, h2load -m10"),
    Scenario("h3", "https", ("h3",), throughput(h3_load), (RATE, CPU_US), 10,
             "HTTP/3 hello world, aioquic's client in 2 processes, 10 requests in flight per connection"),
    Scenario("h3-download", "https", ("h3",), h3_transfer, TRANSFER, 1,
             "a GET of --size bytes (50 MB unless given) over HTTP/3, aioquic's client", kind="transfer"),
    Scenario("ws-echo", "ws", ("ws",), throughput(ws_load("echo")),
             (Metric("rate", "round trips/s"), Metric("cpu_us", "CPU µs/round trip", lower_is_better=True)), 10,
             "WebSocket echo of a small text message, one at a time per connection, raw asyncio client"),
    Scenario("ws-large", "ws", ("ws",), throughput(ws_load("large")),
             (Metric("rate", "MiB/s"), Metric("cpu_us", "CPU µs/message", lower_is_better=True, digits=0)), 1,
             "1 MiB WebSocket messages echoed, websockets client"),
    Scenario("ws-idle", "ws", ("ws",), idle_memory, (Metric("kib", "KiB per idle connection", lower_is_better=True),),
             10000, "server memory per idle WebSocket", kind="idle"),
    Scenario("http-idle", "http", ("idle",), idle_memory,
             (Metric("kib", "KiB per idle connection", lower_is_better=True),), 10000,
             "server memory per idle HTTP/1.1 keep-alive connection", kind="idle"),
    Scenario("download", "http", ("http1", "h2c"), transfer("download"), TRANSFER, 1,
             "a GET of --size bytes sent in 64 KiB messages, curl over HTTP/1.1 and h2c", kind="transfer"),
    Scenario("download-h2load", "http", ("http1", "h2c"), h2load_download, TRANSFER, 1,
             "download with h2load as the client (10 GETs on one connection), over HTTP/1.1 and h2c",
             kind="transfer"),
    Scenario("upload-h2", "http", ("http1", "h2c"), transfer("upload"), TRANSFER, 1,
             "a POST of --size bytes read and discarded by the app, curl over HTTP/1.1 and h2c", kind="transfer"),
    Scenario("startup", "http", ("http1",), startup,
             (Metric("first_answer_s", "s to first answer", lower_is_better=True, digits=2),
              Metric("rss_mib", "idle RSS MiB", lower_is_better=True),
              Metric("pss_mib", "idle PSS MiB", lower_is_better=True),
              Metric("processes", "processes", ratio=False, digits=0)), 1,
             "time from spawn to the first answer, and the idle memory after it", waits=False, kind="startup"),
]}


@dataclass(frozen=True)
class Case:
    """One row: a server, and the protocol it is measured on."""

    row: str
    server: Server
    protocol: str


def cases(scenario: Scenario, logs: bool, wanted: set[str] | None) -> list[Case]:
    found = []
    for server in SERVERS:
        chosen = server.name in wanted if wanted else server.default and (logs or not server.only_with_logs)
        if not chosen or (server.hello_only and scenario.kind != "load"):
            continue
        for protocol in scenario.needs:
            if protocol in server.speaks:
                row = server.name if len(scenario.needs) == 1 else f"{server.name} {protocol}"
                found.append(Case(row, server, protocol))
    return found


def run(case: Case, scenario: Scenario, args: argparse.Namespace, tls: TLS | None) -> Row:
    """One server, one round: started, measured, stopped; its command line in the row."""
    port = free_port()
    unix = str(VENV / "server.sock") if scenario.name == "http1-unix" else None
    if unix and os.path.exists(unix):
        os.unlink(unix)
    launch = Launch(port, tls=tls, unix=unix, access_log=scenario.logs or args.defaults,
                    idle=scenario.name.endswith("-idle"), h3=scenario.name.startswith("h3"))
    command = case.server.command(launch)
    row: Row = {"server": case.row, "command": ["taskset", "-c", "0", *command],
                "access_log": launch.access_log and case.server.logs and not case.server.only_with_logs}
    output: dict[str, Any] = {}
    try:
        with running(command) as server:
            output = server.output  # filled in when the server has stopped
            row.update(_serve(server, case, scenario, args, launch))
    except Exception as error:  # a peer that fails is an invalid row, not the end of the run
        row["failed"] = f"{type(error).__name__}: {error}".strip()
    tail = (output.get("tail") or "")[-600:]
    row["output"] = {"lines": output.get("lines"), "bytes": output.get("bytes"), "tail": tail}
    if "failed" in row:
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        row["failed"] += f" (its last output: {last.strip()[:200]})" if last else " (no output)"
    row["problems"], row["notes"] = judge(row)
    return row


def _serve(server: Running, case: Case, scenario: Scenario, args: argparse.Namespace, launch: Launch) -> Row:
    """Once the server listens (behind nginx for a UNIX socket), the scenario's measurement."""
    proxy = None
    try:
        if scenario.waits and launch.unix:
            wait_until_up(launch.unix, server.process)
            proxy = nginx_in_front(launch.port, launch.unix)
            wait_until_up(launch.port, proxy)
        elif scenario.waits:
            wait_until_up(launch.port, server.process)
        url = f"{scenario.scheme}://127.0.0.1:{launch.port}/"
        return scenario.measure(Context(url, server, args, args.connections, case.protocol, launch.port))
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()


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


def nginx_in_front(port: int, path: str) -> subprocess.Popen[bytes]:
    """nginx on CPU 1 (beside the load), listening on ``port`` and passing to the server's
    UNIX socket at ``path`` over keep-alive connections, as it would in production."""
    conf = VENV / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=VENV, socket=path, port=port))
    return subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", str(conf), "-p", str(VENV)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------
# Validity


ROUND_CAPS = (100, 1000, 10000, 100000)


def judge(row: Row) -> tuple[list[str], list[str]]:
    """What makes the row invalid (problems), and what a reader should know (notes)."""
    problems, notes = [], []
    if "failed" in row:
        return [f"failed: {row['failed']}"], notes
    if row.get("errors"):
        problems.append(f"{row['errors']} errors" + (f" ({row['detail']})" if "detail" in row else ""))
    if not row.get("requests"):
        problems.append("served nothing")
    capped, notes = _caps(row)
    problems += capped
    lines = (row.get("output") or {}).get("lines") or 0
    if row.get("access_log") and row.get("requests") and lines < row["requests"]:
        problems.append(f"access log said to be on, but {lines} lines of output for {row['requests']} requests")
    return problems, notes + _notes(row)


def _notes(row: Row) -> list[str]:
    """What limited a row's rate, when it was not the server: its client, or other processes."""
    notes = []
    if (row.get("client_cpu") or 0) >= CLIENT_BOUND:
        notes.append(f"client-bound (load generator at {row['client_cpu']:.0%} of its core)")
    if (row.get("others_on_cpu0") or 0) >= 0.1:
        notes.append(f"other processes took {row['others_on_cpu0']:.0%} of CPU 0, the server's core: "
                     "its rate was held down, its CPU per request holds")
    if "rate" in row and (row.get("server_cpu") or 0) < 0.8:
        notes.append(f"server busy {row['server_cpu']:.0%} of the run: the load, or a shared core, was the limit")
    return notes


def _caps(row: Row) -> tuple[list[str], list[str]]:
    """A load that stopped early (Sampler.stopped_early), or, for h2load, which does not
    reconnect, a round number of requests per connection: the figure is then a server's
    limit, not its speed. Problems, and notes."""
    problems, notes = [], []
    stopped = row.get("stopped_early")
    if stopped:
        problems.append(stopped)
    per_connection = row.get("per_connection")
    for cap in ROUND_CAPS if per_connection else ():
        if abs(per_connection - cap) <= cap * 0.002:
            found = f"{per_connection:.0f} requests per connection, about {cap}: a per-connection cap?"
            (problems if stopped or row.get("errors") else notes).append(found)
    return problems, notes


# ---------------------------------------------------------------------------------------------
# Rounds, medians, ratios


def ours_for(row_name: str, rows: list[Row]) -> Row | None:
    """The hello-asgi row a row is compared with: the same protocol's."""
    suffix = row_name.split(" ")[-1] if row_name.endswith((" http1", " h2c")) else ""
    name = f"hello-asgi {suffix}".strip()
    return next((r for r in rows if r["server"] == name), None)


def advantage(ours: Row | None, theirs: Row, metric: Metric) -> float | None:
    """hello-asgi's advantage within one round: above 1 means hello-asgi did better."""
    if not ours or ours.get("problems") or theirs.get("problems"):
        return None
    a, b = ours.get(metric.key), theirs.get(metric.key)
    if not a or not b:
        return None
    return b / a if metric.lower_is_better else a / b


def summarise(rounds: list[list[Row]], scenario: Scenario) -> list[Row]:
    """Each server's medians over its valid rounds, every round's figure, and hello-asgi's
    advantage in each round and its median."""
    names = list(dict.fromkeys(row["server"] for rows in rounds for row in rows))
    return [_summary(name, rounds, scenario) for name in names]


def _summary(name: str, rounds: list[list[Row]], scenario: Scenario) -> Row:
    mine = [(number, rows, row) for number, rows in enumerate(rounds, 1) for row in rows if row["server"] == name]
    entry: Row = {"server": name, "rounds": len(mine), "problems": _by_round(mine, "problems"),
                  "notes": _by_round(mine, "notes"), "errors": sum(row.get("errors") or 0 for _, _, row in mine)}
    for key in ("server_cpu", "client_cpu", "others_on_cpu0", *(m.key for m in scenario.metrics)):
        entry[key] = _median([row.get(key) for _, _, row in mine if not row["problems"]])
        entry[f"{key}_per_round"] = [row.get(key) for _, _, row in mine]
    for metric in (m for m in scenario.metrics if m.ratio):
        ratios = [advantage(ours_for(name, rows), row, metric) for _, rows, row in mine]
        entry[f"advantage_{metric.key}_per_round"] = ratios
        entry[f"advantage_{metric.key}"] = _median(ratios)
    return entry


def _by_round(mine: list[tuple[int, list[Row], Row]], key: str) -> list[str]:
    """A server's problems or notes, each with the number of its round."""
    return [f"round {number}: {text}" for number, _, row in mine for text in row[key]]


def _median(values: list[float | None]) -> float | None:
    kept = [value for value in values if value is not None]
    return statistics.median(kept) if kept else None


# ---------------------------------------------------------------------------------------------
# Issue 16's targets, checked within each round of one run


@dataclass(frozen=True)
class Target:
    label: str
    value: Callable[[dict[str, Row]], float | None]  # from one round's rows, by row name
    at_least: float  # met when value >= at_least


def _ratio(top: str, bottom: str, key: str) -> Callable[[dict[str, Row]], float | None]:
    """rows[top][key] / rows[bottom][key] in one round, when both rows are valid."""
    def value(rows: dict[str, Row]) -> float | None:
        a, b = rows.get(top), rows.get(bottom)
        if not a or not b or a["problems"] or b["problems"] or not a.get(key) or not b.get(key):
            return None
        return a[key] / b[key]
    return value


def _startup_rss(rows: dict[str, Row]) -> float | None:
    """Uvicorn's idle RSS + 10 MiB, less hello-asgi's: met when at least 0."""
    ours, theirs = rows.get("hello-asgi"), rows.get("uvicorn")
    if not ours or not theirs or ours["problems"] or theirs["problems"]:
        return None
    return theirs["rss_mib"] + 10 - ours["rss_mib"]


def _first_answer(rows: dict[str, Row]) -> float | None:
    ours = rows.get("hello-asgi")
    return None if not ours or ours["problems"] else 0.6 - ours["first_answer_s"]


_DOWNLOAD_TARGETS = [Target("Uvicorn's seconds ÷ hello-asgi's, HTTP/1.1",
                            _ratio("uvicorn http1", "hello-asgi http1", "seconds"), 1.0),
                     Target("Uvicorn's HTTP/1.1 seconds ÷ hello-asgi's h2c",
                            _ratio("uvicorn http1", "hello-asgi h2c", "seconds"), 1.0)]
TARGETS = {
    "defaults": [Target("hello-asgi req/s, access log on ÷ off", _ratio("hello-asgi", "hello-asgi-nolog", "rate"), 0.9),
                 Target("hello-asgi ÷ Uvicorn req/s, both access logs on", _ratio("hello-asgi", "uvicorn", "rate"), 1.5)],
    "http1": [Target("hello-asgi ÷ Uvicorn req/s, access logs off", _ratio("hello-asgi", "uvicorn", "rate"), 1.3),
              # like for like: Uvicorn runs on uvloop, as hello-asgi does once hello-asgi[uvloop] is installed
              Target("hello-asgi on uvloop ÷ Uvicorn (on uvloop) req/s, access logs off",
                     _ratio("hello-asgi-uvloop", "uvicorn", "rate"), 1.3)],
    "h2c": [Target("hello-asgi ÷ Hypercorn req/s", _ratio("hello-asgi", "hypercorn", "rate"), 3.5),
            Target("bare h2's CPU µs/req ÷ hello-asgi's", _ratio("bare-h2 (ceiling)", "hello-asgi", "cpu_us"), 1.0)],
    "h2-tls": [Target("hello-asgi ÷ Hypercorn req/s", _ratio("hello-asgi", "hypercorn", "rate"), 3.5)],
    "h3": [Target("hello-asgi ÷ Hypercorn req/s", _ratio("hello-asgi", "hypercorn", "rate"), 2.0),
           Target("Hypercorn's CPU µs/req ÷ hello-asgi's", _ratio("hypercorn", "hello-asgi", "cpu_us"), 2.0)],
    "h3-download": [Target("Hypercorn's seconds ÷ hello-asgi's", _ratio("hypercorn", "hello-asgi", "seconds"), 1.0)],
    "download": _DOWNLOAD_TARGETS,
    "download-h2load": _DOWNLOAD_TARGETS,  # the same targets, with a client that is not the limit
    "upload-h2": [Target("hello-asgi's HTTP/1.1 seconds ÷ its h2c seconds (1/1.5 = 0.67)",
                         _ratio("hello-asgi http1", "hello-asgi h2c", "seconds"), 1 / 1.5)],
    "wsgi": [Target("hello-asgi ÷ Gunicorn gthread req/s", _ratio("hello-asgi", "gunicorn gthread", "rate"), 1.5),
             Target("hello-asgi ÷ Hypercorn WSGI req/s", _ratio("hello-asgi", "hypercorn wsgi", "rate"), 2.0),
             Target("hello-asgi ÷ Granian WSGI req/s", _ratio("hello-asgi", "granian wsgi", "rate"), 0.7),
             Target("hello-asgi's own adapter ÷ a2wsgi's, req/s", _ratio("hello-asgi", "hello-asgi + a2wsgi", "rate"),
                    1.0)],
    "wsgi-h2c": [Target("hello-asgi ÷ Gunicorn gthread req/s", _ratio("hello-asgi", "gunicorn gthread", "rate"), 1.5),
                 Target("hello-asgi ÷ Hypercorn WSGI req/s", _ratio("hello-asgi", "hypercorn wsgi", "rate"), 2.0),
                 Target("hello-asgi's own adapter ÷ a2wsgi's, req/s",
                        _ratio("hello-asgi", "hello-asgi + a2wsgi", "rate"), 1.0)],
    "startup": [Target("Uvicorn's idle RSS + 10 MiB, less hello-asgi's (MiB)", _startup_rss, 0.0),
                Target("0.6 s less hello-asgi's time to the first answer (s)", _first_answer, 0.0)],
}


def targets(rounds: list[list[Row]], scenario: Scenario) -> list[Row]:
    checked = []
    for target in TARGETS.get(scenario.name, []):
        values = [target.value({row["server"]: row for row in rows}) for rows in rounds]
        kept = [v for v in values if v is not None]
        median = statistics.median(kept) if kept else None
        checked.append({"target": target.label, "at_least": target.at_least, "median": median,
                        "per_round": values, "met": median is not None and median >= target.at_least})
    return checked


# ---------------------------------------------------------------------------------------------
# Output


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(summary: list[Row], scenario: Scenario) -> list[str]:
    ratios = [m for m in scenario.metrics if m.ratio]
    busy = {"load": ("server_cpu", "client_cpu", "others_on_cpu0"), "transfer": ("server_cpu", "client_cpu")}
    shown = busy.get(scenario.kind, ())
    labels = {"server_cpu": "server CPU", "client_cpu": "client CPU", "others_on_cpu0": "others on CPU 0"}
    head = ["server", *(m.label for m in scenario.metrics), *(f"× by {m.label}" for m in ratios), "errors",
            *(labels[key] for key in shown), f"{scenario.metrics[0].label}, each round", "valid"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 2) + " --- |"]
    for entry in summary:
        first = scenario.metrics[0]
        each = " / ".join(_fmt(v, first.digits) for v in entry[f"{first.key}_per_round"])
        cells = [entry["server"], *(_fmt(entry[m.key], m.digits) for m in scenario.metrics),
                 *(_fmt(entry[f"advantage_{m.key}"], 2) for m in ratios), str(entry["errors"]),
                 *(_percent(entry[key]) for key in shown), each, "INVALID" if entry["problems"] else "yes"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def rounds_table(rounds: list[list[Row]], summary: list[Row], scenario: Scenario) -> list[str]:
    ratios = [m for m in scenario.metrics if m.ratio]
    head = ["round", "server", *(m.label for m in scenario.metrics), *(f"× by {m.label}" for m in ratios)]
    lines = ["| " + " | ".join(head) + " |", "| ---: | --- |" + " ---: |" * (len(head) - 2)]
    for number, rows in enumerate(rounds, 1):
        for row in rows:
            entry = next(e for e in summary if e["server"] == row["server"])
            index = sum(1 for r in rounds[:number - 1] for x in r if x["server"] == row["server"])
            cells = [str(number), row["server"], *(_fmt(row.get(m.key), m.digits) for m in scenario.metrics),
                     *(_fmt(entry[f"advantage_{m.key}_per_round"][index], 2) for m in ratios)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def environment() -> Row:
    """What the figures were measured on and with."""
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    versions = subprocess.run([str(BIN / "python"), "-c", "import importlib.metadata as m, json; print(json.dumps("
                               "{n: m.version(n) for n in ['hello-asgi', *%r, 'twisted', 'h2']}))" % PEERS],
                              capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "hello-asgi commit": commit,
            "python": platform.python_version(), "cpu": model, "cores": os.cpu_count(),
            "load average": os.getloadavg(), "versions": json.loads(versions or "{}")}


def report(rounds: list[list[Row]], scenario: Scenario, args: argparse.Namespace, env: Row) -> bool:
    """Print the tables, the targets, the notes, the commands and the verdict; write the JSON.
    True when the run was valid."""
    summary = summarise(rounds, scenario)
    problems = [f"{e['server']}: {p}" for e in summary for p in e["problems"]]
    logs_added = args.defaults and not scenario.logs  # --defaults on a scenario of its own
    _print_header(scenario, args, env, logs_added)
    print("\n".join(table(summary, scenario)))
    if args.rounds > 1:
        print("\n" + "\n".join(rounds_table(rounds, summary, scenario)))
    checked = [] if logs_added else targets(rounds, scenario)
    _print_targets(checked)
    notes = [f"{e['server']}: {n}" for e in summary for n in e["notes"]]
    if notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in notes))
    _print_commands(rounds[0])
    print("\nRUN INVALID:\n" + "\n".join(f"- {p}" for p in problems) if problems else "\nRun valid.")
    out = HERE / f"results-{scenario.name}{'-defaults' if logs_added else ''}.json"
    out.write_text(json.dumps({"scenario": scenario.name, "what": scenario.what, "valid": not problems,
                               "problems": problems, "arguments": vars(args), "environment": env,
                               "hypercorn.toml": HYPERCORN_TOML, "targets": checked, "summary": summary,
                               "rounds": rounds}, indent=2))
    print(f"Results in {out}")
    return not problems


def _print_commands(rows: list[Row]) -> None:
    print("\nCommands (round 1):\n" + "\n".join(f"- {row['server']}: {' '.join(row['command'])}" for row in rows))
    if any(row["server"].startswith("hypercorn") for row in rows):
        print(f"  ({HYPERCORN_CONFIG.name}: {HYPERCORN_TOML.strip()})")


def _print_header(scenario: Scenario, args: argparse.Namespace, env: Row, logs_added: bool) -> None:
    print(f"\nScenario {scenario.name}{' (access logs on)' if logs_added else ''}: {scenario.what}.")
    how = {"load": f"{args.connections} connections, {args.duration:g} s measured after {args.warmup:g} s of warm-up",
           "idle": f"{args.connections} connections held idle",
           "transfer": f"{args.size:,} bytes a transfer, repeated until 1 s or "
                       f"{3 if scenario.name == 'h3-download' else 10} transfers: means per transfer",
           "startup": "spawn to the first 200, polled every 5 ms; memory 1 s later"}[scenario.kind]
    print(f"{how}; {args.rounds} round(s), servers interleaved; server on CPU 0, load on CPU 1. "
          f"hello-asgi {env['hello-asgi commit']}, {env['date']}. Medians over valid rounds; "
          "× = hello-asgi's advantage (above 1: hello-asgi did better), taken within each round.\n")


def _print_targets(checked: list[Row]) -> None:
    if checked:
        print("\nTargets (issue 16's; issue 18's for wsgi; median of the rounds' values; each value within one round):")
    for t in checked:
        each = " / ".join(_fmt(v, 2) for v in t["per_round"])
        print(f"- {t['target']}: {_fmt(t['median'], 2)} (at least {t['at_least']:.2f}: "
              f"{'met' if t['met'] else 'NOT met'}; each round: {each})")


# ---------------------------------------------------------------------------------------------


def install() -> None:
    if not BIN.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(BIN / "pip"), "install", "-q", *PEERS, str(ROOT)], check=True)
    else:
        subprocess.run([str(BIN / "pip"), "install", "-q", *PEERS], check=True)  # peers added since it was made
        subprocess.run([str(BIN / "pip"), "install", "-q", "--force-reinstall", "--no-deps", str(ROOT)], check=True)
    HYPERCORN_CONFIG.write_text(HYPERCORN_TOML)


def export_before(rev: str) -> None:
    """The package as of ``rev``, where the "hello-asgi (before)" row imports it from."""
    shutil.rmtree(BEFORE, ignore_errors=True)
    BEFORE.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "hello_asgi"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(BEFORE)], input=archive, check=True)


def make_tls() -> TLS:
    """A self-signed pair for every server, made by hello-asgi installed in the venv."""
    directory = VENV / "tls"
    subprocess.run([str(BIN / "python"), "-c", "import sys; from pathlib import Path; "
                    "from hello_asgi.tls import development_certificate; "
                    "development_certificate(Path(sys.argv[1]))", str(directory)], check=True, cwd=VENV)
    return TLS(str(directory / "dev-cert.pem"), str(directory / "dev-key.pem"))


DEFAULT_CONNECTIONS = {"http1": 50, "defaults": 50, "http1-unix": 50, "wsgi": 50}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="http1")
    parser.add_argument("--rounds", type=int, default=1, help="each server this many times, interleaved")
    parser.add_argument("--duration", type=float, default=5, help="seconds of each measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before each measured run")
    parser.add_argument("--connections", type=int, help="default: 50 for HTTP/1.1, 10 for HTTP/2 and ws-echo, "
                        "1 for ws-large, 10000 for ws-idle and http-idle")
    parser.add_argument("--defaults", action="store_true",
                        help="every access log on as shipped, and a hello-asgi-nolog row (http1, h2c, h2-tls, "
                        "http1-unix); --scenario defaults is http1 with it")
    parser.add_argument("--servers", help="comma-separated row names; default: all that speak the scenario "
                        f"(others: {', '.join(s.name for s in SERVERS if not s.default)})")
    parser.add_argument("--before", metavar="REV", help="also run hello-asgi as of git revision REV, as the row "
                        "'hello-asgi (before)' (name it in --servers too when --servers is given)")
    parser.add_argument("--size", type=int, help="bytes of a download or upload (200,000,000; h3-download 50,000,000)")
    parser.add_argument("--max-transfer", type=int, default=60, help="seconds a download or upload may take")
    args = parser.parse_args()
    if args.defaults and args.scenario not in ("http1", "h2c", "h2-tls", "http1-unix"):
        parser.error("--defaults applies to http1, h2c, h2-tls and http1-unix")
    args.defaults = args.defaults or args.scenario == "defaults"
    args.connections = args.connections or DEFAULT_CONNECTIONS.get(args.scenario, SCENARIOS[args.scenario].connections)
    args.size = args.size or (50_000_000 if args.scenario == "h3-download" else 200_000_000)
    return args


def main() -> None:
    args = arguments()
    with contextlib.suppress(OSError):  # the harness itself keeps off the server's core
        os.sched_setaffinity(0, {1})
    scenario = SCENARIOS[args.scenario]
    install()
    if args.before:
        export_before(args.before)
    tls = make_tls() if args.scenario in ("h2-tls", "h3", "h3-download") else None
    wanted = set(args.servers.split(",")) if args.servers else None
    if args.before and wanted is None:
        wanted = {s.name for s in SERVERS if s.default and (args.defaults or not s.only_with_logs)}
        wanted.add("hello-asgi (before)")
    chosen = cases(scenario, args.defaults, wanted)
    if not chosen:
        sys.exit(f"no server speaks {args.scenario} among {args.servers}")
    env = environment()
    rounds = []
    for number in range(1, args.rounds + 1):
        rows = []
        for case in chosen:
            print(f"round {number}/{args.rounds}: {case.row} ...", file=sys.stderr, flush=True)
            rows.append(run(case, scenario, args, tls))
        rounds.append(rows)
    sys.exit(0 if report(rounds, scenario, args, env) else 1)


if __name__ == "__main__":
    main()
