"""TLS: the hello world over HTTP/2 with ALPN, HTTP/1.1 over TLS, certificates and their errors."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import pty
import signal
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
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


def make_ca(directory: Path) -> tuple[Path, Any, Any]:
    """A CA certificate (written to ``directory/ca.pem``), its certificate and its key."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hello-asgi test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    path = directory / "ca.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path, certificate, key


def make_client_cert(directory: Path, ca: Any, ca_key: Any, common_name: str) -> tuple[Path, Path]:
    """A client certificate for ``common_name`` signed by the CA: its path and its key's."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                                            x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{common_name}.pem", directory / f"{common_name}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TLSSettingsTests(unittest.TestCase):
    """The tls scope extension, client certificates, versions, ciphers and encrypted keys."""

    def setUp(self) -> None:
        self.cert, self.key, _ = development_certificate(Path(self.mktemp()))

    async def get_scope(self, port: int, context: ssl.SSLContext) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        writer.write(b"GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return json.loads(data.partition(b"\r\n\r\n")[2])  # type: ignore[no-any-return]

    def client_context(self, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        if maximum is not None:
            context.maximum_version = maximum
        return context

    @asyncio_test
    async def test_the_tls_extension(self) -> None:
        server = await serve(self, demo.asgi, certfile=str(self.cert), keyfile=str(self.key))
        tls = (await self.get_scope(server.port, self.client_context(ssl.TLSVersion.TLSv1_2)))["extensions"]["tls"]
        self.assertEqual(tls["server_cert"], self.cert.read_text())
        self.assertEqual(tls["tls_version"], 0x0303)
        self.assertIn(tls["cipher_suite"], (0xC02B, 0xC02C, 0xCCA9))  # ECDHE-ECDSA with AES-GCM or ChaCha20
        self.assertEqual((tls["client_cert_chain"], tls["client_cert_name"], tls["client_cert_error"]), ([], None, None))
        tls13 = (await self.get_scope(server.port, self.client_context()))["extensions"]["tls"]
        self.assertEqual(tls13["tls_version"], 0x0304)
        self.assertIn(tls13["cipher_suite"], (0x1301, 0x1302, 0x1303))

    @asyncio_test
    async def test_client_certificates_asked_for(self) -> None:
        directory = Path(self.mktemp())
        ca_path, ca, ca_key = make_ca(directory)
        client_cert, client_key = make_client_cert(directory, ca, ca_key, "client one")
        server = await serve(self, demo.asgi, certfile=str(self.cert), keyfile=str(self.key), ca_certs=str(ca_path))
        anonymous = (await self.get_scope(server.port, self.client_context()))["extensions"]["tls"]
        self.assertEqual((anonymous["client_cert_chain"], anonymous["client_cert_name"]), ([], None))
        context = self.client_context()
        context.load_cert_chain(client_cert, client_key)
        tls = (await self.get_scope(server.port, context))["extensions"]["tls"]
        self.assertEqual(tls["client_cert_name"], "CN=client one,O=Example")
        self.assertEqual(tls["client_cert_chain"], [client_cert.read_text()])
        self.assertIsNone(tls["client_cert_error"])

    @asyncio_test
    async def test_client_certificates_required(self) -> None:
        directory = Path(self.mktemp())
        ca_path, ca, ca_key = make_ca(directory)
        _, other_ca, other_key = make_ca(directory / "other")
        stranger_cert, stranger_key = make_client_cert(directory, other_ca, other_key, "stranger")
        server = await serve(self, demo.asgi, certfile=str(self.cert), keyfile=str(self.key), ca_certs=str(ca_path),
                             require_client_cert=True)
        for cert_chain in (None, (stranger_cert, stranger_key)):
            context = self.client_context()
            if cert_chain is not None:
                context.load_cert_chain(*cert_chain)
            with self.assertRaises((ssl.SSLError, ConnectionError, json.JSONDecodeError)):
                await self.get_scope(server.port, context)  # TLS 1.3: refused after the handshake

    @asyncio_test
    async def test_tls_13_only(self) -> None:
        server = await serve(self, demo.asgi, certfile=str(self.cert), keyfile=str(self.key), tls_min_version="1.3")
        with self.assertRaises(ssl.SSLError):
            await self.get_scope(server.port, self.client_context(ssl.TLSVersion.TLSv1_2))
        self.assertEqual((await self.get_scope(server.port, self.client_context()))["extensions"]["tls"]["tls_version"],
                         0x0304)

    @asyncio_test
    async def test_a_cipher_string(self) -> None:
        server = await serve(self, demo.asgi, certfile=str(self.cert), keyfile=str(self.key),
                             tls_ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
        tls = (await self.get_scope(server.port, self.client_context(ssl.TLSVersion.TLSv1_2)))["extensions"]["tls"]
        self.assertEqual(tls["cipher_suite"], 0xCCA9)
        with self.assertRaises(TLSConfigError):
            server_options(str(self.cert), str(self.key), ciphers="NO-SUCH-CIPHER")

    @asyncio_test
    async def test_an_encrypted_key(self) -> None:
        key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        encrypted = Path(self.mktemp())
        encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.BestAvailableEncryption(b"sesame")))
        server = await serve(self, demo.asgi, certfile=str(self.cert), keyfile=str(encrypted), key_password="sesame")
        self.assertEqual((await self.get_scope(server.port, self.client_context()))["scheme"], "https")
        for password, expected in ((None, "Password was not given but private key is encrypted"),
                                   ("wrong", "a wrong password")):
            with self.assertRaises(TLSConfigError) as caught:
                server_options(str(self.cert), str(encrypted), password=password)
            self.assertIn(expected, str(caught.exception))
        password_file = Path(self.mktemp())
        password_file.write_text("sesame\n")
        out, err, code = await getProcessOutputAndValue(
            TWIST[0], [*TWIST[1:], "hello-asgi", "--app", "hello_asgi.demo:asgi", "--cert", str(self.cert),
                       "--key", str(encrypted), "--key-password-file", "/nonexistent"],
            env=os.environ).asFuture(asyncio.get_running_loop())
        self.assertEqual(code, 1)
        self.assertIn(b"--key-password-file /nonexistent: No such file or directory", err)


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
            (str(cert), str(cert)): "not a PEM private key",
            (str(cert), str(other_key)): "does not match the certificate",
        }
        for (cert_path, key_path), expected in cases.items():
            with self.assertRaises(TLSConfigError) as caught:
                server_options(cert_path, key_path)
            self.assertIn(expected, str(caught.exception))

    def test_a_key_that_cannot_sign_is_one_clear_error(self) -> None:
        cert, _, _ = development_certificate(Path(self.mktemp()))
        key = Path(self.mktemp())
        key.write_bytes(x25519.X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        with self.assertRaises(TLSConfigError) as caught:
            server_options(str(cert), str(key))
        self.assertEqual(str(caught.exception),
                         f"--key {key}: key type X25519 cannot sign TLS handshakes here; use RSA, ECDSA or EdDSA")

    def test_bad_client_certificate_authorities_and_versions_are_one_clear_error(self) -> None:
        cert, key, _ = development_certificate(Path(self.mktemp()))
        cases = {
            "/nonexistent.pem": "--ca /nonexistent.pem: No such file or directory",
            str(key): f"--ca {key}: not PEM certificates",
        }
        for ca_path, expected in cases.items():
            with self.assertRaises(TLSConfigError) as caught:
                server_options(str(cert), str(key), ca_path=ca_path)
            self.assertIn(expected, str(caught.exception))
        with self.assertRaises(TLSConfigError) as caught:
            server_options(str(cert), str(key), min_version="1.1")
        self.assertEqual(str(caught.exception), "--tls-min-version must be one of 1.2, 1.3, not '1.1'")


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


class ReloadTests(unittest.TestCase):
    async def served_cert(self, port: int, trust: Path) -> str:
        context = ssl.create_default_context(cafile=str(trust))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()

    @asyncio_test
    async def test_sighup_reloads_the_certificate_for_new_connections(self) -> None:
        """Under twist, as a deployment runs it: renew the files, SIGHUP, the next connection
        gets the new certificate while one opened before keeps working."""
        live = Path(self.mktemp()).resolve()
        old_cert, old_key, _ = development_certificate(live)
        new_cert, new_key, _ = development_certificate(Path(self.mktemp()).resolve())
        port = free_port()
        server = _Server()
        args = [*TWIST, "--log-format=text", "hello-asgi", "--app", "hello_asgi.demo:asgi", "--port", str(port),
                "--cert", str(old_cert), "--key", str(old_key)]
        process = reactor.spawnProcess(server, TWIST[0], args, env=os.environ)
        loop = asyncio.get_running_loop()
        try:
            for _ in range(400):
                try:
                    before = await self.served_cert(port, old_cert)
                    break
                except OSError:
                    await asyncio.sleep(0.05)  # the process is still starting
            self.assertEqual(before, old_cert.read_text())
            context = ssl.create_default_context(cafile=str(old_cert))
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
            old_cert.write_bytes(new_cert.read_bytes())  # the renewal, as certbot writes it
            old_key.write_bytes(new_key.read_bytes())
            reloaded = Deferred[None]()
            server.watch_for(b"TLS certificate reloaded", reloaded)
            process.signalProcess(signal.SIGHUP)
            await reloaded.asFuture(loop)
            self.assertEqual(await self.served_cert(port, new_cert), new_cert.read_text())
            writer.write(b"GET /still-open HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            self.assertIn(b'"path": "/still-open"', await asyncio.wait_for(reader.read(), 10))
            writer.close()
        finally:
            process.signalProcess(signal.SIGTERM)
            await asyncio.wait_for(server.ended.asFuture(loop), 30)


class PasswordPromptTests(unittest.TestCase):
    @asyncio_test
    async def test_an_encrypted_key_asks_for_its_password_on_a_terminal(self) -> None:
        cert, key_path, _ = development_certificate(Path(self.mktemp()))
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        encrypted = Path(self.mktemp()).resolve()
        encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.BestAvailableEncryption(b"sesame")))
        port = free_port()
        output = await deferToThread(_answer_prompt, [*TWIST, "--log-format=text", "hello-asgi", "--app",
                                                      "hello_asgi.demo:asgi", "--port", str(port), "--cert", str(cert),
                                                      "--key", str(encrypted)], b"sesame").asFuture(asyncio.get_running_loop())
        self.assertIn(b"Password for " + str(encrypted).encode(), output)
        self.assertIn(b"Serving https://127.0.0.1:%d" % port, output)


def _answer_prompt(command: list[str], password: bytes) -> bytes:
    """Run ``command`` on a terminal, type ``password`` at its prompt, then stop it once it serves."""
    pid, terminal = pty.fork()
    if pid == 0:
        os.execv(command[0], command)
    output = b""
    try:
        while b"Serving" not in output:
            chunk = os.read(terminal, 4096)
            if not chunk:
                break
            output += chunk
            if b"Password for" in chunk:
                os.write(terminal, password + b"\n")
    except OSError:
        pass  # the terminal closed: the process ended
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(terminal)
    return output
