"""``twist hello-asgi``: kept tiny, because Twisted imports every plugin to list them."""

from twisted.application.service import ServiceMaker

hello_asgi = ServiceMaker(
    "hello-asgi",
    "hello_asgi.cli",
    "Serve an ASGI app over HTTP/1.1 and HTTP/2 on Twisted.",
    "hello-asgi",
)
