"""``python -m hello_asgi`` and ``hello_asgi.run()``: the server without typing ``twist``."""

from __future__ import annotations

import dataclasses
import runpy
import sys
from typing import Any

from .config import Config

# What run() takes besides Config's fields, with the command's defaults.
_PROCESS_OPTIONS = {"log_format": "text", "log_level": "info", "stdlib_logging": True, "app_dir": "."}


def main(arguments: list[str] | None = None) -> None:
    """``python -m hello_asgi ARGS`` is ``twist hello-asgi ARGS``: the same options, logs,
    signals and workers (``python -m twisted`` runs with the plugin's name put first)."""
    sys.argv = [sys.argv[0], "hello-asgi", *(sys.argv[1:] if arguments is None else arguments)]
    runpy.run_module("twisted", run_name="__main__", alter_sys=False)


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve ``app`` (an ASGI app, or ``"module:attr"``) as ``twist hello-asgi`` would, for
    ``if __name__ == "__main__":``. ``host`` and ``port`` are the command's; every other
    option goes by its ``Config`` name (``listen=[...]``, ``keep_alive_timeout=10``), plus
    ``log_format``, ``log_level``, ``stdlib_logging`` and ``app_dir``. It installs the asyncio
    reactor and runs it; like the command, the process ends when the server stops: status 0
    after a graceful stop, 1 if it could not start."""
    process = {name: options.pop(name, default) for name, default in _PROCESS_OPTIONS.items()}
    config = _config(host, port, options)
    from .bridge import install_asyncio_reactor

    reactor = install_asyncio_reactor()
    if isinstance(app, str):
        from .loading import load_app

        app = load_app(app, process["app_dir"], config.interface)
    _start_logging(process["log_format"], process["log_level"], process["stdlib_logging"])
    from .service import ASGIService

    service = ASGIService(app, config, reactor=reactor, owns_process=True)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def _config(host: str, port: int, options: dict[str, Any]) -> Config:
    names = {field.name for field in dataclasses.fields(Config)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"run() got options that are not Config fields: {', '.join(unknown)}")
    options.setdefault("proxy_headers", True)  # as the command's default
    config = Config(**options)
    if not config.listen:
        from .service import tcp_description

        config.listen = [tcp_description(host, port, config.backlog)]
    config.validate()
    return config


def _start_logging(log_format: str, log_level: str, stdlib_logging: bool) -> None:
    from twisted.logger import globalLogBeginner

    from . import logs

    from .access_log import MAIN_LOG

    level = logs.level_named(log_level)
    observer = logs.observer_factory(logs.format_named(log_format))(sys.stdout)
    MAIN_LOG.ours, MAIN_LOG.output, MAIN_LOG.log_format, MAIN_LOG.level = True, sys.stdout, log_format, level
    globalLogBeginner.beginLoggingTo([logs.level_filter(observer, level)])
    if stdlib_logging:
        logs.capture_stdlib_logging(level.name)
