"""Turn ``"module:attr"`` into an ASGI 3 callable, whatever form the app was written in."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AppLoadError(Exception):
    """The app could not be loaded; the message is one line a user can act on."""


def load_app(reference: str, app_dir: str | None = ".", interface: str = "auto",
             wsgi_threads: int | None = None) -> ASGIApp:
    """Import ``module:attr`` (or ``module:factory()``) and return it as an ASGI 3 app.

    ``app_dir`` goes first on ``sys.path`` so that ``--app app:asgi`` finds ``app.py`` in the
    directory the server is started from, as with Uvicorn.
    """
    module_name, _, attr_path = reference.partition(":")
    if not module_name or not attr_path:
        raise AppLoadError(f"--app {reference}: expected the form 'module:attribute'")
    call_factory = attr_path.endswith("()")
    if call_factory:
        attr_path = attr_path[:-2]
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name and not module_name.startswith(f"{error.name}."):
            raise AppLoadError(f"--app {reference}: importing {module_name!r} failed: {error}") from error
        raise AppLoadError(f"--app {reference}: no module named {module_name!r}") from error
    except Exception as error:
        raise AppLoadError(
            f"--app {reference}: importing {module_name!r} raised {type(error).__name__}: {error}"
        ) from error
    app: Any = module
    for attr in attr_path.split("."):
        try:
            app = getattr(app, attr)
        except AttributeError:
            raise AppLoadError(
                f"--app {reference}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if call_factory:
        try:
            app = app()
        except Exception as error:
            raise AppLoadError(
                f"--app {reference}: the factory raised {type(error).__name__}: {error}"
            ) from error
    return as_asgi3(app, interface, reference, wsgi_threads)


def as_asgi3(app: Any, interface: str = "auto", name: str = "the app", wsgi_threads: int | None = None) -> ASGIApp:
    """Return ``app`` as an ASGI 3 callable, wrapping a legacy ASGI 2 double callable, or a
    WSGI app in ``wsgi.WSGIApp`` (on ``wsgi_threads`` threads; its default when ``None``)."""
    if not callable(app):
        raise AppLoadError(f"--app {name}: {type(app).__name__} object is not an ASGI app (not callable)")
    adapted = inspect.unwrap(app)  # (the server's wrappers name the app made ASGI 3 ``__wrapped__``)
    if isinstance(adapted, ASGI2Adapter) or _is_wsgi_adapter(adapted):
        return app  # made ASGI 3 already: the command loads, then the factory
    if interface == "auto":
        interface = _detect_interface(app, name)
    if interface == "asgi3":
        return app
    if interface == "wsgi":
        from .wsgi import DEFAULT_THREADS, WSGIApp  # loaded for WSGI apps only

        return WSGIApp(app, DEFAULT_THREADS if wsgi_threads is None else wsgi_threads)
    return ASGI2Adapter(app)


def _is_wsgi_adapter(app: Any) -> bool:
    wsgi = sys.modules.get("hello_asgi.wsgi")
    return wsgi is not None and isinstance(app, wsgi.WSGIApp)


class ASGI2Adapter:
    """A legacy double-callable app, ``app(scope)(receive, send)``, called the ASGI 3 way."""

    asgi_version = "2.0"

    def __init__(self, app: Callable[[Scope], Callable[[Receive, Send], Awaitable[None]]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope)(receive, send)


def asgi_version(app: ASGIApp) -> str:
    """The ``scope["asgi"]["version"]`` to announce to ``app``, as returned by ``as_asgi3``
    (and seen through the server-side wrappers, which name what they wrap ``__wrapped__``)."""
    return "2.0" if isinstance(inspect.unwrap(app), ASGI2Adapter) else "3.0"


def _detect_interface(app: Any, name: str) -> str:
    """ASGI 3 takes ``(scope, receive, send)``; ASGI 2 takes ``(scope)``; WSGI takes
    ``(environ, start_response)``: a coroutine function is ASGI 3 whatever it takes, else
    the count of positional parameters decides (``*args``: ASGI 3). A class is called with
    the first argument(s): ASGI 3 if its instances are awaitable, WSGI if it takes two."""
    if inspect.isclass(app):
        if hasattr(app, "__await__"):
            return "asgi3"
        return "wsgi" if _positional_count(app) == 2 else "asgi2"
    call = app if inspect.isroutine(app) else app.__call__
    if inspect.iscoroutinefunction(call):
        return "asgi3"
    try:
        parameters = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):
        return "asgi3"
    positional = [
        p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind == p.VAR_POSITIONAL for p in parameters) or len(positional) >= 3:
        return "asgi3"
    if len(positional) == 1:
        return "asgi2"
    if len(positional) == 2:
        return "wsgi"
    raise AppLoadError(
        f"--app {name}: not an ASGI or WSGI app: expected app(scope, receive, send), app(scope) "
        "or app(environ, start_response)"
    )


def _positional_count(app: Any) -> int | None:
    """How many positional arguments calling ``app`` takes; ``None`` if it cannot be told."""
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
