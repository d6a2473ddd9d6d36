"""``twist hello-asgi``: command-line options into a ``Config`` and a service."""

from __future__ import annotations

import getpass
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from twisted.logger import ILogObserver, Logger
from twisted.python import usage

from . import logs, reload, sources
from .access_log import MAIN_LOG, main_log_is
from .bridge import LOOPS, install_asyncio_reactor, log_loop
from .config import Config
from .headers import parse_header
from .loading import AppLoadError, load_app
from .process import is_worker
from .service import ASGIService, quic_address, server_endpoint, tcp_description
from .supervisor import Supervisor

log = Logger(namespace="hello_asgi.cli")

_DEFAULTS = Config()


def _fail(message: str) -> None:
    """Start-up errors are one line on stderr and exit status 1, not a traceback or usage text."""
    sys.exit(f"hello-asgi: {message}")


# twist's own options, which go before "hello-asgi" on its command line.
_TWIST_OPTIONS = ("reactor", "log-file")
USAGE_STATUS = 2  # as argparse and click exit on a usage error
INTERRUPTED_STATUS = 130  # a shell's status for a command SIGINT ended before it served


def _command_name() -> str:
    by_module = sys.argv[0].endswith(os.path.join("hello_asgi", "__main__.py"))
    return "python -m hello_asgi" if by_module else "twist hello-asgi"


def _usage_fail(error: usage.UsageError) -> None:
    """A usage error is its one line and where the help is, not 130 lines of help."""
    message = str(error).replace("Parameter type enforcement failed: ", "")
    for name in _TWIST_OPTIONS:
        if f"No such option '{name}'" in message or f"option --{name} not recognized" in message:
            message = (f"--{name} is an option of twist itself: put it before hello-asgi, "
                       f"as in 'twist --{name}=... hello-asgi --app ...'")
    sys.stderr.write(f"hello-asgi: {message}\nsee '{_command_name()} --help'\n")
    sys.exit(USAGE_STATUS)


class _Named:
    """``coerce``, failing with a message that names the option (``--port abc``)."""

    _WORDS: dict[object, str] = {int: "a whole number", float: "a number"}

    def __init__(self, coerce: Callable[[str], Any], name: str) -> None:
        self._coerce = coerce
        self._name = name
        self.coerceDoc = getattr(coerce, "coerceDoc", "")  # what twisted.python.usage puts in --help

    def __call__(self, value: str) -> Any:
        try:
            return self._coerce(value)
        except ValueError as error:
            expected = self._WORDS.get(self._coerce, str(error))
            raise ValueError(f"--{self._name} expects {expected}, not {value!r}") from None


def _with_named_coercion(parameters: list[list[Any]]) -> list[list[Any]]:
    return [[*entry[:4], _Named(entry[4], entry[0])] if len(entry) > 4 else entry for entry in parameters]


def _loop_kind(name: str) -> str:
    if name not in LOOPS:
        raise ValueError("auto, asyncio or uvloop")
    return name


def version_line() -> str:
    import platform

    import twisted

    from . import __version__

    return f"hello-asgi {__version__} (Twisted {twisted.__version__}, Python {platform.python_version()})"


class Options(usage.Options):
    synopsis = "--app MODULE:ATTR [options]"
    longdesc = (
        "Serve an ASGI app (ASGI 3, or ASGI 2 double callables) over HTTP/1.1 and HTTP/2 "
        "on the asyncio reactor (another --reactor runs apps on an asyncio loop in a thread). "
        "twist's own --reactor and --log-file go before 'hello-asgi' on the command line. Every option "
        "can also be set as HELLO_ASGI_<OPTION> (HELLO_ASGI_TIMEOUT_KEEP_ALIVE=10) or in a --config "
        "TOML file; the command line wins over the environment, the environment over the file."
    )
    optParameters: list[list[Any]] = [
        ["app", "a", None, "The app: module:attribute, or module:factory() to call a factory."],
        ["app-dir", None, ".", "Directory put first on sys.path to find the app's module."],
        ["host", None, "127.0.0.1", "Interface for the default TCP listener."],
        ["port", "p", 8000, "Port for the default TCP listener.", int],
        ["root-path", None, "", "ASGI root_path: the prefix the app is mounted under."],
        ["interface", None, "auto", "auto, asgi3, asgi2 or wsgi: how the app is called (auto tells them "
                                    "apart by the app's signature)."],
        ["wsgi-threads", None, _DEFAULTS.wsgi_threads, "Threads a WSGI app runs on: at most this many of its "
                                                       "calls at once; more requests wait for a free one.", int],
        ["lifespan", None, "auto", "auto, on or off: run the ASGI lifespan protocol."],
        ["access-log", None, "-", "Access log: '-' into the main log, a file path, or 'events' (a "
                                  "twisted.logger event per request, for your own observers; slower)."],
        ["access-log-format", None, None, "The access line: 'json', or Gunicorn's atoms, e.g. "
                                          "'%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\"' "
                                          "(also m U q H B T M D L p S, %({header}i)s, %({header}o)s, %({VAR}e)s)."],
        ["server-header", None, (_DEFAULTS.server_header or b"").decode(), "Value of the Server header."],
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
        ["h2-max-window-size", None, _DEFAULTS.h2_max_window_size,
         "Largest an HTTP/2 stream's receive window grows to while its app keeps up.", int],
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
        # Operating the process: logs, where settings come from, more ways to listen.
        ["log-format", None, None, "text (the default, on a terminal and under a pipe alike) or json "
                                   "(one JSON object per line).", logs.format_named],
        ["log-level", None, None, "Least severe level logged: debug, info (the default), warn, error or "
                                  "critical.", logs.level_named],
        ["config", "c", None, "A TOML file of settings, named as these options are (timeout_keep_alive = 10), "
                              "or as Hypercorn names them (bind, keep_alive_timeout, certfile...)."],
        ["env-file", None, None, "A .env file of variables for the app and HELLO_ASGI_* options "
                                 "(python-dotenv; set variables are not overridden)."],
        ["uds", None, None, "Listen on this UNIX socket path (unix:PATH), in place of --host/--port."],
        ["fd", None, None, "Listen on this inherited listening socket (fd:N), in place of --host/--port.", int],
        ["limit-max-requests", None, 0, "Replace a worker once it has served this many requests, for apps that "
                                        "leak: its replacement serves before it stops (0: never).", int],
        ["max-requests-jitter", None, 0, "Up to this many requests more per worker, at random, so workers are "
                                         "not all replaced at once.", int],
        ["loop", None, _DEFAULTS.loop, "The event loop under the asyncio reactor: auto (uvloop when it is "
                                       "installed, as hello-asgi[uvloop] does), asyncio or uvloop.", _loop_kind],
        ["metrics-listen", None, None, "Serve Prometheus figures at /metrics on this endpoint (tcp:9100), the "
                                       "sum of every worker's; needs prometheus_client."],
        # HTTP/3 (--h3, or --listen quic:PORT); docs/http3.rst gives the reasons for the defaults.
        ["alt-svc-max-age", None, _DEFAULTS.alt_svc_max_age, "Seconds a browser may remember the Alt-Svc "
                                                             "naming HTTP/3.", int],
        ["h3-max-concurrent-streams", None, _DEFAULTS.h3_max_concurrent_streams,
         "Requests one HTTP/3 client may have open at once.", int],
        ["h3-idle-timeout", None, _DEFAULTS.h3_idle_timeout, "Seconds a QUIC connection may stay silent.", float],
        ["h3-max-datagram-size", None, _DEFAULTS.h3_max_datagram_size,
         "Largest UDP payload sent, 1200 to 65527.", int],
        ["h3-stream-window", None, _DEFAULTS.h3_stream_window,
         "HTTP/3 request body buffered per stream for an app that is not reading.", int],
        ["h3-stall-timeout", None, _DEFAULTS.h3_stall_timeout,
         "Seconds an HTTP/3 response may wait on a client that takes none of it.", float],
        ["h3-qpack-table-capacity", None, _DEFAULTS.h3_qpack_table_capacity,
         "QPACK dynamic table bytes a client may use for request headers (0: none).", int],
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
                                "sent by the proxies in --forwarded-allow-ips (the default)."],
        ["no-proxy-headers", None, "Ignore Forwarded / X-Forwarded-* headers, whoever sends them."],
        ["proxy-protocol", None, "Every listener expects a PROXY protocol header (v1 or v2) from a load "
                                 "balancer first; connections without one are closed."],
        ["no-stdlib-logging", None, "Leave the stdlib logging module alone: its records do not go to "
                                    "hello-asgi's log, level and format."],
        ["factory", None, "--app names a factory: call it, with no arguments, for the app."],
        ["h3", None, "Also serve HTTP/3 (QUIC, UDP) at the port of each TLS listener, with its certificate; "
                     "needs hello-asgi[h3]."],
        ["no-alt-svc", None, "With HTTP/3 on: send no Alt-Svc header naming it on HTTP/1.1 and HTTP/2 responses."],
        ["h3-retry", None, "Validate HTTP/3 clients' addresses with a Retry before any handshake work."],
        ["h3-early-data", None, "Accept QUIC 0-RTT early data, which can be replayed: only for idempotent apps."],
    ]
    optParameters = _with_named_coercion(optParameters)

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["reload-dir"] = []
        self["reload-include"] = []
        self["reload-exclude"] = []
        self["header"] = []
        self.arguments: list[str] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        """The command line, with the environment's and the config file's options for what it
        leaves unset; a usage error is one line."""
        try:
            # a worker's command is made of these: every source resolved, none read twice
            self.arguments = sources.all_arguments(self, list(sys.argv[1:] if options is None else options),
                                                   os.environ)
            super().parseOptions(self.arguments)
        except usage.UsageError as error:
            _usage_fail(error)
        except KeyboardInterrupt:  # Ctrl-C while the app imports: nothing to stop yet
            sys.stderr.write("hello-asgi: interrupted while starting\n")
            sys.exit(INTERRUPTED_STATUS)

    def opt_version(self) -> None:
        """Print hello-asgi's version (and Twisted's and Python's), and exit."""
        print(version_line())
        sys.exit(0)

    def opt_listen(self, description: str) -> None:
        """A Twisted server endpoint string to listen on, e.g. tcp:8000:interface=0.0.0.0
        or unix:/run/app.sock; repeat for more. Replaces --host/--port."""
        self["listen"].append(description)

    def opt_header(self, header: str) -> None:
        """A response header for every HTTP response, NAME:VALUE (repeat for more); an app's
        own header of that name wins."""
        try:
            self["header"].append(parse_header(header))
        except ValueError as error:
            raise usage.UsageError(f"--header {error}") from None

    def opt_reload_dir(self, directory: str) -> None:
        """With --reload: a directory to watch (repeat for more; default: --app-dir)."""
        self["reload-dir"].append(directory)

    def opt_reload_include(self, pattern: str) -> None:
        """With --reload: file names that count, as a glob (repeat for more; default: *.py)."""
        self["reload-include"].append(pattern)

    def opt_reload_exclude(self, pattern: str) -> None:
        """With --reload: names of files or directories to ignore, as a glob, besides .venv,
        venv, .git, __pycache__, node_modules, .tox and *.pyc (repeat for more)."""
        self["reload-exclude"].append(pattern)

    def postOptions(self) -> None:
        if not self["app"]:
            raise usage.UsageError("--app is required, e.g. --app hello_asgi.demo:asgi")
        if self["factory"] and not self["app"].endswith("()"):
            self["app"] += "()"
        try:
            reactor = install_asyncio_reactor(self["loop"])
        except ValueError as error:  # uvloop asked for, not installed
            _fail(f"--{error}")
        if self["workers"] < 1:
            _fail("--workers must be at least 1")
        config = self.config()
        if self["tls"] and config.certfile is None:  # the development pair, before validate() asks for TLS
            self._check_tls(config)
        try:
            config.validate()
        except ValueError as error:
            _fail(str(error))
        _check_listeners(reactor, config)
        if config.certfile is not None and "development_certificate" not in self:
            self._check_tls(config)
        if self["reload"]:
            reload.without_bytecode()
        try:
            self["loaded_app"] = load_app(self["app"], self["app-dir"], config.interface, config.wsgi_threads)
        except AppLoadError as error:
            _fail(str(error))
        self["reactor"] = reactor
        self["config"] = config

    def _check_tls(self, config: Config) -> None:
        """The certificate and key (a development pair made for ``--tls`` without them), read
        now so a bad pair is one line at start-up; the TLS stack is loaded only here."""
        from .tls import TLSConfigError, development_certificate, options_for

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

    def key_password(self, key_path: str) -> str | None:
        """From --key-password-file, or asked for on the terminal for an encrypted key."""
        if self["key-password-file"] is not None:
            try:
                return Path(self["key-password-file"]).read_text().rstrip("\r\n")
            except OSError as error:
                _fail(f"--key-password-file {self['key-password-file']}: {error.strerror}")
        from .tls import key_is_encrypted

        if key_is_encrypted(key_path) and sys.stdin.isatty():
            return getpass.getpass(f"Password for {key_path}: ")
        return None

    def listen(self) -> list[str]:
        """--listen, --uds or --fd, else --host and --port."""
        listen = list(self["listen"])
        if self["uds"] is not None:
            listen.append("unix:" + self["uds"].replace(":", "\\:"))
        if self["fd"] is not None:
            listen.append(f"fd:{self['fd']}:domain={_inherited_domain(self['fd'])}")
        return listen or [tcp_description(self["host"], self["port"], self["backlog"])]

    def config(self) -> Config:
        listen = self.listen()
        return Config(
            root_path=self["root-path"],
            interface=self["interface"],
            wsgi_threads=self["wsgi-threads"],
            lifespan=self["lifespan"],
            server_header=None if self["no-server-header"] else self["server-header"].encode("latin-1"),
            date_header=not self["no-date-header"],
            access_log=None if self["no-access-log"] else self["access-log"],
            access_log_format=self["access-log-format"],
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
            h2_max_window_size=self["h2-max-window-size"],
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
            proxy_headers=not self["no-proxy-headers"],
            forwarded_allow_ips=[entry.strip() for entry in self["forwarded-allow-ips"].split(",") if entry.strip()],
            proxy_protocol=self["proxy-protocol"],
            certfile=self["cert"],
            keyfile=self["key"],
            tls_min_version=self["tls-min-version"],
            tls_ciphers=self["tls-ciphers"],
            ca_certs=self["ca"],
            require_client_cert=self["require-client-cert"],
            listen=listen,
            max_requests=self["limit-max-requests"],
            max_requests_jitter=self["max-requests-jitter"],
            default_headers=self["header"],
            metrics_listen=self["metrics-listen"],
            loop=self["loop"],
            h3=self["h3"],
            alt_svc=not self["no-alt-svc"],
            alt_svc_max_age=self["alt-svc-max-age"],
            h3_max_concurrent_streams=self["h3-max-concurrent-streams"],
            h3_idle_timeout=self["h3-idle-timeout"],
            h3_max_datagram_size=self["h3-max-datagram-size"],
            h3_stream_window=self["h3-stream-window"],
            h3_stall_timeout=self["h3-stall-timeout"],
            h3_qpack_table_capacity=self["h3-qpack-table-capacity"],
            h3_retry=self["h3-retry"],
            h3_early_data=self["h3-early-data"],
        )


def _check_listeners(reactor: Any, config: Config) -> None:
    """Every --listen parsed now, so a bad one is one line at start-up."""
    for description in config.listen:
        try:
            if description.startswith("quic:"):
                quic_address(description)
            else:
                server_endpoint(reactor, description)
        except Exception as error:
            _fail(f"--listen {description}: {error}")


def _inherited_domain(fd: int) -> str:
    """INET, INET6 or UNIX: the family of the listening socket inherited as ``fd``."""
    try:
        with socket.socket(fileno=os.dup(fd)) as inherited:
            family = inherited.family
    except OSError as error:
        _fail(f"--fd {fd}: {error.strerror}")
    return {socket.AF_INET6: "INET6", socket.AF_UNIX: "UNIX"}.get(family, "INET")


# What only a supervisor acts on, and whether each takes a value: its workers get the rest.
_SUPERVISOR_ONLY = {"--workers": True, "-w": True, "--reload": False, "--listen": True, "--host": True,
                    "--port": True, "-p": True, "--backlog": True, "--uds": True, "--fd": True,
                    "--reload-dir": True, "--reload-include": True, "--reload-exclude": True,
                    "--metrics-listen": True}


def worker_command(arguments: list[str]) -> list[str]:
    """``twist [its options] hello-asgi [arguments]`` again, for a worker: the supervisor
    hands it the listeners as ``--listen fd:N``."""
    twist_options = sys.argv[1 : sys.argv.index("hello-asgi")] if "hello-asgi" in sys.argv else []
    return [sys.executable, "-m", "twisted", *twist_options, "hello-asgi", *sources.without(arguments, _SUPERVISOR_ONLY)]


def start_logging_as_asked(options: Options) -> None:
    """Hand twist's runner hello-asgi's log format and level (it starts logging after
    ``makeService``), and route stdlib logging into the same log."""
    twist = getattr(options, "parent", None)
    log_format = options["log-format"] or _twist_log_format() or "text"
    level = options["log-level"]
    if twist is not None:
        twist["fileLogObserverFactory"] = _main_log_observer(logs.observer_factory(log_format))
        if level is not None:
            twist["logLevel"] = level
        level = twist["logLevel"]
    main_log_is(log_format, level or logs.level_named("info"))
    if not options["no-stdlib-logging"]:
        logs.capture_stdlib_logging((level or logs.level_named("info")).name)


def _main_log_observer(make: Callable[[IO[str]], ILogObserver]) -> Callable[[IO[str]], ILogObserver]:
    """twist's observer factory, noting the file it opened: the access log writes there itself."""

    def observer(output: IO[str]) -> ILogObserver:
        MAIN_LOG.output = output
        return make(output)

    return observer


def _twist_log_format() -> str | None:
    """The --log-format given to twist itself, before hello-asgi."""
    before = sys.argv[1 : sys.argv.index("hello-asgi")] if "hello-asgi" in sys.argv else []
    for index, argument in enumerate(before):
        if argument.startswith("--log-format="):
            return argument.split("=", 1)[1]
        if argument == "--log-format" and index + 1 < len(before):
            return before[index + 1]
    return None


def _reload_watcher(options: Options, reactor: Any) -> Any:
    return reload.watching(options["app-dir"], options["reload-dir"], options["reload-include"],
                           options["reload-exclude"], reactor)


def makeService(options: Options) -> Any:
    start_logging_as_asked(options)
    log_loop(options["reactor"])
    if "development_certificate" in options:
        cert, fingerprint = options["development_certificate"]
        log.warn("Serving with a development certificate, for development only: {path} "
                 "(SHA-256 {fingerprint})", path=str(cert), fingerprint=fingerprint)
    if not is_worker() and (options["workers"] > 1 or options["reload"] or options["config"].max_requests):
        watch = _reload_watcher(options, options["reactor"]) if options["reload"] else None
        # The supervisor holds the TCP listeners; each worker binds its own UDP socket for
        # HTTP/3, one of an SO_REUSEPORT group (docs/http3.rst).
        quic = [description for description in options["config"].listen if description.startswith("quic:")]
        tcp = [description for description in options["config"].listen if not description.startswith("quic:")]
        command = worker_command(options.arguments) + [part for d in quic for part in ("--listen", d)]
        return Supervisor(command, tcp, options["workers"],
                          options["reactor"], watch, sources.worker_environment(os.environ),
                          metrics_listen=options["config"].metrics_listen)
    return ASGIService(options["loaded_app"], options["config"], reactor=options["reactor"],
                       owns_process=True)
