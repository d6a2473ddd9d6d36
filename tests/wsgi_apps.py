"""The same small Flask and Django apps for hello-asgi and for Gunicorn: ``test_wsgi_gunicorn``
serves each with both servers and diffs what comes back. Imported only in those servers'
processes (Django's settings are per process)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import django
import flask
from django.conf import settings

CHUNK = 1024 * 1024
PEP_3333 = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
            "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "wsgi.url_scheme",
            "wsgi.input_terminated", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.version"]


def environ_summary(environ: dict[str, Any]) -> bytes:
    """The environ's plain values (PEP 3333's and the HTTP_ ones) and its keys, as JSON."""
    values = {key: environ.get(key, "<absent>") for key in PEP_3333}
    values.update({key: value for key, value in environ.items() if key.startswith("HTTP_")})
    values["keys"] = sorted(key for key in environ if isinstance(key, str))
    return json.dumps(values, default=repr, sort_keys=True).encode()


def pattern(size: int) -> Any:
    """``size`` bytes of a known pattern, a MiB at a time."""
    block = bytes(range(256)) * (CHUNK // 256)
    while size > 0:
        yield block[:size]
        size -= CHUNK


def digest(read: Any) -> bytes:
    """The size and SHA-256 of a request body read a MiB at a time."""
    hashed = hashlib.sha256()
    size = 0
    while chunk := read(CHUNK):
        hashed.update(chunk)
        size += len(chunk)
    return json.dumps({"size": size, "sha256": hashed.hexdigest()}).encode()


# -- Flask ---------------------------------------------------------------------------------

flask_app = flask.Flask("wsgi_apps")


@flask_app.route("/environ", methods=["GET", "POST", "HEAD"])
def flask_environ() -> Any:
    return flask.Response(environ_summary(flask.request.environ), mimetype="application/json")


@flask_app.route("/hello", methods=["GET", "HEAD"])
def flask_hello() -> Any:
    return flask.Response(b"hello from flask\n", mimetype="text/plain", headers={"X-App": "flask"})


@flask_app.route("/stream")
def flask_stream() -> Any:
    return flask.Response((b"line %d\n" % number for number in range(20)), mimetype="text/plain")


@flask_app.route("/download")
def flask_download() -> Any:
    size = int(flask.request.args["size"])
    return flask.Response(pattern(size), mimetype="application/octet-stream",
                          headers={"Content-Length": str(size)} if flask.request.args.get("length") else {})


@flask_app.route("/upload", methods=["POST"])
def flask_upload() -> Any:
    return flask.Response(digest(flask.request.stream.read), mimetype="application/json")


@flask_app.route("/missing-status")
def flask_error() -> Any:
    flask.abort(418)


# -- Django --------------------------------------------------------------------------------

settings.configure(DEBUG=False, SECRET_KEY="test", ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], MIDDLEWARE=[],
                   USE_TZ=True)
django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402  (needs the settings)
from django.http import HttpResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def django_environ(request: Any) -> Any:
    return HttpResponse(environ_summary(request.META), content_type="application/json")


def django_hello(request: Any) -> Any:
    return HttpResponse(b"hello from django\n", content_type="text/plain", headers={"X-App": "django"})


def django_stream(request: Any) -> Any:
    return StreamingHttpResponse((b"line %d\n" % number for number in range(20)), content_type="text/plain")


def django_download(request: Any) -> Any:
    size = int(request.GET["size"])
    response = StreamingHttpResponse(pattern(size), content_type="application/octet-stream")
    if request.GET.get("length"):
        response["Content-Length"] = str(size)
    return response


def django_upload(request: Any) -> Any:
    return HttpResponse(digest(request.read), content_type="application/json")


urlpatterns = [path("environ", django_environ), path("hello", django_hello), path("stream", django_stream),
               path("download", django_download), path("upload", django_upload)]

django_app = WSGIHandler()
