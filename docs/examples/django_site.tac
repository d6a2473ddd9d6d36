# A Django ASGI app mounted under /api in a twisted.web site, as ASGIResource mounts any app:
#     twistd -ny django_site.tac
# PORT chooses the port (8080 if unset; 0 picks a free one). Django takes the mount point
# from the ASGI root_path: request.path is /api/hello/, request.path_info /hello/.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import django_project  # noqa: E402,F401  (settings before Django's ASGI handler)
from django.core.asgi import get_asgi_application  # noqa: E402
from twisted.application.internet import StreamServerEndpointService  # noqa: E402
from twisted.application.service import Application  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ServerEndpoint  # noqa: E402
from twisted.web.resource import Resource  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from hello_asgi import ASGIResource  # noqa: E402

root = Resource()
root.putChild(b"api", ASGIResource(get_asgi_application()))

application = Application("django-in-a-site")
StreamServerEndpointService(
    TCP4ServerEndpoint(reactor, int(os.environ.get("PORT", 8080)), interface="127.0.0.1"), Site(root)
).setServiceParent(application)
