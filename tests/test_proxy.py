"""Behind proxies: forwarding headers from trusted proxies only, and the PROXY protocol."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

from twisted.trial import unittest
from websockets.asyncio.client import connect as websocket_connect

from hello_asgi import Config, proxy_protocol
from hello_asgi.testing import asyncio_test, serve
from hello_asgi.tls import development_certificate

from .support import cut_off, exchange, parse_responses


async def where_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what the scope says about where the request came from and went to."""
    seen = {"client": scope["client"], "scheme": scope["scheme"], "server": scope["server"]}
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(seen)})
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


async def ask(port: int, *headers: str, prefix: bytes = b"") -> dict[str, Any]:
    """GET / with ``headers`` over a raw socket (``prefix`` first); the app's answer."""
    request = "GET / HTTP/1.1\r\nhost: test.local\r\nconnection: close\r\n" + "".join(h + "\r\n" for h in headers)
    data = await exchange(port, prefix + request.encode() + b"\r\n")
    [(response, body)] = parse_responses(data)
    assert response.status_code == 200, data
    return json.loads(body)  # type: ignore[no-any-return]


class ForwardedHeaderTests(unittest.TestCase):
    @asyncio_test
    async def test_ignored_unless_switched_on(self) -> None:
        server = await serve(self, where_app)
        seen = await ask(server.port, "x-forwarded-for: 203.0.113.7", "x-forwarded-proto: https")
        self.assertEqual((seen["client"][0], seen["scheme"]), ("127.0.0.1", "http"))

    @asyncio_test
    async def test_x_forwarded_headers_from_a_trusted_proxy(self) -> None:
        server = await serve(self, where_app, proxy_headers=True)
        seen = await ask(server.port, "x-forwarded-for: 203.0.113.7", "x-forwarded-proto: https",
                         "x-forwarded-host: example.com", "x-forwarded-port: 8443")
        self.assertEqual(seen, {"client": ["203.0.113.7", 0], "scheme": "https", "server": ["example.com", 8443]})

    @asyncio_test
    async def test_host_alone_gets_the_default_port_of_the_scheme(self) -> None:
        server = await serve(self, where_app, proxy_headers=True)
        seen = await ask(server.port, "x-forwarded-proto: https", "x-forwarded-host: example.com")
        self.assertEqual(seen["server"], ["example.com", 443])
        self.assertEqual(seen["client"][0], "127.0.0.1")  # no X-Forwarded-For: the peer stays

    @asyncio_test
    async def test_the_client_is_the_right_most_untrusted_address(self) -> None:
        server = await serve(self, where_app, proxy_headers=True, forwarded_allow_ips=["127.0.0.1", "10.0.0.0/8"])
        seen = await ask(server.port, "x-forwarded-for: 6.6.6.6, 203.0.113.7", "x-forwarded-for: 10.1.2.3")
        self.assertEqual(seen["client"], ["203.0.113.7", 0])  # 6.6.6.6 is what the client claimed

    @asyncio_test
    async def test_every_hop_trusted_leaves_the_left_most(self) -> None:
        server = await serve(self, where_app, proxy_headers=True, forwarded_allow_ips=["127.0.0.1", "10.0.0.0/8"])
        seen = await ask(server.port, "x-forwarded-for: 10.9.9.9, 10.1.2.3")
        self.assertEqual(seen["client"], ["10.9.9.9", 0])

    @asyncio_test
    async def test_an_untrusted_peer_is_not_believed(self) -> None:
        server = await serve(self, where_app, proxy_headers=True, forwarded_allow_ips=["10.0.0.0/8"])
        seen = await ask(server.port, "x-forwarded-for: 203.0.113.7", "x-forwarded-proto: https")
        self.assertEqual((seen["client"][0], seen["scheme"]), ("127.0.0.1", "http"))

    @asyncio_test
    async def test_star_trusts_every_peer(self) -> None:
        server = await serve(self, where_app, proxy_headers=True, forwarded_allow_ips=["*"])
        seen = await ask(server.port, "x-forwarded-for: 203.0.113.7, 198.51.100.1")
        self.assertEqual(seen["client"], ["203.0.113.7", 0])

    @asyncio_test
    async def test_rfc_7239_forwarded(self) -> None:
        server = await serve(self, where_app, proxy_headers=True, forwarded_allow_ips=["127.0.0.1", "192.0.2.0/24"])
        seen = await ask(server.port, 'forwarded: for="[2001:db8::17]:4711";proto=https;host=example.com:8443, '
                                      "for=192.0.2.43;proto=http")
        self.assertEqual(seen, {"client": ["2001:db8::17", 4711], "scheme": "https",
                                "server": ["example.com", 8443]})

    @asyncio_test
    async def test_forwarded_wins_over_x_forwarded(self) -> None:
        server = await serve(self, where_app, proxy_headers=True)
        seen = await ask(server.port, "x-forwarded-for: 198.51.100.1", "forwarded: for=203.0.113.7")
        self.assertEqual(seen["client"], ["203.0.113.7", 0])

    @asyncio_test
    async def test_websocket_scheme_follows_the_proxy(self) -> None:
        server = await serve(self, where_app, proxy_headers=True)
        async with websocket_connect(f"ws://127.0.0.1:{server.port}/",
                                     additional_headers={"x-forwarded-proto": "https",
                                                         "x-forwarded-for": "203.0.113.7"}) as ws:
            seen = json.loads(await ws.recv())
        self.assertEqual((seen["scheme"], seen["client"]), ("wss", ["203.0.113.7", 0]))

    def test_a_bad_trusted_entry_is_a_clear_error(self) -> None:
        with self.assertRaises(ValueError) as caught:
            Config(forwarded_allow_ips=["10.0.0.0/33"]).validate()
        self.assertIn("'10.0.0.0/33' is not an address, a network, 'unix' or '*'", str(caught.exception))



class MalformedForwardedHeaderTests(unittest.TestCase):
    """What a trusted proxy passes on unchecked from its client must not become the client,
    the scheme or the server: only well-formed values count, and a malformed ``Forwarded``
    counts not at all (RFC 7239 section 4)."""

    async def _seen(self, *headers: str) -> dict[str, Any]:
        if not hasattr(self, "_port"):
            self._port = (await serve(self, where_app, proxy_headers=True)).port
        return await ask(self._port, *headers)

    async def assert_ignored(self, *headers: str) -> None:
        """The scope says what it says with no forwarding headers at all (the client's own
        port aside: each request is a new connection)."""
        seen, plain = await self._seen(*headers), await self._seen()
        self.assertEqual(seen["client"][0], plain["client"][0], headers)
        self.assertEqual((seen["scheme"], seen["server"]), (plain["scheme"], plain["server"]), headers)

    async def assert_checked(self, header: str, field: str, invalid: list[str], valid: dict[str, Any]) -> None:
        """``header`` with each ``invalid`` value is ignored; with a valid one, the scope's
        ``field`` is what ``valid`` says."""
        for value in invalid:
            await self.assert_ignored(f"{header}: {value}")
        for value, expected in valid.items():
            self.assertEqual((await self._seen(f"{header}: {value}"))[field], expected, value)

    @asyncio_test
    async def test_x_forwarded_for_takes_only_addresses(self) -> None:
        await self.assert_checked(
            "x-forwarded-for", "client",
            ["<script>alert(1)</script>", "example.com", "1.2.3", "1.2.3.4.5", "[::1", "::1]:80", "1.2.3.4:http",
             "1.2.3.4:99999", "203.0.113.7, nonsense"],
            {"203.0.113.7": ["203.0.113.7", 0], "203.0.113.7:4711": ["203.0.113.7", 4711],
             "2001:db8::17": ["2001:db8::17", 0], "[2001:db8::17]:4711": ["2001:db8::17", 4711]})

    @asyncio_test
    async def test_x_forwarded_proto_is_one_of_four(self) -> None:
        cert, key, _ = development_certificate(Path(self.mktemp()))
        server = await serve(self, where_app, proxy_headers=True, certfile=str(cert), keyfile=str(key))
        context = ssl.create_default_context(cafile=str(cert))

        async def scheme(value: str) -> str:
            """The scheme the app sees for a request over TLS with ``X-Forwarded-Proto: value``."""
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context,
                                                           server_hostname="localhost")
            writer.write(f"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-forwarded-proto: {value}\r\n\r\n"
                         .encode())
            [(_, body)] = parse_responses(await asyncio.wait_for(reader.read(), 10))
            writer.close()
            return json.loads(body)["scheme"]  # type: ignore[no-any-return]

        for value in ("javascript", "ftp", "https://evil", "http s", "https, ftp"):
            self.assertEqual(await scheme(value), "https", value)  # what the connection itself is
        for value, expected in (("HTTP", "http"), ("ws", "http"), ("wss", "https"), ("http, https", "https")):
            self.assertEqual(await scheme(value), expected, value)

    @asyncio_test
    async def test_x_forwarded_host_is_a_host_and_maybe_a_port(self) -> None:
        await self.assert_checked(
            "x-forwarded-host", "server",
            ["evil.com/path", "a b", "user@evil.com", "[::1", "[nonsense]", "example.com:99999", "example.com:",
             "example.com:80:80", "<script>"],
            {"example.com": ["example.com", 80], "example.com:8443": ["example.com", 8443],
             "[2001:db8::1]:8443": ["2001:db8::1", 8443], "192.0.2.1": ["192.0.2.1", 80]})

    @asyncio_test
    async def test_x_forwarded_port_is_a_port(self) -> None:
        await self.assert_checked("x-forwarded-port", "server", ["0", "65536", "http", "8o", "-1", "+80", "1e3"],
                                  {"8443": ["127.0.0.1", 8443], "80": ["127.0.0.1", 80]})

    @asyncio_test
    async def test_a_malformed_forwarded_header_counts_not_at_all(self) -> None:
        for value in ('for="1.2.3.4', 'for=1.2.3.4"', "for=<script>alert(1)</script>", 'for="<script>"',
                      "for=1.2.3.4 junk", "for=1.2.3.4;for=5.6.7.8", "for", "for=", "=1.2.3.4",
                      'for="[2001:db8::17"', "for=1.2.3.4;proto=ftp", 'for=1.2.3.4;host="evil.com/x"',
                      'for=1.2.3.4;host="a b"', 'for=1.2.3.4;host="u@evil.com"', "for=1.2.3.4, for=oops!"):
            await self.assert_ignored(f"forwarded: {value}", "x-forwarded-for: 198.51.100.1")

    @asyncio_test
    async def test_well_formed_forwarded_headers_still_count(self) -> None:
        seen = await self._seen('forwarded: for="[2001:db8::17]:4711";proto=HTTPS;host="example.com:8443"')
        self.assertEqual(seen, {"client": ["2001:db8::17", 4711], "scheme": "https", "server": ["example.com", 8443]})
        seen = await self._seen('forwarded: For="203.0.113.7" ; by=_proxy1,, for=unknown')
        self.assertEqual(seen["client"][0], "127.0.0.1")  # the nearest hop is unknown: the peer stays
        seen = await self._seen('forwarded: for=_hidden, for=203.0.113.7')
        self.assertEqual(seen["client"], ["203.0.113.7", 0])
        seen = await self._seen('forwarded: for=203.0.113.7;host="a\\.b"')  # quoted-pair: a.b
        self.assertEqual(seen["server"], ["a.b", 80])

def v2_header(command: int, family: int, addresses: bytes) -> bytes:
    """A PROXY protocol v2 header (its signature, version 2, ``command``, ``family``)."""
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | command, family]) + struct.pack("!H", len(addresses)) + addresses


class ProxyProtocolParseTests(unittest.TestCase):
    """``proxy_protocol.parse`` on v2 headers, in memory: each address family, what may follow
    the addresses, and what is refused."""

    def test_v2_tcp4_with_tlvs_after_the_addresses(self) -> None:
        addresses = socket.inet_aton("203.0.113.7") + socket.inet_aton("192.0.2.1") + struct.pack("!HH", 51234, 443)
        header = v2_header(0x1, 0x11, addresses + b"\x04\x00\x01x")  # a NOOP TLV
        (source, destination), length = proxy_protocol.parse(header + b"GET")  # type: ignore[misc]
        self.assertEqual((source.host, source.port, destination.host, destination.port),
                         ("203.0.113.7", 51234, "192.0.2.1", 443))
        self.assertEqual(length, len(header))

    def test_v2_in_pieces_needs_more(self) -> None:
        header = v2_header(0x1, 0x11, bytes(12))
        for end in (1, 12, 15, 16, len(header) - 1):
            self.assertIsNone(proxy_protocol.parse(header[:end]))

    def test_v2_refusals(self) -> None:
        for header in (v2_header(0x1, 0x11, bytes(11)),  # addresses cut short
                       v2_header(0x1, 0x21, bytes(35)), v2_header(0x1, 0x31, bytes(215)),
                       v2_header(0x1, 0x12, bytes(12)),  # UDP over IPv4: not served
                       v2_header(0x2, 0x11, bytes(12)),  # an unknown command
                       v2_header(0x1, 0x11, bytes(1025)),  # longer than any header we take
                       b"\r\n\r\n\x00\r\nQUIX\n"):
            with self.assertRaises(proxy_protocol.InvalidHeader):
                proxy_protocol.parse(header)


class ProxyProtocolTests(unittest.TestCase):
    @asyncio_test
    async def test_v1_gives_the_client_and_server_addresses(self) -> None:
        server = await serve(self, where_app, proxy_protocol=True)
        seen = await ask(server.port, prefix=b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n")
        self.assertEqual((seen["client"], seen["server"]), (["203.0.113.7", 51234], ["192.0.2.1", 443]))

    @asyncio_test
    async def test_v2_tcp6(self) -> None:
        addresses = (socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
                     + struct.pack("!HH", 40000, 8443))
        server = await serve(self, where_app, proxy_protocol=True)
        seen = await ask(server.port, prefix=v2_header(0x1, 0x21, addresses))
        self.assertEqual((seen["client"], seen["server"]), (["2001:db8::7", 40000], ["2001:db8::1", 8443]))

    @asyncio_test
    async def test_v2_local_keeps_the_real_addresses(self) -> None:
        server = await serve(self, where_app, proxy_protocol=True)
        seen = await ask(server.port, prefix=v2_header(0x0, 0x00, b""))  # a load balancer's health check
        self.assertEqual(seen["client"][0], "127.0.0.1")

    @asyncio_test
    async def test_v2_unix(self) -> None:
        addresses = b"/run/lb-client.sock".ljust(108, b"\x00") + b"/run/app.sock".ljust(108, b"\x00")
        server = await serve(self, where_app, proxy_protocol=True)
        seen = await ask(server.port, prefix=v2_header(0x1, 0x31, addresses))
        self.assertEqual((seen["client"], seen["server"]), (None, ["/run/app.sock", None]))

    @asyncio_test
    async def test_a_header_in_pieces(self) -> None:
        server = await serve(self, where_app, proxy_protocol=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for piece in (b"PRO", b"XY TCP4 203.0.113.7 ", b"192.0.2.1 51234 443\r", b"\nGET / HTTP/1.1\r\n"):
            writer.write(piece)
            await writer.drain()
        writer.write(b"host: x\r\nconnection: close\r\n\r\n")
        [(_, body)] = parse_responses(await asyncio.wait_for(reader.read(), 10))
        writer.close()
        self.assertEqual(json.loads(body)["client"], ["203.0.113.7", 51234])

    @asyncio_test
    async def test_a_peer_that_sends_no_header_is_cut_off(self) -> None:
        server = await serve(self, where_app, proxy_protocol=True, request_head_timeout=0.2)
        self.assertEqual(await cut_off(server.port, b""), (b"", True))  # reset by the server, unanswered

    @asyncio_test
    async def test_a_connection_without_the_header_is_closed_unanswered(self) -> None:
        server = await serve(self, where_app, proxy_protocol=True)
        self.assertEqual(await cut_off(server.port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"), (b"", True))

    @asyncio_test
    async def test_a_malformed_header_is_closed_unanswered(self) -> None:
        server = await serve(self, where_app, proxy_protocol=True)
        self.assertEqual(await cut_off(server.port, b"PROXY TCP4 not-an-address 192.0.2.1 1 2\r\n"
                                                    b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"), (b"", True))

    @asyncio_test
    async def test_the_header_comes_before_tls(self) -> None:
        cert, key, _ = development_certificate(Path(self.mktemp()))
        server = await serve(self, where_app, proxy_protocol=True, certfile=str(cert), keyfile=str(key))
        context = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n")
        await writer.drain()
        await writer.start_tls(context, server_hostname="localhost")
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        [(response, body)] = parse_responses(await reader.read())
        writer.close()
        seen = json.loads(body)
        self.assertEqual((seen["client"], seen["scheme"]), (["203.0.113.7", 51234], "https"))
