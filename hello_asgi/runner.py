"""``python -m hello_asgi`` and ``hello_asgi.run()``: the server without typing ``twist``.

``run(..., workers=N)`` and ``run(..., reload=True)`` put the command's supervisor in
front, whose workers are this interpreter again (``serve_worker``), each importing the app
from its ``"module:attr"`` string, with the ``Config`` and log settings ``run()`` was given.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import pickle
import runpy
import sys
from typing import Any

from .config import Config

# What run() takes besides Config's fields, with the command's defaults.
_PROCESS_OPTIONS: dict[str, Any] = {
    "log_format": "text", "log_level": "info", "stdlib_logging": True, "app_dir": ".",
    "workers": 1, "reload": False, "reload_dirs": None, "reload_includes": None, "reload_excludes": None,
}
# What a worker needs of them (the rest is the supervisor's).
_WORKER_OPTIONS = ("log_format", "log_level", "stdlib_logging", "app_dir")
# A worker's settings, from run() to serve_worker(): not HELLO_ASGI_*, which the command reads as options.
_WORKER_VARIABLE = "_HELLO_ASGI_RUN_WORKER"
_WORKER_COMMAND = [sys.executable, "-c", "from hello_asgi.runner import serve_worker; serve_worker()"]


def main(arguments: list[str] | None = None) -> None:
    """``python -m hello_asgi ARGS`` is ``twist hello-asgi ARGS``: the same options, logs,
    signals and workers (``python -m twisted`` runs with the plugin's name put first)."""
    sys.argv = [sys.argv[0], "hello-asgi", *(sys.argv[1:] if arguments is None else arguments)]
    runpy.run_module("twisted", run_name="__main__", alter_sys=False)


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve ``app`` (an ASGI app, or ``"module:attr"``) as ``twist hello-asgi`` would, for
    ``if __name__ == "__main__":``. ``host`` and ``port`` are the command's; every other
    option goes by its ``Config`` name (``listen=[...]``, ``keep_alive_timeout=10``), plus
    ``log_format``, ``log_level``, ``stdlib_logging``, ``app_dir``, ``workers``, ``reload``,
    ``reload_dirs``, ``reload_includes`` and ``reload_excludes``. ``workers`` and ``reload``
    need the app as ``"module:attr"``: each worker imports it. It installs the asyncio reactor
    and runs it; like the command, the process ends when the server stops: status 0 after a
    graceful stop, 1 if it could not start."""
    process = {name: options.pop(name, default) for name, default in _PROCESS_OPTIONS.items()}
    config = _config(host, port, options)
    supervised = _supervised(app, process, config)
    from .bridge import install_asyncio_reactor

    reactor = install_asyncio_reactor(config.loop)
    if not supervised:
        _serve(app, config, process, reactor)
        return
    from .loading import load_app

    if process["reload"]:
        from .reload import without_bytecode

        without_bytecode()
    load_app(app, process["app_dir"], config.interface, config.wsgi_threads)  # as the command does: a bad app fails here, once
    _start_logging(process["log_format"], process["log_level"], process["stdlib_logging"], reactor)
    _run_service(_supervisor(app, config, process, reactor), reactor)


def _supervised(app: Any, process: dict[str, Any], config: Config) -> bool:
    """Whether workers serve under a supervisor: for ``workers`` above 1 or ``reload``, and
    for ``max_requests`` given a string, as the command does (an app object cannot be
    imported again, so its process stops once it has served them)."""
    workers = process["workers"]
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number, at least 1, not {workers!r}")
    if workers > 1 or process["reload"]:
        if not isinstance(app, str):
            raise ValueError("workers and reload need the app as an import string, run('module:attr', ...): "
                             "each worker imports it")
        return True
    return isinstance(app, str) and config.max_requests > 0


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


def _serve(app: Any, config: Config, process: dict[str, Any], reactor: Any) -> None:
    """One process serving: a plain run() or a worker."""
    if isinstance(app, str):
        from .loading import load_app

        app = load_app(app, process["app_dir"], config.interface, config.wsgi_threads)
    _start_logging(process["log_format"], process["log_level"], process["stdlib_logging"], reactor)
    from .service import ASGIService

    _run_service(ASGIService(app, config, reactor=reactor, owns_process=True), reactor)


def _run_service(service: Any, reactor: Any) -> None:
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def _supervisor(app: str, config: Config, process: dict[str, Any], reactor: Any) -> Any:
    """The command's supervisor, its workers ``serve_worker`` with this run()'s settings."""
    from .supervisor import Supervisor

    worker = {
        "app": app,
        "config": dataclasses.replace(config, listen=[], metrics_listen=None),  # the supervisor's
        "process": {name: process[name] for name in _WORKER_OPTIONS},
        "path": list(sys.path),  # where run()'s caller found the app's modules
    }
    environment = {**os.environ, _WORKER_VARIABLE: base64.b64encode(pickle.dumps(worker)).decode()}
    watch = None
    if process["reload"]:
        from .reload import watching

        watch = watching(process["app_dir"], process["reload_dirs"], process["reload_includes"],
                         process["reload_excludes"], reactor)
    return Supervisor(_WORKER_COMMAND, config.listen, process["workers"], reactor, watch, environment,
                      metrics_listen=config.metrics_listen)


def serve_worker() -> None:
    """A worker of ``run(..., workers=N)`` or ``reload=True``: its settings come in the
    environment (a pickle from the parent process that ``run()`` ran in: the same program,
    trusted as such), its listeners as ``--listen fd:N`` arguments from the supervisor."""
    worker = pickle.loads(base64.b64decode(os.environ.pop(_WORKER_VARIABLE)))
    sys.path[:] = worker["path"]
    config: Config = worker["config"]
    arguments = sys.argv[1:]
    config.listen = [arguments[index + 1] for index, argument in enumerate(arguments) if argument == "--listen"]
    from .bridge import install_asyncio_reactor
    from .loading import AppLoadError

    reactor = install_asyncio_reactor(config.loop)
    try:
        _serve(worker["app"], config, worker["process"], reactor)
    except AppLoadError as error:  # a --reload edit that does not import: one line, the supervisor retries
        sys.exit(f"hello-asgi: {error}")


def _start_logging(log_format: str, log_level: str, stdlib_logging: bool, reactor: Any) -> None:
    from twisted.logger import globalLogBeginner

    from . import logs
    from .bridge import log_loop

    from .access_log import main_log_is

    level = logs.level_named(log_level)
    observer = logs.observer_factory(logs.format_named(log_format))(sys.stdout)
    main_log_is(log_format, level, sys.stdout)
    globalLogBeginner.beginLoggingTo([logs.level_filter(observer, level)])
    if stdlib_logging:
        logs.capture_stdlib_logging(level.name)
    log_loop(reactor)
