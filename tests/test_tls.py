"""TLS: the hello world over HTTP/2 with ALPN, HTTP/1.1 over TLS, certificates and their errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
from pathlib import Path

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from hello_asgi import demo
from hello_asgi.testing import asyncio_test, serve
from hello_asgi.tls import TLSConfigError, development_certificate, server_options

from .support import H2Client
from .test_cli import TWIST, _Server, free_port


class TLSServeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.cert, self.key, _ = development_certificate(Path(self.mktemp()))

    async def _tls_connect(self, port: int, alpn: list[str]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = ssl.create_default_context(cafile=str(self.cert))
        context.set_alpn_protocols(alpn)
        return await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")

    @asyncio_test
    async def test_hello_world_over_h2_with_tls(self) -> None:
        server = await serve(self, demo.asgi, certfile=str(self.cert), keyfile=str(self.key))
        reader, writer = await self._tls_connect(server.port, ["h2", "http/1.1"])
        self.assertEqual(writer.get_extra_info("ssl_object").selected_alpn_protocol(), "h2")
        client = H2Client(reader, writer)
        headers, body = await client.response(client.request("/hello"))
        client.close()
        self.assertEqual(headers[b":status"], b"200")
        scope = json.loads(body)
        self.assertEqual((scope["http_version"], scope["scheme"]), ("2", "https"))
        self.assertEqual(scope["headers"][0], ["host", "example.test"])

    @asyncio_test
    async def test_http11_over_tls_when_the_client_offers_only_that(self) -> None:
        server = await serve(self, demo.asgi, certfile=str(self.cert), keyfile=str(self.key))
        reader, writer = await self._tls_connect(server.port, ["http/1.1"])
        writer.write(b"GET /one HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        scope = json.loads(data.partition(b"\r\n\r\n")[2])
        self.assertEqual((scope["http_version"], scope["scheme"]), ("1.1", "https"))


    @asyncio_test
    async def test_h2_alpn_can_be_switched_off(self) -> None:
        server = await serve(self, demo.asgi, certfile=str(self.cert), keyfile=str(self.key), h2_alpn=False)
        reader, writer = await self._tls_connect(server.port, ["h2", "http/1.1"])
        self.assertEqual(writer.get_extra_info("ssl_object").selected_alpn_protocol(), "http/1.1")
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        self.assertEqual(json.loads(data.partition(b"\r\n\r\n")[2])["http_version"], "1.1")


class CertificateTests(unittest.TestCase):
    def test_development_certificate_names_and_cache(self) -> None:
        directory = Path(self.mktemp())
        cert, key, fingerprint = development_certificate(directory)
        self.assertEqual(development_certificate(directory)[2], fingerprint)  # made once, then cached
        self.assertEqual(oct(key.stat().st_mode & 0o777), "0o600")
        names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual([str(ip) for ip in names.get_values_for_type(x509.IPAddress)], ["127.0.0.1", "::1"])

    def test_bad_pairs_are_one_clear_error(self) -> None:
        cert, key, _ = development_certificate(Path(self.mktemp()))
        _, other_key, _ = development_certificate(Path(self.mktemp()))
        cases = {
            ("/nonexistent.pem", str(key)): "--cert /nonexistent.pem: No such file or directory",
            (str(cert), "/nonexistent.pem"): "--key /nonexistent.pem: No such file or directory",
            (str(key), str(key)): "not a PEM certificate",
            (str(cert), str(cert)): "not an unencrypted PEM private key",
            (str(cert), str(other_key)): "does not match the certificate",
        }
        for (cert_path, key_path), expected in cases.items():
            with self.assertRaises(TLSConfigError) as caught:
                server_options(cert_path, key_path)
            self.assertIn(expected, str(caught.exception))


class TLSCommandTests(unittest.TestCase):
    @asyncio_test
    async def test_twist_tls_serves_h2_with_a_cached_development_certificate(self) -> None:
        cache = Path(self.mktemp()).resolve()
        port = free_port()
        server = _Server()
        args = [*TWIST, "--log-format=text", "hello-asgi", "--app", "hello_asgi.demo:asgi", "--tls",
                "--port", str(port)]
        process = reactor.spawnProcess(server, TWIST[0], args, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
        loop = asyncio.get_running_loop()
        try:
            cert = cache / "hello-asgi" / "dev-cert.pem"
            for _ in range(400):
                out, err, code = await getProcessOutputAndValue(
                    "curl", ["-sS", "--cacert", str(cert), "-w", "\n%{http_version}",
                             f"https://localhost:{port}/tls"]).asFuture(loop)
                if code == 0:
                    break
                await asyncio.sleep(0.05)  # the process is still starting
            body, version = out.rsplit(b"\n", 1)
            self.assertEqual(version, b"2")
            self.assertEqual(json.loads(body)["scheme"], "https")
        finally:
            process.signalProcess(signal.SIGTERM)
            await asyncio.wait_for(server.ended.asFuture(loop), 30)
        self.assertIn(b"development certificate, for development only", server.output)
        self.assertIn(b"SHA-256", server.output)

    @asyncio_test
    async def test_mismatched_pair_is_one_line_at_startup(self) -> None:
        cert, _, _ = development_certificate(Path(self.mktemp()))
        _, other_key, _ = development_certificate(Path(self.mktemp()))
        out, err, code = await getProcessOutputAndValue(
            TWIST[0], [*TWIST[1:], "hello-asgi", "--app", "hello_asgi.demo:asgi", "--cert", str(cert),
                       "--key", str(other_key)], env=os.environ).asFuture(asyncio.get_running_loop())
        self.assertEqual(code, 1)
        self.assertEqual(len(err.decode().strip().splitlines()), 1, err)
        self.assertIn(b"does not match the certificate", err)
