"""``twist hello-asgi``: command-line options into a ``Config`` and a service."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.python import usage

from .bridge import install_asyncio_reactor
from .config import Config
from .loading import AppLoadError, load_app
from .service import ASGIService, server_endpoint, tcp_description
from .supervisor import Supervisor
from .tls import TLSConfigError, development_certificate, key_is_encrypted, options_for

log = Logger(namespace="hello_asgi.cli")

_DEFAULTS = Config()


def _fail(message: str) -> None:
    """Start-up errors are one line on stderr and exit status 1, not a traceback or usage text."""
    sys.exit(f"hello-asgi: {message}")


class Options(usage.Options):
    synopsis = "--app MODULE:ATTR [options]"
    longdesc = (
        "Serve an ASGI app (ASGI 3, or ASGI 2 double callables) over HTTP/1.1 and HTTP/2 "
        "on the asyncio reactor (another --reactor runs apps on an asyncio loop in a thread). Twisted's own --log-level, --log-file, --log-format and --reactor go before "
        "'hello-asgi' on the command line."
    )
    optParameters = [
        ["app", "a", None, "The app: module:attribute, or module:factory() to call a factory."],
        ["app-dir", None, ".", "Directory put first on sys.path to find the app's module."],
        ["host", None, "127.0.0.1", "Interface for the default TCP listener."],
        ["port", "p", 8000, "Port for the default TCP listener.", int],
        ["root-path", None, "", "ASGI root_path: the prefix the app is mounted under."],
        ["interface", None, "auto", "auto, asgi3 or asgi2: how the app is called."],
        ["lifespan", None, "auto", "auto, on or off: run the ASGI lifespan protocol."],
        ["access-log", None, "-", "Access log: '-' into the main log, or a file path."],
        ["server-header", None, _DEFAULTS.server_header.decode(), "Value of the Server header."],
        ["timeout-keep-alive", None, _DEFAULTS.keep_alive_timeout,
         "Seconds an idle keep-alive connection is kept.", float],
        ["timeout-request-head", None, _DEFAULTS.request_head_timeout,
         "Seconds a client has to send a whole request head.", float],
        ["timeout-graceful-shutdown", None, _DEFAULTS.graceful_timeout,
         "Seconds in-flight requests get to finish on shutdown.", float],
        ["timeout-close", None, _DEFAULTS.close_timeout,
         "Seconds a connection the server closes may take to go (a client that does not read its last "
         "bytes, or sends no TLS close_notify) before it is reset.", float],
        ["timeout-body", None, _DEFAULTS.body_timeout,
         "Seconds a request body may pause between reads before the request gets a 408.", float],
        ["timeout-request", None, 0.0,
         "Seconds an app may take over a request before it is cancelled and the client gets a 504 "
         "(0: no limit).", float],
        ["limit-request-line", None, _DEFAULTS.max_request_line,
         "Longest request target in bytes (414 beyond).", int],
        ["limit-request-head", None, _DEFAULTS.max_head_size,
         "Largest request head in bytes (431 beyond).", int],
        ["limit-request-fields", None, _DEFAULTS.max_header_count,
         "Most header fields in a request (431 beyond).", int],
        ["limit-concurrency", None, _DEFAULTS.max_connections,
         "Most open connections (503 beyond).", int],
        ["limit-body-drain", None, _DEFAULTS.max_body_drain,
         "Bytes of a request body the app answered without reading that are read and dropped to keep "
         "the connection; a longer body closes it.", int],
        ["backlog", None, _DEFAULTS.backlog, "Listen backlog of the default listener.", int],
        ["limit-requests-per-connection", None, _DEFAULTS.max_requests_per_connection,
         "Requests a connection carries before it is closed gracefully (0: no limit).", int],
        ["h2-max-concurrent-streams", None, _DEFAULTS.h2_max_concurrent_streams,
         "Streams one HTTP/2 client may have open at once.", int],
        ["h2-initial-window-size", None, _DEFAULTS.h2_initial_window_size,
         "HTTP/2 stream receive window: body buffered for an app that is not reading.", int],
        ["h2-max-frame-size", None, _DEFAULTS.h2_max_frame_size, "Largest HTTP/2 frame accepted.", int],
        ["h2-max-resets", None, _DEFAULTS.h2_max_resets,
         "Streams a client may cancel early per 10 s before GOAWAY (Rapid Reset).", int],
        ["h2-max-control-frames", None, _DEFAULTS.h2_max_control_frames,
         "PING/SETTINGS frames a client may send per 10 s before GOAWAY.", int],
        ["h2-max-empty-frames", None, _DEFAULTS.h2_max_empty_frames,
         "HTTP/2 frames that carry nothing (empty DATA, PRIORITY, idle WINDOW_UPDATE, unknown types) a "
         "client may send per 10 s before GOAWAY.", int],
        ["ws-max-size", None, _DEFAULTS.ws_max_message_size,
         "Largest WebSocket message a client may send, after decompression (larger: close 1009).", int],
        ["ws-max-frame-size", None, _DEFAULTS.ws_max_frame_size,
         "Largest WebSocket frame a client may send (larger: close 1009).", int],
        ["ws-ping-interval", None, _DEFAULTS.ws_ping_interval, "Seconds between WebSocket pings (0: none).", float],
        ["ws-ping-timeout", None, _DEFAULTS.ws_ping_timeout,
         "Seconds a WebSocket peer has to answer a ping before it is closed.", float],
        ["ws-handshake-timeout", None, _DEFAULTS.ws_handshake_timeout,
         "Seconds an app has to accept or deny a WebSocket.", float],
        ["ws-max-queue", None, _DEFAULTS.ws_max_queue,
         "WebSocket messages queued for an app that is not receiving before reading stops.", int],
        ["workers", "w", 1, "Worker processes sharing the listeners, under a supervisor that replaces "
                            "any that die and restarts them one by one on SIGHUP.", int],
        ["forwarded-allow-ips", None, ",".join(_DEFAULTS.forwarded_allow_ips),
         "Comma-separated proxies trusted for --proxy-headers: addresses, networks, 'unix', or '*' for all."],
        ["cert", None, None, "TLS certificate chain (PEM) for every listener."],
        ["key", None, None, "TLS private key (PEM) for --cert; an encrypted one is asked for its "
                            "password on the terminal, or give --key-password-file."],
        ["key-password-file", None, None, "File holding the password of an encrypted --key."],
        ["tls-min-version", None, _DEFAULTS.tls_min_version, "Oldest TLS version accepted: 1.2 or 1.3."],
        ["tls-ciphers", None, None, "OpenSSL cipher string for TLS 1.2 (default: Twisted's modern list)."],
        ["ca", None, None, "CA certificates (PEM) to verify client certificates with: asks for them "
                           "(mutual TLS)."],
    ]
    optFlags = [
        ["no-access-log", None, "Log no line per request."],
        ["no-server-header", None, "Send no Server header."],
        ["no-date-header", None, "Send no Date header."],
        ["tls", None, "Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN); without --cert/--key, with a "
                      "development certificate for localhost made and cached for you."],
        ["no-h2-prior-knowledge", None, "Do not take cleartext connections that open with the HTTP/2 preface."],
        ["no-h2c-upgrade", None, "Do not switch HTTP/1.1 requests with 'Upgrade: h2c' to HTTP/2."],
        ["no-h2-alpn", None, "Offer only http/1.1 by TLS ALPN, not h2."],
        ["no-websocket", None, "Serve no WebSockets: upgrade requests reach the app as plain HTTP."],
        ["no-ws-per-message-deflate", None, "Do not negotiate WebSocket compression (permessage-deflate)."],
        ["require-client-cert", None, "With --ca: refuse clients without a valid certificate."],
        ["reload", None, "For development: restart the server when a Python file under --app-dir changes."],
        ["proxy-headers", None, "Take client, scheme and server from Forwarded / X-Forwarded-* headers "
                                "sent by the proxies in --forwarded-allow-ips."],
        ["proxy-protocol", None, "Every listener expects a PROXY protocol header (v1 or v2) from a load "
                                 "balancer first; connections without one are closed."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self.arguments: list[str] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        self.arguments = list(sys.argv[1:] if options is None else options)  # a worker's command is made of them
        super().parseOptions(options)

    def opt_listen(self, description: str) -> None:
        """A Twisted server endpoint string to listen on, e.g. tcp:8000:interface=0.0.0.0
        or unix:/run/app.sock; repeat for more. Replaces --host/--port."""
        self["listen"].append(description)

    def postOptions(self) -> None:
        if not self["app"]:
            raise usage.UsageError("--app is required, e.g. --app hello_asgi.demo:asgi")
        reactor = install_asyncio_reactor()
        if self["workers"] < 1:
            _fail("--workers must be at least 1")
        config = self.config()
        try:
            config.validate()
        except ValueError as error:
            _fail(str(error))
        for description in config.listen:
            try:
                server_endpoint(reactor, description)
            except Exception as error:
                _fail(f"--listen {description}: {error}")
        if self["tls"] and config.certfile is None:
            cert, key, fingerprint = development_certificate()
            config.certfile, config.keyfile = str(cert), str(key)
            self["development_certificate"] = (cert, fingerprint)
        if config.certfile is not None and config.keyfile is not None:
            config.key_password = self.key_password(config.keyfile)
            try:
                options_for(config)
            except TLSConfigError as error:
                _fail(str(error))
        try:
            self["loaded_app"] = load_app(self["app"], self["app-dir"], config.interface)
        except AppLoadError as error:
            _fail(str(error))
        self["reactor"] = reactor
        self["config"] = config

    def key_password(self, key_path: str) -> str | None:
        """From --key-password-file, or asked for on the terminal for an encrypted key."""
        if self["key-password-file"] is not None:
            try:
                return Path(self["key-password-file"]).read_text().rstrip("\r\n")
            except OSError as error:
                _fail(f"--key-password-file {self['key-password-file']}: {error.strerror}")
        if key_is_encrypted(key_path) and sys.stdin.isatty():
            return getpass.getpass(f"Password for {key_path}: ")
        return None

    def config(self) -> Config:
        listen = self["listen"] or [tcp_description(self["host"], self["port"], self["backlog"])]
        return Config(
            root_path=self["root-path"],
            interface=self["interface"],
            lifespan=self["lifespan"],
            server_header=None if self["no-server-header"] else self["server-header"].encode("latin-1"),
            date_header=not self["no-date-header"],
            access_log=None if self["no-access-log"] else self["access-log"],
            keep_alive_timeout=self["timeout-keep-alive"],
            request_head_timeout=self["timeout-request-head"],
            graceful_timeout=self["timeout-graceful-shutdown"],
            close_timeout=self["timeout-close"],
            body_timeout=self["timeout-body"],
            max_body_drain=self["limit-body-drain"],
            request_timeout=self["timeout-request"] or None,
            max_request_line=self["limit-request-line"],
            max_head_size=self["limit-request-head"],
            max_header_count=self["limit-request-fields"],
            max_connections=self["limit-concurrency"],
            backlog=self["backlog"],
            h2_prior_knowledge=not self["no-h2-prior-knowledge"],
            h2c_upgrade=not self["no-h2c-upgrade"],
            h2_alpn=not self["no-h2-alpn"],
            max_requests_per_connection=self["limit-requests-per-connection"],
            h2_max_concurrent_streams=self["h2-max-concurrent-streams"],
            h2_initial_window_size=self["h2-initial-window-size"],
            h2_max_frame_size=self["h2-max-frame-size"],
            h2_max_resets=self["h2-max-resets"],
            h2_max_control_frames=self["h2-max-control-frames"],
            h2_max_empty_frames=self["h2-max-empty-frames"],
            websocket=not self["no-websocket"],
            ws_max_message_size=self["ws-max-size"],
            ws_max_frame_size=self["ws-max-frame-size"],
            ws_per_message_deflate=not self["no-ws-per-message-deflate"],
            ws_ping_interval=self["ws-ping-interval"],
            ws_ping_timeout=self["ws-ping-timeout"],
            ws_handshake_timeout=self["ws-handshake-timeout"],
            ws_max_queue=self["ws-max-queue"],
            proxy_headers=self["proxy-headers"],
            forwarded_allow_ips=[entry.strip() for entry in self["forwarded-allow-ips"].split(",") if entry.strip()],
            proxy_protocol=self["proxy-protocol"],
            certfile=self["cert"],
            keyfile=self["key"],
            tls_min_version=self["tls-min-version"],
            tls_ciphers=self["tls-ciphers"],
            ca_certs=self["ca"],
            require_client_cert=self["require-client-cert"],
            listen=listen,
        )


# What only a supervisor acts on, and whether each takes a value: its workers get the rest.
_SUPERVISOR_ONLY = {"--workers": True, "-w": True, "--reload": False, "--listen": True, "--host": True,
                    "--port": True, "-p": True, "--backlog": True}


def worker_command(arguments: list[str]) -> list[str]:
    """``twist [its options] hello-asgi [arguments]`` again, for a worker: the supervisor
    hands it the listeners as ``--listen fd:N``."""
    twist_options = sys.argv[1 : sys.argv.index("hello-asgi")] if "hello-asgi" in sys.argv else []
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
            continue
        name = argument.split("=", 1)[0]
        if name in _SUPERVISOR_ONLY:
            skip = _SUPERVISOR_ONLY[name] and "=" not in argument
        elif not (argument[:2] in ("-w", "-p") and len(argument) > 2):  # -w4, -p8000
            kept.append(argument)
    return [sys.executable, "-m", "twisted", *twist_options, "hello-asgi", *kept]


def makeService(options: Options) -> Any:
    if "development_certificate" in options:
        cert, fingerprint = options["development_certificate"]
        log.warn("Serving with a development certificate, for development only: {path} "
                 "(SHA-256 {fingerprint})", path=str(cert), fingerprint=fingerprint)
    if options["workers"] > 1 or options["reload"]:
        watch = Path(options["app-dir"]).resolve() if options["reload"] else None
        return Supervisor(worker_command(options.arguments), options["config"].listen, options["workers"],
                          options["reactor"], watch)
    return ASGIService(options["loaded_app"], options["config"], reactor=options["reactor"],
                       owns_process=True)
