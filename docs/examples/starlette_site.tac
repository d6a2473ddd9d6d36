# A Starlette app mounted under /api in a twisted.web site that serves static files:
#     twistd -ny starlette_site.tac
# PORT chooses the port (8080 if unset; 0 picks a free one); STATIC the directory (this one).
import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File

from hello_asgi import ASGIResource


async def item(request):
    return JSONResponse({"item": request.path_params["name"], "root_path": request.scope["root_path"]})


async def echo(websocket):
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


api = ASGIResource(Starlette(routes=[Route("/items/{name}", item), WebSocketRoute("/echo", echo)]))

root = Resource()
root.putChild(b"static", File(os.environ.get("STATIC", os.path.dirname(os.path.abspath(__file__)))))
root.putChild(b"api", api)

application = Application("starlette-in-a-site")
api.lifespan_service().setServiceParent(application)  # Starlette's startup and shutdown
site = StreamServerEndpointService(
    TCP4ServerEndpoint(reactor, int(os.environ.get("PORT", 8080)), interface="127.0.0.1"), Site(root)
)
site.setServiceParent(application)
