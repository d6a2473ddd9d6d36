"""What the per-request call costs (the one the protocols make when an exchange ends): the
access log's line in each format, buffered and written to /dev/null once per simulated loop
turn of 50 requests, as twisted.logger events, and --metrics-listen's counting with the
access log on and off.

    python benchmarks/metrics_cost.py

The figures that count are the harness's (server CPU per request under load); this shows
where a line's cost goes, in µs per request, the best of five runs of 200,000 calls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from hello_asgi.access_log import GUNICORN_DEFAULT, AccessLog, EventLog, LineBuffer, writing
from hello_asgi.metrics import Figures, MeteredLog

ROUNDS = 200_000
TURN = 50  # requests finished per loop turn: one flush per this many lines


def per_call(function: Callable[[], None], flush: Callable[[], None] = lambda: None) -> float:
    """Microseconds per call, the best of five runs, with ``flush`` once every ``TURN`` calls."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(ROUNDS // TURN):
            for _ in range(TURN):
                function()
            flush()
        best = min(best, time.perf_counter() - started)
    return best / ROUNDS * 1e6


def main() -> None:
    stream: Any = SimpleNamespace(
        scope={"client": ("127.0.0.1", 50000), "method": "GET", "path": "/", "query_string": b"",
               "http_version": "1.1", "scheme": "http",
               "headers": [(b"host", b"localhost"), (b"user-agent", b"wrk")]},
        status=200, bytes_sent=13, bytes_received=0, started_at=time.monotonic(), response_headers=[])
    devnull = open(os.devnull, "w", encoding="utf-8")

    def log(log_format: str | None) -> AccessLog:
        return writing(LineBuffer(lambda: devnull, lambda flush: None), log_format)

    rows = []
    for name, log_format in (("default line", None), ("Gunicorn's default format", GUNICORN_DEFAULT),
                             ("JSON line", "json")):
        access = log(log_format)
        rows.append((f"access log, {name}", per_call(lambda: access.http(stream), access.buffer.flush)))
    events = EventLog(lambda event: None)
    rows.append(("access log as twisted.logger events (no observer work)", per_call(lambda: events.http(stream))))
    metered_alone = MeteredLog(Figures(), None)
    rows.append(("metrics, --no-access-log", per_call(lambda: metered_alone.http(stream))))
    access = log(None)
    both = MeteredLog(Figures(), access)
    rows.append(("metrics and the default line", per_call(lambda: both.http(stream), access.buffer.flush)))
    for name, cost in rows:
        print(f"{name:<58} {cost:6.2f} µs")


if __name__ == "__main__":
    main()
