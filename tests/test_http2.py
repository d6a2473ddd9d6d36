"""HTTP/2 over cleartext: prior knowledge and h2c upgrade, streams, flow control, resets."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from h2.errors import ErrorCodes
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from hello_asgi import demo
from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, H2Client, HeldApp, exchange, hello_app


async def curl(*args: str) -> tuple[bytes, int]:
    out, err, code = await getProcessOutputAndValue("curl", ["-sS", *args]).asFuture(asyncio.get_running_loop())
    return out, code


class WaysInTests(unittest.TestCase):
    @asyncio_test
    async def test_prior_knowledge_with_the_h2_library(self) -> None:
        server = await serve(self, demo.asgi)
        client = await H2Client.open(server.port)
        stream_id = client.request("/caf%C3%A9?x=1", headers=[(b"cookie", b"a=1"), (b"cookie", b"b=2")])
        headers, body = await client.response(stream_id)
        client.close()
        self.assertEqual(headers[b":status"], b"200")
        self.assertEqual(headers[b"server"], b"hello-asgi")
        self.assertIn(b"date", headers)
        scope = json.loads(body)
        self.assertEqual(scope["http_version"], "2")
        self.assertEqual(scope["path"], "/café")
        self.assertEqual(scope["query_string"], "x=1")
        self.assertEqual(scope["headers"][0], ["host", "example.test"])
        self.assertIn(["cookie", "a=1; b=2"], scope["headers"])
        self.assertFalse([name for name, _ in scope["headers"] if name.startswith(":")])

    @asyncio_test
    async def test_curl_prior_knowledge_and_h2c_upgrade(self) -> None:
        server = await serve(self, demo.asgi)
        out, code = await curl("--http2-prior-knowledge", "-w", "\n%{http_version}", server.url + "/pk")
        body, version = out.rsplit(b"\n", 1)
        self.assertEqual((code, version), (0, b"2"))
        self.assertEqual(json.loads(body)["http_version"], "2")

        out, code = await curl("--http2", "-w", "\n%{http_version}", server.url + "/upgraded")
        body, version = out.rsplit(b"\n", 1)
        self.assertEqual((code, version), (0, b"2"))
        scope = json.loads(body)
        self.assertEqual((scope["http_version"], scope["path"]), ("2", "/upgraded"))
        names = [name for name, _ in scope["headers"]]
        for hop_by_hop in ("connection", "upgrade", "http2-settings"):
            self.assertNotIn(hop_by_hop, names)

    @asyncio_test
    async def test_h2c_upgrade_with_a_body_is_served_over_http11(self) -> None:
        server = await serve(self, hello_app)
        out, code = await curl("--http2", "-d", "payload", "-w", "\n%{http_version}",
                               server.url + "/post", server.url + "/next")
        self.assertEqual(code, 0)
        self.assertEqual(out, b"hello /post payload\n1.1hello /next payload\n1.1")  # curl posts to both

    @asyncio_test
    async def test_each_cleartext_way_can_be_switched_off(self) -> None:
        no_upgrade = await serve(self, hello_app, h2c_upgrade=False)
        out, code = await curl("--http2", "-w", "\n%{http_version}", no_upgrade.url + "/x")
        self.assertEqual(out, b"hello /x \n1.1")
        out, code = await curl("--http2-prior-knowledge", "-w", "\n%{http_version}", no_upgrade.url + "/pk")
        self.assertEqual(out, b"hello /pk \n2")

        no_preface = await serve(self, hello_app, h2_prior_knowledge=False)
        response = await exchange(no_preface.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 505 "))
        out, code = await curl("--http2", "-w", "\n%{http_version}", no_preface.url + "/up")
        self.assertEqual(out, b"hello /up \n2")


class StreamTests(unittest.TestCase):
    @asyncio_test
    async def test_expect_100_continue_is_answered_when_the_app_reads(self) -> None:
        """A client that sends ``Expect: 100-continue`` waits for a 100 before its body, over
        HTTP/2 as over HTTP/1.1 (RFC 9110 section 10.1.1); the 100 goes when the app reads."""

        async def echo(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            message = await receive()
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": message["body"]})

        server = await serve(self, echo)
        client = await H2Client.open(server.port)
        stream_id = client.request("/upload", method="POST", headers=[(b"expect", b"100-continue")], end=False)
        while stream_id not in client.informational:
            await client.pump()
        self.assertEqual(client.informational[stream_id], [[(b":status", b"100")]])
        client.conn.send_data(stream_id, b"the body", end_stream=True)
        client.flush()
        headers, body = await client.response(stream_id)
        self.assertEqual((headers[b":status"], body), (b"200", b"the body"))
        client.close()

    @asyncio_test
    async def test_post_body_and_concurrent_streams_do_not_wait_for_each_other(self) -> None:
        release = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/slow":
                await release.wait()
            await hello_app(scope, receive, send)

        server = await serve(self, app)
        client = await H2Client.open(server.port)
        slow = client.request("/slow")
        fast = client.request("/fast", method="POST", body=b"data")
        _, body = await client.response(fast)
        self.assertEqual(body, b"hello /fast data")
        self.assertNotIn(slow, client.ended)
        release.set()
        _, body = await client.response(slow)
        self.assertEqual(body, b"hello /slow ")
        client.close()

    @asyncio_test
    async def test_large_response_follows_the_clients_windows(self) -> None:
        payload = bytes(range(256)) * 4096 * 2  # 2 MiB, far beyond the 64 KiB initial windows

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": payload[:1000], "more_body": True})
            await send({"type": "http.response.body", "body": payload[1000:]})

        server = await serve(self, app)
        client = await H2Client.open(server.port)
        stream_id = client.request("/big")
        headers, body = await client.response(stream_id)
        client.close()
        self.assertEqual(body, payload)

    @asyncio_test
    async def test_unread_body_is_not_acknowledged_and_other_streams_go_on(self) -> None:
        release = asyncio.Event()
        total = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/upload":
                await release.wait()
            await hello_app(scope, receive, send) if scope["path"] != "/upload" else None
            if scope["path"] == "/upload":
                size = 0
                while True:
                    message = await receive()
                    size += len(message["body"])
                    if not message["more_body"]:
                        break
                total.append(size)
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": b"%d" % size})

        server = await serve(self, app)
        client = await H2Client.open(server.port)
        upload = client.request("/upload", method="POST", end=False)
        window = client.conn.local_flow_control_window(upload)
        while client.conn.local_flow_control_window(upload):
            size = min(client.conn.local_flow_control_window(upload), client.conn.max_outbound_frame_size)
            client.conn.send_data(upload, b"u" * size)
        client.flush()
        while client.conn.local_flow_control_window(upload) == 0:
            other = client.request("/other")
            _, body = await client.response(other)  # served while the upload's window is shut
            self.assertEqual(body, b"hello /other ")
            break
        self.assertEqual(client.conn.local_flow_control_window(upload), 0)
        release.set()
        while client.conn.local_flow_control_window(upload) == 0:
            await client.pump()  # the app read: WINDOW_UPDATE arrives
        client.conn.send_data(upload, b"v" * 10, end_stream=True)
        client.flush()
        _, body = await client.response(upload)
        client.close()
        self.assertEqual(body, b"%d" % (window + 10))

    @asyncio_test
    async def test_client_reset_disconnects_the_app(self) -> None:
        entered = asyncio.Event()
        seen: list[Any] = []
        done = asyncio.get_running_loop().create_future()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/after":
                return await hello_app(scope, receive, send)
            await receive()
            entered.set()
            seen.append(await receive())
            try:
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": b"late"})
            except OSError as error:
                seen.append(error)
            done.set_result(None)

        server = await serve(self, app)
        client = await H2Client.open(server.port)
        stream_id = client.request("/reset")
        await asyncio.wait_for(entered.wait(), TIMEOUT)
        client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.flush()
        await asyncio.wait_for(done, TIMEOUT)
        self.assertEqual(seen[0], {"type": "http.disconnect"})
        self.assertIsInstance(seen[1], OSError)
        again = client.request("/after")
        _, body = await client.response(again)  # the connection itself carries on
        client.close()

    @asyncio_test
    async def test_app_errors_give_500_or_reset_only_their_stream(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/early":
                raise ValueError("before start")
            if scope["path"] == "/late":
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": b"partial", "more_body": True})
                raise ValueError("mid-body")
            await hello_app(scope, receive, send)

        server = await serve(self, app)
        client = await H2Client.open(server.port)
        early, late, fine = client.request("/early"), client.request("/late"), client.request("/fine")
        headers, _ = await client.response(early)
        self.assertEqual(headers[b":status"], b"500")
        while late not in client.resets:
            await client.pump()
        self.assertEqual(client.resets[late], ErrorCodes.INTERNAL_ERROR)
        _, body = await client.response(fine)
        self.assertEqual(body, b"hello /fine ")
        client.close()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)


class ConnectionTests(unittest.TestCase):
    @asyncio_test
    async def test_protocol_error_gets_goaway_and_others_are_still_served(self) -> None:
        server = await serve(self, hello_app)
        client = await H2Client.open(server.port)
        client.writer.write(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00X")  # DATA on stream 0
        while not client.closed:
            await client.pump()
        self.assertEqual(client.goaway.error_code, ErrorCodes.PROTOCOL_ERROR)
        other = await H2Client.open(server.port)
        _, body = await other.response(other.request("/ok"))
        other.close()
        self.assertEqual(body, b"hello /ok ")

    @asyncio_test
    async def test_graceful_shutdown_sends_goaway_and_finishes_streams(self) -> None:
        """nghttp (a real client) sees GOAWAY naming its stream, then the whole response."""
        app = HeldApp()
        server = await serve(self, app)
        loop = asyncio.get_running_loop()
        nghttp = getProcessOutputAndValue("nghttp", ["-nv", server.url + "/inflight"]).asFuture(loop)
        await asyncio.wait_for(app.entered.wait(), TIMEOUT)
        stopped = server.service.stopService().asFuture(loop)
        await asyncio.sleep(0.1)  # let the GOAWAY go out before the response does
        app.release.set()
        out, err, code = await asyncio.wait_for(nghttp, TIMEOUT)
        await asyncio.wait_for(stopped, TIMEOUT)
        text = out.decode()
        self.assertEqual(code, 0, text)
        request_stream = re.search(r"send HEADERS frame <[^>]*stream_id=(\d+)>", text).group(1)
        goaway = text.index("recv GOAWAY frame")
        self.assertIn(f"last_stream_id={request_stream}", text[goaway:])
        self.assertIn("error_code=NO_ERROR", text[goaway:])
        self.assertLess(goaway, text.index("recv DATA frame"))
        self.assertIn(":status: 200", text)


class RequestLimitTests(unittest.TestCase):
    @asyncio_test
    async def test_max_requests_per_connection_ends_each_protocol_gracefully(self) -> None:
        server = await serve(self, hello_app, max_requests_per_connection=2)
        client = await H2Client.open(server.port)
        first, second = client.request("/1"), client.request("/2")
        for stream_id in (first, second):
            _, body = await client.response(stream_id)
            self.assertTrue(body.startswith(b"hello /"))
        while client.goaway is None and not client.closed:
            await client.pump()
        self.assertEqual((client.goaway.last_stream_id, client.goaway.error_code), (second, ErrorCodes.NO_ERROR))
        client.close()

        data = await exchange(server.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                                           b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 2)
        self.assertTrue(data.endswith(b"hello /b "))
        self.assertIn(b"connection: close", data)

    @asyncio_test
    async def test_response_header_values_are_trimmed_for_http2(self) -> None:
        """RFC 9113 forbids surrounding whitespace in field values; h2 clients reject it."""

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": [(b"X-Padded", b" \tv ")]})
            await send({"type": "http.response.body", "body": b"ok"})

        server = await serve(self, app)
        client = await H2Client.open(server.port)
        headers, body = await client.response(client.request("/"))
        client.close()
        self.assertEqual((headers[b"x-padded"], body), (b"v", b"ok"))
