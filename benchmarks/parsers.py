"""Micro-benchmark behind the choice of HTTP/1.1 parser: parse one typical request head.

Run: python benchmarks/parsers.py. Each candidate turns the same request bytes into a
method, target and header list; the figure is microseconds per request on this machine.
"""

from __future__ import annotations

import timeit

REQUEST = (
    b"GET /api/items?page=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench/1.0\r\n"
    b"Accept: application/json\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
    b"Cookie: session=abc123; theme=dark\r\nX-Request-Id: 1234567890\r\n\r\n"
)


def with_httptools() -> None:
    import httptools

    class Callbacks:
        def __init__(self) -> None:
            self.headers: list[tuple[bytes, bytes]] = []
            self.url = b""

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value))

    callbacks = Callbacks()
    parser = httptools.HttpRequestParser(callbacks)
    parser.feed_data(REQUEST)
    parser.get_method()


def with_h11() -> None:
    import h11

    connection = h11.Connection(h11.SERVER)
    connection.receive_data(REQUEST)
    request = connection.next_event()
    assert isinstance(request, h11.Request)


def with_twisted_web() -> None:
    from twisted.internet.testing import StringTransport
    from twisted.web import http

    class Request(http.Request):
        def process(self) -> None:
            pass

    channel = http.HTTPChannel()
    channel.requestFactory = Request
    channel.makeConnection(StringTransport())
    channel.dataReceived(REQUEST)
    channel.connectionLost(None)  # type: ignore[arg-type]


def main() -> None:
    number = 20000
    print(f"{'parser':<14} {'us/request':>10}")
    for name, function in (("httptools", with_httptools), ("h11", with_h11), ("twisted.web", with_twisted_web)):
        best = min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6
        print(f"{name:<14} {best:>10.2f}")


if __name__ == "__main__":
    main()
