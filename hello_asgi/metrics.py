"""``--metrics-listen``: Prometheus figures, counted in plain integers, exposed by prometheus_client.

The hot path is one call per request, the one the protocols make for the access log:
while metrics are on, a ``MeteredLog`` stands in the server context's ``request_log``, counts
the finished stream's own attributes (status, HTTP version, duration, body bytes out and
in) and hands the stream on to the access log, if there is one. Counting is into plain
dicts and lists:
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
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IProtocolNegotiationFactory
from zope.interface import implementer

if TYPE_CHECKING:
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
    from twisted.web.http import Request as HTTPRequest
    from twisted.web.server import Request, Site

    Family = TypeVar("Family", CounterMetricFamily, GaugeMetricFamily)

    from .access_log import RequestLog
    from .stream import HTTPStream
    from .websocket_session import WebSocketSession

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds: prometheus_client's defaults
PROTOCOLS = {"1.0": "http/1.0", "1.1": "http/1.1", "2": "h2"}
CONNECTION_KINDS = {"HTTP11Connection": "http/1.1", "HTTP2Connection": "h2", "WebSocketConnection": "websocket"}


class Figures:
    """The counters of one process, or the sum of several, as plain numbers."""

    def __init__(self) -> None:
        # Keyed by the scope's HTTP version ("1.1"), named as a protocol only when exposed.
        self.requests: dict[tuple[str, int], int] = {}  # (version, status) -> count
        self.per_version: dict[str, list[float]] = {}  # version -> duration bucket counts, seconds, bytes out, in
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


_PER_VERSION = len(BUCKETS) + 4  # the buckets (with +Inf), the sum of seconds, body bytes out, body bytes in


def count_request(figures: Figures, version: str, status: int, duration: float, sent: int, received: int) -> None:
    """One finished HTTP exchange into ``figures``."""
    key = (version, status)
    requests = figures.requests
    requests[key] = requests.get(key, 0) + 1
    values = figures.per_version.get(version)
    if values is None:
        values = figures.per_version[version] = [0.0] * _PER_VERSION
    values[bisect.bisect_left(BUCKETS, duration)] += 1
    values[-3] += duration
    values[-2] += sent
    values[-1] += received


class MeteredLog:
    """The server context's ``request_log`` while metrics are on: counts each exchange from the
    stream's own attributes, then hands it to the access log, if there is one."""

    def __init__(self, figures: Figures, following: RequestLog | None) -> None:
        self._figures = figures
        self._following = following

    def http(self, stream: HTTPStream) -> None:
        count_request(self._figures, stream.scope["http_version"], stream.status,
                      time.monotonic() - stream.started_at, stream.bytes_sent, stream.bytes_received)
        if self._following is not None:
            self._following.http(stream)

    def websocket(self, session: WebSocketSession) -> None:
        websockets = self._figures.websockets
        version = session.scope["http_version"]
        websockets[version] = websockets.get(version, 0) + 1
        if self._following is not None:
            self._following.websocket(session)


def meter(factory: Any, figures: Figures) -> None:
    """Count every exchange ``factory`` serves: one call per request, with or without an access log."""
    context = factory.context
    context.request_log = MeteredLog(figures, context.request_log)


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

    def __init__(self, figures: Callable[[], Figures]) -> None:
        self._figures = figures  # gives the Figures to expose

    def collect(self) -> Iterator[Metric]:
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
        bytes_in = CounterMetricFamily("hello_asgi_request_body_bytes", "Request body bytes received, by protocol",
                                       labels=["protocol"])
        for version, values in sorted(figures.per_version.items()):
            cumulative, total = [], 0.0
            for bound, in_bucket in zip([*map(str, BUCKETS), "+Inf"], values[:-3]):
                total += in_bucket
                cumulative.append((bound, total))
            durations.add_metric([_protocol(version)], cumulative, sum_value=values[-3])
            body_bytes.add_metric([_protocol(version)], values[-2])
            bytes_in.add_metric([_protocol(version)], values[-1])
        yield durations
        yield body_bytes
        yield bytes_in
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


def _labelled(family: Family, counts: dict[str, int]) -> Family:
    for label, count in sorted(counts.items()):
        family.add_metric([label], count)
    return family


def metrics_site(figures: Callable[[], Figures]) -> Site:
    """A twisted.web site answering GET /metrics in Prometheus' text format."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
    except ImportError:
        raise RuntimeError("--metrics-listen needs prometheus_client: pip install 'hello-asgi[metrics]'") from None
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(figures))

    class Metrics(Resource):
        isLeaf = True

        def render_GET(self, request: Request) -> bytes:
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            return generate_latest(registry)

    class QuietSite(Site):
        noisy = False

        def log(self, request: HTTPRequest) -> None:
            """Nothing: Prometheus' scrapes are not the app's traffic."""

    root = Resource()
    root.putChild(b"metrics", Metrics())
    return QuietSite(root)


class ServerMetrics:
    """The figures of one serving process: counting wired into its factory, then served
    on ``listen``, or reported to a supervisor (``report``), or both."""

    def __init__(self, factory: Any, reactor: Any, listen: str | None, report: bool) -> None:
        self.figures = Figures()
        self._factory = factory
        self._reactor = reactor
        self._listen = listen
        self._report = report
        self._port: IListeningPort | None = None
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
            await maybeDeferred(self._port.stopListening)  # a Deferred or None


async def serve_metrics(reactor: Any, description: str, figures: Callable[[], Figures]) -> IListeningPort:
    """Listen on ``description`` for Prometheus, answering with ``figures()``."""
    from twisted.internet.endpoints import serverFromString
    from twisted.logger import Logger

    port = await serverFromString(reactor, description).listen(metrics_site(figures))
    address = port.getHost()
    host = f"[{address.host}]" if ":" in address.host else address.host
    Logger(namespace="hello_asgi.metrics").info("Serving metrics on http://{where}/metrics ({description})",
                                                 where=f"{host}:{address.port}", description=description)
    return port
