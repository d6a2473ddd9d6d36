"""HTTP/2 request-body windows: they grow while the app keeps up, and bound what is buffered."""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.trial import unittest

from hello_asgi.testing import asyncio_test, serve

from .support import TIMEOUT, H2Client

INITIAL = 65535
MAXIMUM = 1024 * 1024


def stream_window(client: H2Client, stream_id: int) -> int:
    """What the server lets the client send on the stream, its own window alone."""
    return client.conn._get_stream_by_id(stream_id).outbound_flow_control_window


async def send_what_fits(client: H2Client, stream_id: int, left: int, end: bool = True) -> tuple[int, int]:
    """Send up to ``left`` bytes as fast as the windows allow; the bytes sent and the widest
    stream window seen."""
    widest = sent = 0
    while sent < left:
        widest = max(widest, stream_window(client, stream_id))
        size = min(client.conn.local_flow_control_window(stream_id), client.conn.max_outbound_frame_size, left - sent)
        if size <= 0:
            await client.pump()  # for WINDOW_UPDATE
            continue
        sent += size
        client.conn.send_data(stream_id, b"x" * size, end_stream=end and sent == left)
        client.flush()
    return sent, widest


async def fill_window(client: H2Client, stream_id: int) -> int:
    """Send until the stream's window is shut, without waiting for more: the bytes sent."""
    sent = 0
    while (size := min(client.conn.local_flow_control_window(stream_id), client.conn.max_outbound_frame_size)) > 0:
        client.conn.send_data(stream_id, b"y" * size)
        sent += size
    client.flush()
    return sent


class WindowGrowthTests(unittest.TestCase):
    @asyncio_test
    async def test_a_body_the_app_reads_quickly_gets_a_wider_window_up_to_the_maximum(self) -> None:
        sizes: list[int] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            size = 0
            while (message := await receive())["more_body"]:
                size += len(message["body"])
            sizes.append(size + len(message["body"]))
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"%d" % sizes[-1]})

        server = await serve(self, app, h2_max_window_size=MAXIMUM)
        client = await H2Client.open(server.port)
        upload = client.request("/upload", method="POST", end=False)
        sent, widest = await send_what_fits(client, upload, 8 * MAXIMUM)
        _, body = await client.response(upload)
        client.close()
        self.assertEqual(body, b"%d" % sent)
        self.assertGreater(widest, 4 * INITIAL)
        self.assertLessEqual(widest, MAXIMUM)

    @asyncio_test
    async def test_an_app_that_stops_reading_has_no_more_buffered_than_the_windows(self) -> None:
        """Two uploads grow their windows, then their app stops reading while the client sends
        all it may: what the server holds is within each stream's window, and both together
        within the initial windows plus the one maximum they share."""
        release = asyncio.Event()
        stopped = {"/a": asyncio.Event(), "/b": asyncio.Event()}
        buffered: dict[str, int] = {}

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] == "/ping":
                await send({"type": "http.response.start", "status": 204})
                await send({"type": "http.response.body"})
                return
            taken = 0
            while taken < 4 * MAXIMUM:
                taken += len((await receive())["body"])
            stopped[scope["path"]].set()
            await release.wait()
            buffered[scope["path"]] = len((await receive())["body"])  # all it held, in one message
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body"})

        server = await serve(self, app, h2_max_window_size=MAXIMUM)
        client = await H2Client.open(server.port)
        uploads = [client.request(path, method="POST", end=False) for path in ("/a", "/b")]
        for upload in uploads:
            await send_what_fits(client, upload, 4 * MAXIMUM, end=False)
        for event in stopped.values():
            await asyncio.wait_for(event.wait(), TIMEOUT)  # the app took all of it and stopped reading
        filled = {upload: await fill_window(client, upload) for upload in uploads}
        await client.response(client.request("/ping"))  # the server has read all that came before
        windows = {upload: stream_window(client, upload) + filled[upload] for upload in uploads}
        release.set()
        for upload in uploads:
            client.conn.end_stream(upload)
        client.flush()
        for upload in uploads:
            await client.response(upload)
        client.close()
        self.assertEqual(sorted(buffered.values()), sorted(filled.values()))
        for upload in uploads:
            self.assertLessEqual(filled[upload], windows[upload])
            self.assertLessEqual(windows[upload], MAXIMUM)
        self.assertGreater(max(windows.values()), INITIAL)  # it had grown
        self.assertLessEqual(sum(buffered.values()), 2 * INITIAL + MAXIMUM)

    @asyncio_test
    async def test_a_body_the_app_reads_slowly_keeps_the_initial_window(self) -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            more = True
            while more:
                await asyncio.sleep(0.15)  # each window takes longer than GROW_WITHIN to read
                more = (await receive())["more_body"]
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body"})

        server = await serve(self, app, h2_max_window_size=MAXIMUM)
        client = await H2Client.open(server.port)
        upload = client.request("/upload", method="POST", end=False)
        _, widest = await send_what_fits(client, upload, 4 * INITIAL)
        await client.response(upload)
        client.close()
        self.assertEqual(widest, INITIAL)
