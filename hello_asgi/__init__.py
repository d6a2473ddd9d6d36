"""hello-asgi: an ASGI server on Twisted.

The public API is these names; everything else is private to its module.
"""

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
