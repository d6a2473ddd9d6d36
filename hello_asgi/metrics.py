"""``--metrics-listen``: Prometheus figures, counted in plain integers, exposed by prometheus_client.

The hot path is one call per request on what the server already does: the access log's
line, whose fields (status, HTTP version, duration, body bytes) are what the figures
need. With an access log, its events are counted on their way to its observer; under
``--no-access-log``, a ``MeteredAccessLog`` takes the access logger's place and counts
the fields without making a line. Counting is into plain dicts and lists:
prometheus_client's own counters take a lock and look labels up on every increment,
several times the 2 µs budget for the lot, so its metric families are made only when
Prometheus asks, from these numbers (``Collector``).

With ``--workers`` each worker sends its figures to the supervisor once a second on the
pipe it says "ready" on, and the supervisor serves their sum on the one metrics listener:
one target for Prometheus whatever the number of workers, counters that never go back
when a worker is replaced (a dead worker's last figures are kept), and the supervisor's
own figure, worker restarts, beside them.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.internet.interfaces import IProtocolFactory, IProtocolNegotiationFactory
from zope.interface import implementer

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds: prometheus_client's defaults
PROTOCOLS = {"1.0": "http/1.0", "1.1": "http/1.1", "2": "h2"}
CONNECTION_KINDS = {"HTTP11Connection": "http/1.1", "H2Connection": "h2", "WebSocketConnection": "websocket"}


class Figures:
    """The counters of one process, or the sum of several, as plain numbers."""

    def __init__(self) -> None:
        # Keyed by the scope's HTTP version ("1.1"), named as a protocol only when exposed.
        self.requests: dict[tuple[str, int], int] = {}  # (version, status) -> count
        self.per_version: dict[str, list[float]] = {}  # version -> duration bucket counts, seconds, body bytes
        self.websockets: dict[str, int] = {}  # HTTP version of the handshake -> sessions ended
        self.refused = 0
        self.restarts = 0
        self.open: dict[str, int] = {}  # a gauge: connections open now, by protocol

    def snapshot(self) -> str:
        return json.dumps({"requests": [[*key, count] for key, count in self.requests.items()],
                           "per_version": self.per_version, "websockets": self.websockets,
                           "refused": self.refused, "open": self.open})

    @classmethod
    def from_snapshot(cls, text: str) -> Figures:
        data = json.loads(text)
        figures = cls()
        figures.requests = {(protocol, status): count for protocol, status, count in data["requests"]}
        figures.per_version = data["per_version"]
        figures.websockets, figures.refused, figures.open = data["websockets"], data["refused"], data["open"]
        return figures

    def add(self, other: Figures, gauges: bool = True) -> None:
        for key, count in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + count
        for version, values in other.per_version.items():
            mine = self.per_version.setdefault(version, [0.0] * _PER_VERSION)
            for index, value in enumerate(values):
                mine[index] += value
        _add_counts(self.websockets, other.websockets)
        self.refused += other.refused
        self.restarts += other.restarts
        if gauges:
            _add_counts(self.open, other.open)


def _add_counts(mine: dict[str, int], other: dict[str, int]) -> None:
    for key, count in other.items():
        mine[key] = mine.get(key, 0) + count


_PER_VERSION = len(BUCKETS) + 3  # the buckets (with +Inf), the sum of seconds, body bytes


def count_request(figures: Figures, fields: Any) -> None:
    """One access log line's fields (an HTTP request's or a WebSocket session's) into ``figures``."""
    version = fields["http_version"]
    if "bytes_sent" not in fields:  # a WebSocket session's line
        figures.websockets[version] = figures.websockets.get(version, 0) + 1
        return
    key = (version, fields["status"])
    requests = figures.requests
    requests[key] = requests.get(key, 0) + 1
    values = figures.per_version.get(version)
    if values is None:
        values = figures.per_version[version] = [0.0] * _PER_VERSION
    duration = fields["duration"]
    values[bisect.bisect_left(BUCKETS, duration)] += 1
    values[-2] += duration
    values[-1] += fields["bytes_sent"]


class MeteredAccessLog:
    """Where the factory's access logger stands under ``--no-access-log``: the line is
    counted, never made."""

    def __init__(self, figures: Figures) -> None:
        self._figures = figures

    def info(self, format: str, **fields: Any) -> None:
        count_request(self._figures, fields)


def meter(factory: Any, figures: Figures) -> None:
    """Count every request ``factory`` serves. With an access log, its events are counted
    on their way to its observer (the event is made anyway); without, the access logger's
    place takes a ``MeteredAccessLog``."""
    access_logger = factory.access_logger
    if access_logger is None:
        factory.access_logger = MeteredAccessLog(figures)
        return
    following = access_logger.observer

    def counting_observer(event: dict[str, Any]) -> None:
        count_request(figures, event)
        following(event)

    access_logger.observer = counting_observer


@implementer(IProtocolFactory, IProtocolNegotiationFactory)
class CountingFactory:
    """The server's protocol factory, counting the connections refused over the limit;
    a call per connection, none per request. TLS asks it for ALPN as it would the server's."""

    def __init__(self, factory: Any, figures: Figures) -> None:
        self._factory = factory
        self._figures = figures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)

    def buildProtocol(self, addr: Any) -> Any:
        if len(self._factory.connections) >= self._factory.config.max_connections:
            self._figures.refused += 1
        return self._factory.buildProtocol(addr)


REPORT_VARIABLE = "HELLO_ASGI_METRICS_REPORT"  # set by a supervisor that serves its workers' figures
REPORT_INTERVAL = 1.0  # seconds between a worker's reports


def open_connections(connections: Iterable[Any]) -> dict[str, int]:
    """Connections open now, by the protocol each runs (``undecided`` before its first bytes)."""
    counts: dict[str, int] = {}
    for connection in connections:
        kind = CONNECTION_KINDS.get(type(getattr(connection, "inner", None)).__name__, "undecided")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


class Collector:
    """prometheus_client's view of ``figures()``, made when Prometheus asks."""

    def __init__(self, figures: Any) -> None:
        self._figures = figures  # a callable giving the Figures to expose

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        figures: Figures = self._figures()
        requests = CounterMetricFamily("hello_asgi_requests", "HTTP requests answered, by protocol and status",
                                       labels=["protocol", "status"])
        for (version, status), count in sorted(figures.requests.items()):
            requests.add_metric([_protocol(version), str(status)], count)
        yield requests
        durations = HistogramMetricFamily("hello_asgi_request_duration_seconds",
                                          "From a request's head read to the app returning", labels=["protocol"])
        body_bytes = CounterMetricFamily("hello_asgi_response_body_bytes", "Response body bytes sent, by protocol",
                                         labels=["protocol"])
        for version, values in sorted(figures.per_version.items()):
            cumulative, total = [], 0.0
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], values[:-2]):
                total += count
                cumulative.append((bound, total))
            durations.add_metric([_protocol(version)], cumulative, sum_value=values[-2])
            body_bytes.add_metric([_protocol(version)], values[-1])
        yield durations
        yield body_bytes
        yield _labelled(CounterMetricFamily("hello_asgi_websocket_sessions", "WebSocket sessions ended, by protocol",
                                            labels=["protocol"]), {_protocol(version): count
                                                                   for version, count in figures.websockets.items()})
        yield _labelled(GaugeMetricFamily("hello_asgi_open_connections", "Connections open now, by protocol",
                                          labels=["protocol"]), figures.open)
        yield CounterMetricFamily("hello_asgi_refused_connections", "Connections refused over --limit-concurrency",
                                  value=figures.refused)
        yield CounterMetricFamily("hello_asgi_worker_restarts", "Workers started to replace others", value=figures.restarts)


def _protocol(version: str) -> str:
    return PROTOCOLS.get(version, version)


def _labelled(family: Any, counts: dict[str, int]) -> Any:
    for label, count in sorted(counts.items()):
        family.add_metric([label], count)
    return family


def metrics_site(figures: Any) -> Any:
    """A twisted.web site answering GET /metrics in Prometheus' text format."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
    except ImportError:
        raise RuntimeError("--metrics-listen needs prometheus_client: pip install 'hello-asgi[metrics]'") from None
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(figures))  # type: ignore[arg-type]

    class Metrics(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            return generate_latest(registry)  # type: ignore[no-any-return]

    root = Resource()
    root.putChild(b"metrics", Metrics())
    site = Site(root)
    site.noisy = False
    site.log = lambda request: None  # Prometheus' scrapes are not the app's traffic
    return site


class ServerMetrics:
    """The figures of one serving process: counting wired into its factory, then served
    on ``listen``, or reported to a supervisor (``report``), or both."""

    def __init__(self, factory: Any, reactor: Any, listen: str | None, report: bool) -> None:
        self.figures = Figures()
        self._factory = factory
        self._reactor = reactor
        self._listen = listen
        self._report = report
        self._port: Any = None
        self._reporting: Any = None
        meter(factory, self.figures)
        self.listener_factory = CountingFactory(factory, self.figures)

    def now(self) -> Figures:
        self.figures.open = open_connections(self._factory.connections)
        return self.figures

    async def start(self) -> None:
        if self._listen is not None:
            self._port = await serve_metrics(self._reactor, self._listen, self.now)
        if self._report:
            from twisted.internet.task import LoopingCall

            self._reporting = LoopingCall(self.report)
            self._reporting.clock = self._reactor
            self._reporting.start(REPORT_INTERVAL, now=False)

    def report(self) -> None:
        from .process import tell_supervisor

        tell_supervisor(b"metrics " + self.now().snapshot().encode())

    async def stop(self) -> None:
        """The last report, once the requests are done, so a supervisor's sums are exact."""
        if self._reporting is not None:
            self._reporting.stop()
            self.report()
        if self._port is not None:
            await self._port.stopListening()


async def serve_metrics(reactor: Any, description: str, figures: Any) -> Any:
    """Listen on ``description`` for Prometheus, answering with ``figures()``."""
    from twisted.internet.endpoints import serverFromString
    from twisted.logger import Logger

    port = await serverFromString(reactor, description).listen(metrics_site(figures))
    address = port.getHost()
    host = f"[{address.host}]" if ":" in address.host else address.host
    Logger(namespace="hello_asgi.metrics").info("Serving metrics on http://{where}/metrics ({description})",
                                                 where=f"{host}:{address.port}", description=description)
    return port
