# The benchmark app mounted as an ASGIResource at the root of a plain twisted.web site, on
# twistd's default reactor: what embedding in an existing site costs. PORT is the port.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from app import app  # noqa: E402
from twisted.application.internet import StreamServerEndpointService  # noqa: E402
from twisted.application.service import Application  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ServerEndpoint  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from hello_asgi import ASGIResource  # noqa: E402

site = Site(ASGIResource(app))
site.noisy = False
site.log = lambda request: None  # no access log, as for every server here

application = Application("bench-resource")
StreamServerEndpointService(
    TCP4ServerEndpoint(reactor, int(os.environ["PORT"]), interface="127.0.0.1", backlog=1024), site
).setServiceParent(application)
