"""hello-asgi: an ASGI server on Twisted.

The public API is these names; everything else is private to its module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bridge import as_deferred, install_asyncio_reactor
    from .config import Config
    from .factory import ASGIServerFactory
    from .loading import AppLoadError, load_app
    from .resource import ASGIResource
    from .runner import run
    from .service import ASGIService
    from .stream import ClientDisconnected
    from .websocket_session import WebSocketDisconnected

__version__ = "0.1.0"

# Each name is imported from its module the first time it is asked for (PEP 562): the
# command needs the server, not twisted.web's resource nor the WebSocket stack, and every
# worker process pays for what start-up loads.
_MODULES = {
    "as_deferred": "bridge", "install_asyncio_reactor": "bridge", "Config": "config",
    "ASGIServerFactory": "factory", "AppLoadError": "loading", "load_app": "loading",
    "ASGIResource": "resource", "run": "runner", "ASGIService": "service",
    "ClientDisconnected": "stream", "WebSocketDisconnected": "websocket_session",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'hello_asgi' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "ASGIResource",
    "ASGIServerFactory",
    "ASGIService",
    "AppLoadError",
    "ClientDisconnected",
    "Config",
    "WebSocketDisconnected",
    "as_deferred",
    "install_asyncio_reactor",
    "load_app",
    "run",
]
