"""The HTTP response extensions: trailers, early hints (103), server push and pathsend."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from .support import H2Client, exchange, parse_responses


async def extensions_app(scope: Any, receive: Any, send: Any) -> None:
    """Reports the extensions it was offered, and uses each one offered."""
    if scope["type"] != "http":
        return
    extensions = scope["extensions"]
    if scope["path"] == "/style.css":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/css")]})
        await send({"type": "http.response.body", "body": b"body{}"})
        return
    if "http.response.early_hint" in extensions:
        await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]})
    if "http.response.push" in extensions:
        await send({"type": "http.response.push", "path": "/style.css", "headers": []})
    trailers = "http.response.trailers" in extensions
    names = ",".join(sorted(extensions)).encode()
    await send({"type": "http.response.start", "status": 200, "trailers": trailers,
                # HTTP/1.1 trailers need chunked framing, so a Content-Length must go
                "headers": [(b"content-length", b"%d" % (len(names) + 1))]
                if trailers and scope["http_version"] == "1.1" else []})
    await send({"type": "http.response.body", "body": names, "more_body": True})
    await send({"type": "http.response.body", "body": b"."})
    if trailers:
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")], "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"x-count", b"2")]})


class HTTP11ExtensionTests(unittest.TestCase):
    @asyncio_test
    async def test_trailers_when_the_client_takes_them_and_early_hints(self) -> None:
        server = await serve(self, extensions_app)
        data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        self.assertTrue(data.startswith(
            b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\nHTTP/1.1 200 OK\r\n"))
        head, _, body = data.partition(b"\r\n\r\nHTTP/1.1 200 OK\r\n")[2].partition(b"\r\n\r\n")
        self.assertIn(b"transfer-encoding: chunked", head)
        self.assertNotIn(b"content-length", head)
        self.assertTrue(body.endswith(b"1\r\n.\r\n0\r\nx-checksum: abc\r\nx-count: 2\r\n\r\n"), body)
        self.assertIn(b"http.response.early_hint,http.response.pathsend,http.response.trailers", body)
        response, decoded = parse_responses(data[data.index(b"HTTP/1.1 200"):])[0]
        self.assertEqual(decoded, b"http.response.early_hint,http.response.pathsend,http.response.trailers.")

    @asyncio_test
    async def test_no_trailers_offered_without_te_and_only_pathsend_for_http10(self) -> None:
        server = await serve(self, extensions_app)
        data = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        _, body = parse_responses(data[data.index(b"HTTP/1.1 200"):])[0]
        self.assertEqual(body, b"http.response.early_hint,http.response.pathsend.")
        old = await exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
        self.assertTrue(old.startswith(b"HTTP/1.1 200 OK"))
        self.assertTrue(old.endswith(b"\r\n\r\nhttp.response.pathsend."))


class HTTP2ExtensionTests(unittest.TestCase):
    @asyncio_test
    async def test_push_early_hints_and_trailers(self) -> None:
        server = await serve(self, extensions_app)
        client = await H2Client.open(server.port)
        stream_id = client.request("/", headers=[(b"te", b"trailers")])
        headers, body = await client.response(stream_id)
        self.assertEqual(body, b"http.response.early_hint,http.response.pathsend,http.response.push,http.response.trailers.")
        self.assertNotIn(b"content-length", headers)
        self.assertEqual(client.trailers[stream_id], [(b"x-checksum", b"abc"), (b"x-count", b"2")])
        self.assertEqual(client.informational[stream_id],
                         [[(b":status", b"103"), (b"link", b"</style.css>; rel=preload; as=style")]])
        (promised,) = [s for s, parent in client.pushed.items() if parent == stream_id]
        pushed_headers, pushed_body = await client.response(promised)
        client.close()
        self.assertEqual(pushed_body, b"body{}")
        self.assertEqual(pushed_headers[b"content-type"], b"text/css")

    @asyncio_test
    async def test_no_push_offered_when_the_client_disables_it(self) -> None:
        from h2.settings import SettingCodes

        server = await serve(self, extensions_app)
        client = await H2Client.open(server.port)
        client.conn.update_settings({SettingCodes.ENABLE_PUSH: 0})
        client.flush()
        _, body = await client.response(client.request("/"))
        client.close()
        self.assertEqual(body, b"http.response.early_hint,http.response.pathsend.")
