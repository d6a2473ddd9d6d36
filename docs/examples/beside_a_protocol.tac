# An ASGI app beside a plain Twisted protocol, in one application, on twistd's default reactor:
#     twistd -ny beside_a_protocol.tac
# HTTP_PORT and ECHO_PORT choose the ports (8080 and 8007 if unset; 0 picks free ones).
import os

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from hello_asgi import ASGIService, Config


class Echo(Protocol):
    """The Twisted service you already run."""

    def dataReceived(self, data):
        self.transport.write(data)


async def app(scope, receive, send):
    """The ASGI app you add; this one answers every request with the reactor it runs under."""
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": type(reactor).__name__.encode()})


application = Application("echo-and-asgi")
echo = StreamServerEndpointService(
    TCP4ServerEndpoint(reactor, int(os.environ.get("ECHO_PORT", 8007)), interface="127.0.0.1"),
    Factory.forProtocol(Echo),
)
echo.setServiceParent(application)
config = Config(listen=[f"tcp:{os.environ.get('HTTP_PORT', 8080)}:interface=127.0.0.1"])
ASGIService(app, config).setServiceParent(application)
