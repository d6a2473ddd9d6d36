"""What --metrics-listen costs per request: the counting in MeteredAccessLog, measured on
the call every request already makes (stream.log_access), with the access log on and off.

    python benchmarks/metrics_cost.py
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from twisted.logger import Logger

from hello_asgi.metrics import Figures, MeteredAccessLog, count_request, meter
from hello_asgi.stream import HTTPStream

ROUNDS = 200_000


def per_call(function) -> float:  # type: ignore[no-untyped-def]
    """Microseconds per call, the best of five runs."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            function()
        best = min(best, time.perf_counter() - started)
    return best / ROUNDS * 1e6


def main() -> None:
    stream = SimpleNamespace(
        scope={"client": ("127.0.0.1", 50000), "method": "GET", "path": "/", "query_string": b"",
               "http_version": "1.1"},
        status=200, bytes_sent=13, started_at=time.monotonic())
    access_log = Logger(namespace="hello_asgi.access", observer=lambda event: None)
    plain = per_call(lambda: HTTPStream.log_access(stream, access_log))  # type: ignore[arg-type]
    factory = SimpleNamespace(access_logger=Logger(namespace="hello_asgi.access", observer=lambda event: None))
    meter(factory, Figures())
    metered = per_call(lambda: HTTPStream.log_access(stream, factory.access_logger))  # type: ignore[arg-type]
    counting_alone = MeteredAccessLog(Figures())
    off = per_call(lambda: HTTPStream.log_access(stream, counting_alone))  # type: ignore[arg-type]
    fields = {"client": "127.0.0.1:50000", "method": "GET", "path": "/", "query": "", "http_version": "1.1",
              "status": 200, "bytes_sent": 13, "duration": 0.0004}
    figures = Figures()
    counting = per_call(lambda: count_request(figures, fields))
    print(f"counting one request's fields:      {counting:.2f} µs")
    print(f"access log line, no metrics:        {plain:.2f} µs")
    print(f"access log line and metrics:        {metered:.2f} µs (metrics: {metered - plain:+.2f} µs)")
    print(f"metrics with --no-access-log:       {off:.2f} µs (against no call at all)")


if __name__ == "__main__":
    main()
