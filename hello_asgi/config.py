"""Every server setting in one typed object, with its default and the reason for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .proxy import TrustedProxies

Interface = Literal["auto", "asgi3", "asgi2", "wsgi"]
LifespanMode = Literal["auto", "on", "off"]
LoopKind = Literal["auto", "asyncio", "uvloop"]


@dataclass
class Config:
    """The settings of one server; the defaults are safe to put on the internet.

    Timeouts are in seconds, sizes in bytes.
    """

    #: Prefix the app is mounted under (ASGI ``root_path``), e.g. behind a proxy that strips it.
    root_path: str = ""
    #: How the app is called; ``auto`` tells ASGI 3, ASGI 2 and WSGI apart by the signature.
    interface: Interface = "auto"
    #: Threads a WSGI app runs on (at most this many calls at once; more wait for one):
    #: the command's ``--wsgi-threads``, and what ``ASGIServerFactory``, ``ASGIService`` and
    #: ``run()`` give a WSGI app they wrap.
    wsgi_threads: int = 10
    #: ``auto`` runs lifespan but carries on quietly if the app does not support it.
    lifespan: LifespanMode = "auto"

    #: Send a ``Server`` header (``None`` for none); apps may send their own instead.
    server_header: bytes | None = b"hello-asgi"
    #: Send a ``Date`` header, as RFC 9110 asks of origin servers with a clock.
    date_header: bool = True
    #: One line per request, buffered and written once a loop turn (``access_log.py``):
    #: ``-`` into the main log, a path for a file of its own, ``events`` as a twisted.logger
    #: event per request (namespace ``hello_asgi.access``) for your own observers, ``None``
    #: for none.
    access_log: str | None = "-"
    #: The access line: ``None`` for hello-asgi's own, ``json`` for JSON lines, or a format
    #: of Gunicorn's atoms (``%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s``...).
    access_log_format: str | None = None

    #: An idle keep-alive connection is closed after this long (Uvicorn: 5 s).
    keep_alive_timeout: float = 5.0
    #: A client must send a whole request head within this long (slowloris defence).
    request_head_timeout: float = 10.0
    #: On shutdown, in-flight requests get this long to finish before connections are cut.
    graceful_timeout: float = 30.0
    #: A connection the server closes is gone within this long, whatever the peer does: the
    #: close lingers (RFC 9112 section 9.6) and TLS waits for the peer's close_notify only
    #: this long, then the connection is reset. A slow reader gets this long for the last
    #: bytes of its response.
    close_timeout: float = 10.0
    #: A request body may pause this long between two reads before the request gets a 408
    #: (or, once the response has begun, the connection is cut); the app not reading does
    #: not count. nginx's ``client_body_timeout``: 60 s.
    body_timeout: float = 30.0

    #: Longest request target (the URL in the request line); longer gets 414 (gunicorn: 8190).
    max_request_line: int = 8190
    #: Largest request head (request line and headers); larger gets 431 (h11: 16 KiB).
    max_head_size: int = 16384
    #: Most header fields in one request; more gets 431 (gunicorn: 100).
    max_header_count: int = 100
    #: Most open connections; beyond it new connections get 503 and are closed.
    max_connections: int = 4096
    #: Requests one connection may carry before the server closes it gracefully (HTTP/1.1:
    #: ``Connection: close`` on the last response; HTTP/2: GOAWAY); 0 for no limit. nginx uses 1000.
    max_requests_per_connection: int = 0
    #: Request body bytes buffered for an app that is not calling ``receive()`` before the
    #: socket stops being read.
    body_buffer_size: int = 65536
    #: HTTP/1.1: the request body bytes read and dropped, after a response sent before the
    #: body ended, to keep the connection; a longer body closes it instead (the close lingers,
    #: so the client still reads the response).
    max_body_drain: int = 1024 * 1024
    #: Listen backlog for listeners the server creates (Uvicorn: 2048).
    backlog: int = 2048

    #: The three ways into HTTP/2, each on by default: a cleartext connection that opens with
    #: the HTTP/2 preface (prior knowledge), an HTTP/1.1 request asking ``Upgrade: h2c``, and
    #: ``h2`` offered by TLS ALPN.
    h2_prior_knowledge: bool = True
    h2c_upgrade: bool = True
    h2_alpn: bool = True
    #: Streams one HTTP/2 client may have open at once (Hypercorn: 100).
    h2_max_concurrent_streams: int = 100
    #: Each stream's receive window: the request body buffered for an app that is not reading.
    h2_initial_window_size: int = 65535
    #: Largest HTTP/2 frame payload the server accepts (the RFC's minimum and default).
    h2_max_frame_size: int = 16384
    #: How long an HTTP/2 response may wait on a client that keeps its flow-control window
    #: shut before the connection is closed (a zero-window client pins the app and its buffers).
    h2_stall_timeout: float = 30.0
    #: Streams a client may cancel before their response, per 10 s, before the connection
    #: gets GOAWAY ENHANCE_YOUR_CALM (Rapid Reset, CVE-2023-44487).
    h2_max_resets: int = 200
    #: PING and SETTINGS frames a client may send per 10 s, each of which makes the server
    #: answer (CVE-2019-9512, CVE-2019-9515).
    h2_max_control_frames: int = 100
    #: Frames that carry nothing and ask for nothing (empty DATA, PRIORITY, WINDOW_UPDATE
    #: while no response waits for window, unknown types) a client may send per 10 s, each
    #: of which costs a parse (CVE-2019-9518).
    h2_max_empty_frames: int = 1000

    #: Serve WebSockets (``Upgrade: websocket`` and, over HTTP/2, extended CONNECT); when
    #: off, such requests are served to the app as plain HTTP requests.
    websocket: bool = True
    #: Largest WebSocket message (after decompression) and frame a client may send; larger
    #: closes the connection with 1009 (Uvicorn and Hypercorn: 16 MiB).
    ws_max_message_size: int = 16 * 1024 * 1024
    ws_max_frame_size: int = 16 * 1024 * 1024
    #: Negotiate permessage-deflate (RFC 7692) when the client offers it.
    ws_per_message_deflate: bool = True
    #: Ping an idle peer this often, and close the connection if no pong comes within
    #: ``ws_ping_timeout`` (0 for no pings); dead peers otherwise hold memory forever
    #: (Uvicorn: 20 s and 20 s).
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    #: The app must accept or deny a WebSocket within this long of the request.
    ws_handshake_timeout: float = 10.0
    #: Received messages queued for an app that is not calling ``receive()``, before the
    #: socket stops being read (websockets' ``max_queue``: 16 frames).
    ws_max_queue: int = 16

    #: Serve TLS on every listener with this PEM certificate chain and PEM key (ALPN offers
    #: h2, then http/1.1). ``twist hello-asgi --tls`` alone makes a development pair.
    certfile: str | None = None
    keyfile: str | None = None
    #: The password of an encrypted ``keyfile``.
    key_password: str | None = None
    #: The oldest TLS version accepted: ``1.2`` (every client of the last decade) or ``1.3``.
    tls_min_version: str = "1.2"
    #: An OpenSSL cipher string for TLS 1.2, in place of Twisted's modern list (forward-secret
    #: AEAD ciphers only). TLS 1.3's suites are all strong and are not restricted.
    tls_ciphers: str | None = None
    #: Ask clients for a certificate that verifies against the CA certificates in this PEM
    #: file (mutual TLS); one that does not verify fails the handshake.
    ca_certs: str | None = None
    #: With ``ca_certs``: refuse clients that send no certificate.
    require_client_cert: bool = False

    #: Cancel an app still busy with a request after this many seconds: its client gets a
    #: 504 (or, once the response has begun, a cut one). None: no limit, as in Uvicorn;
    #: set it where a stuck app must not hold connections and memory forever.
    request_timeout: float | None = None

    #: Rewrite each request's ``client``, ``scheme`` and ``server`` from its ``Forwarded``
    #: or ``X-Forwarded-*`` headers, for connections from ``forwarded_allow_ips`` only.
    #: ``twist hello-asgi`` and ``run()`` turn it on (``--no-proxy-headers`` turns it off);
    #: an embedded server leaves it off unless asked.
    proxy_headers: bool = False
    #: The proxies trusted for those headers: addresses, networks (``10.0.0.0/8``), ``unix``
    #: for UNIX-socket peers, or ``*`` for every peer (Uvicorn's default: 127.0.0.1).
    forwarded_allow_ips: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    #: Every listener expects an HAProxy PROXY protocol header (v1 or v2) before anything
    #: else, and takes the client's and server's addresses from it; a connection without a
    #: valid one is closed.
    proxy_protocol: bool = False

    #: Listening endpoints, as Twisted endpoint strings.
    listen: list[str] = field(default_factory=list)
    #: The largest an HTTP/2 request body's receive window grows to while its app keeps up
    #: (from ``h2_initial_window_size``, doubling), and the most all of a connection's
    #: streams may have grown by together: what a connection may buffer beyond its initial
    #: windows (gRPC and Go grow theirs to 16 MiB).
    h2_max_window_size: int = 16 * 1024 * 1024

    # -- Operating the process ---------------------------------------------------------
    #: A worker that has served this many requests (HTTP requests and WebSocket sessions)
    #: is replaced by a fresh one, for apps that leak (0: never). Under ``twist`` a
    #: supervisor starts the replacement first; a process of its own stops gracefully.
    max_requests: int = 0
    #: Up to this many requests more, drawn at random per worker, so workers started
    #: together are not all replaced at once.
    max_requests_jitter: int = 0
    #: Response headers added to every HTTP response that does not set the same name
    #: itself, as ``(name, value)`` byte pairs (``--header NAME:VALUE``).
    default_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: Serve Prometheus figures at ``/metrics`` on this endpoint string (``tcp:9100``), on a
    #: listener of its own; needs prometheus_client (``hello-asgi[metrics]``).
    metrics_listen: str | None = None
    #: The event loop the asyncio reactor runs on, where hello-asgi installs it (the command,
    #: ``run()``): ``uvloop`` (``hello-asgi[uvloop]``), ``asyncio``, or ``auto``, uvloop
    #: when it is installed (Uvicorn's ``--loop``). An embedded server runs on its host's.
    loop: LoopKind = "auto"

    # -- HTTP/3 (``hello-asgi[h3]``, docs/http3.rst) ------------------------------------
    #: Serve HTTP/3 over QUIC on UDP at the port of each TLS listener, with its certificate.
    h3: bool = False
    #: While HTTP/3 is on, HTTP/1.1 and HTTP/2 responses over TLS carry ``Alt-Svc`` naming
    #: it, for ``alt_svc_max_age`` seconds, so browsers move over by themselves.
    alt_svc: bool = True
    alt_svc_max_age: int = 86400
    #: Requests one HTTP/3 client may have open at once (QUIC's MAX_STREAMS; Hypercorn: 100).
    h3_max_concurrent_streams: int = 100
    #: A QUIC connection with no packet for this long is gone (the smaller of the two ends'
    #: wins; Chromium's: 30 s).
    h3_idle_timeout: float = 30.0
    #: Largest UDP payload sent (1200, QUIC's minimum, passes every path; 1350 passes nearly
    #: every path, as Chromium assumes).
    h3_max_datagram_size: int = 1350
    #: Each request stream's receive window: the request body buffered for an app that is
    #: not reading (the connection's covers every stream's).
    h3_stream_window: int = 256 * 1024
    #: How long an HTTP/3 response may wait on a client that takes none of it before the
    #: stream is reset.
    h3_stall_timeout: float = 30.0
    #: The QPACK dynamic table a client may use for its request headers. 0 (none): a
    #: reference into the table costs a byte and may stand for 4 KiB, so a small header
    #: block could decode to megabytes.
    h3_qpack_table_capacity: int = 0
    #: Address validation by Retry before any handshake work (one more round trip).
    h3_retry: bool = False
    #: Accept 0-RTT early data on resumed connections. Off: early data can be replayed by
    #: anyone who saw it, which is unsafe for any request that is not idempotent.
    h3_early_data: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work: the rules are the
        tables below the class, then the two settings that are checked by parsing them."""
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, not {value!r}")
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in _AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for works, problem in _RULES:
            if not works(self):
                raise ValueError(problem.format(config=self))
        TrustedProxies(self.forwarded_allow_ips)  # raises for an entry that is not one
        if self.access_log_format not in (None, "", "json"):
            from .access_log import prepared_format

            prepared_format(self.access_log_format)  # an unknown atom is refused here, at start


# The settings that take one of a few words.
_CHOICES: dict[str, tuple[str, ...]] = {
    "interface": ("auto", "asgi3", "asgi2", "wsgi"),
    "lifespan": ("auto", "on", "off"),
    "loop": ("auto", "asyncio", "uvloop"),
    "tls_min_version": ("1.2", "1.3"),
}
# Durations that must be more than zero (a timeout of 0 would close every connection at once).
_POSITIVE = ("keep_alive_timeout", "request_head_timeout", "graceful_timeout", "close_timeout", "body_timeout",
             "h2_stall_timeout", "ws_handshake_timeout", "h3_max_concurrent_streams", "h3_idle_timeout",
             "h3_stall_timeout", "alt_svc_max_age")
# Limits and sizes with no "off": 0 would refuse everything.
_AT_LEAST_ONE = ("max_request_line", "max_head_size", "max_header_count", "max_connections", "body_buffer_size",
                 "max_body_drain", "backlog", "h2_max_concurrent_streams", "h2_max_resets", "h2_max_control_frames",
                 "h2_max_empty_frames", "ws_max_message_size", "ws_max_frame_size", "ws_max_queue",
                 "wsgi_threads")
# Every other rule: whether a config keeps it, and what to say (``config`` is the Config) when not.
_RULES: tuple[tuple[Callable[[Config], bool], str], ...] = (
    (lambda config: not config.root_path or (config.root_path.startswith("/") and not config.root_path.endswith("/")),
     "root_path must start with '/' and not end with one: {config.root_path!r}"),
    (lambda config: config.max_requests >= 0 and config.max_requests_jitter >= 0,
     "max_requests and max_requests_jitter must be 0 (off) or more"),
    (lambda config: config.max_requests_per_connection >= 0,
     "max_requests_per_connection must be 0 (no limit) or more"),
    (lambda config: 65535 <= config.h2_initial_window_size <= 2**31 - 1,
     "h2_initial_window_size must be from 65535 to 2**31-1"),
    (lambda config: config.h2_initial_window_size <= config.h2_max_window_size <= 2**31 - 1,
     "h2_max_window_size must be from h2_initial_window_size to 2**31-1"),
    (lambda config: 16384 <= config.h2_max_frame_size <= 2**24 - 1,
     "h2_max_frame_size must be from 16384 to 2**24-1"),
    (lambda config: config.ws_ping_interval >= 0 and config.ws_ping_timeout >= 0,
     "ws_ping_interval and ws_ping_timeout must be 0 (off) or more"),
    (lambda config: config.request_timeout is None or config.request_timeout > 0,
     "request_timeout must be positive, or None for no limit"),
    (lambda config: config.ca_certs is not None or not config.require_client_cert,
     "require_client_cert needs ca_certs, the CA certificates to verify them with"),
    (lambda config: (config.certfile is None) == (config.keyfile is None),
     "a TLS certificate and key go together: give both or neither"),
    (lambda config: config.max_request_line <= config.max_head_size,
     "max_request_line cannot exceed max_head_size"),
    # HTTP/3 (the block of settings at the end of the class)
    (lambda config: config.certfile is not None or not _wants_http3(config),
     "HTTP/3 needs TLS: give --cert and --key, or --tls"),
    (lambda config: config.ca_certs is None or not _wants_http3(config),
     "HTTP/3 does not ask for client certificates: leave out --ca, or --h3"),
    (lambda config: 1200 <= config.h3_max_datagram_size <= 65527,
     "h3_max_datagram_size must be from 1200 to 65527"),
    (lambda config: config.h3_stream_window >= 16384 and config.h3_qpack_table_capacity >= 0,
     "h3_stream_window must be at least 16384, h3_qpack_table_capacity 0 or more"),
)


def _wants_http3(config: Config) -> bool:
    return config.h3 or any(description.startswith("quic:") for description in config.listen)
