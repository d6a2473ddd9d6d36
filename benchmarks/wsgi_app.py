"""The WSGI app of the ``wsgi`` and ``wsgi-h2c`` scenarios: plain (no framework), so that
what is measured is the server.

- ``app``: hello world with its Content-Length, as a Flask or Django response carries one;
  the request body read and dropped;
- ``a2wsgi_app``: the same app through a2wsgi's ``WSGIMiddleware``, an ASGI app for
  hello-asgi to serve (the adapter measured against hello-asgi's own).
"""

THREADS = 4  # the thread count every server gets in the harness (run.py passes the same)
BODY = b"Hello, world!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    stream = environ["wsgi.input"]
    while stream.read(65536):
        pass
    start_response("200 OK", HEADERS)
    return [BODY]


def _a2wsgi():
    try:
        from a2wsgi import WSGIMiddleware
    except ImportError:  # only the a2wsgi row imports this
        return None
    return WSGIMiddleware(app, workers=THREADS)


a2wsgi_app = _a2wsgi()
