"""TLS: server contexts that offer h2 and http/1.1 by ALPN, client certificates, the ASGI
``tls`` scope extension, and a development certificate."""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import os
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from .config import Config
from .transport import CLOSE_TIMEOUT, IConnectionTransport

ALPN_PROTOCOLS = [b"h2", b"http/1.1"]  # h2 preferred
# The private keys pyOpenSSL serves TLS with: the ones that sign.
_SigningKey = (dsa.DSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
               | rsa.RSAPrivateKey)
_SIGNING_KEYS = (dsa.DSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey,
                 rsa.RSAPrivateKey)
MINIMUM_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


class TLSConfigError(Exception):
    """The certificate or key cannot be used; the message says which file and why."""


def options_for(config: Config) -> CertificateOptions:
    """The TLS options a ``Config`` asks for."""
    if config.certfile is None or config.keyfile is None:
        raise TLSConfigError("TLS needs a certificate and its key: give --cert and --key, or --tls")
    return server_options(config.certfile, config.keyfile, config.h2_alpn, password=config.key_password,
                          min_version=config.tls_min_version, ciphers=config.tls_ciphers,
                          ca_path=config.ca_certs, require_client_cert=config.require_client_cert)


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableTLS:
    """The TLS settings of a listener, which ``reload()`` reads again from their files.

    Each new connection takes the settings current when it arrives; connections already
    open keep theirs. So a renewed certificate (Let's Encrypt, cert-manager) is served
    from the next connection on, with no restart and nothing dropped.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._context = options_for(config).getContext()

    def reload(self) -> None:
        """Read the certificate and key again; ``TLSConfigError`` leaves the old ones in use."""
        self._context = options_for(self._config).getContext()

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        return SSL.Connection(self._context, None)


def key_is_encrypted(key_path: str) -> bool:
    """Whether the PEM key in ``key_path`` needs a password (PKCS#8 or the older PEM form)."""
    try:
        head = Path(key_path).read_bytes()[:200]
    except OSError:
        return False
    return b"ENCRYPTED" in head


def server_options(cert_path: str, key_path: str, h2: bool = True, *, password: str | None = None,
                   min_version: str = "1.2", ciphers: str | None = None, ca_path: str | None = None,
                   require_client_cert: bool = False) -> CertificateOptions:
    """ALPN offering h2 (unless ``h2`` is false) then http/1.1, with the PEM chain in
    ``cert_path`` and its key (decrypted with ``password``); TLS ``min_version`` or newer,
    Twisted's modern cipher list or the OpenSSL cipher string ``ciphers``; with ``ca_path``,
    client certificates are asked for (and required, with ``require_client_cert``) and must
    verify against the CA certificates in that PEM file."""
    chain = _certificates(_read("--cert", cert_path), cert_path)
    key = _private_key(_read("--key", key_path), key_path, password)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (chain[0].to_cryptography().public_key().public_bytes(serialization.Encoding.DER, public)
            != key.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise TLSConfigError(f"--key {key_path} does not match the certificate in --cert {cert_path}")
    if min_version not in MINIMUM_VERSIONS:
        raise TLSConfigError(f"--tls-min-version must be one of {', '.join(MINIMUM_VERSIONS)}, not {min_version!r}")
    extra: dict[str, Any] = {}
    if ciphers is not None:
        extra["acceptableCiphers"] = AcceptableCiphers.fromOpenSSLCipherString(ciphers)
    if ca_path is not None:
        extra.update(verify=True, caCerts=_authorities(ca_path), requireCertificate=require_client_cert)
    protocols = ALPN_PROTOCOLS if h2 else ALPN_PROTOCOLS[1:]
    try:
        options = CertificateOptions(privateKey=crypto.PKey.from_cryptography_key(key), certificate=chain[0],
                                     extraCertChain=chain[1:], raiseMinimumTo=MINIMUM_VERSIONS[min_version], acceptableProtocols=protocols,
                                     **extra)
    except ValueError as error:  # Twisted's word for a cipher string with nothing usable in it
        raise TLSConfigError(f"--tls-ciphers {ciphers!r}: {error}") from error
    try:
        context = options.getContext()  # made once, and kept by the options
    except SSL.Error as error:
        raise TLSConfigError(f"OpenSSL refused these TLS settings: {error}") from error
    choose_alpn(context, protocols)
    return options


def _read(option: str, path: str) -> bytes:
    """The file an option names, or the error that says which and why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TLSConfigError(f"{option} {path}: {error.strerror}") from error


def _certificates(pem: bytes, cert_path: str) -> list[crypto.X509]:
    """The certificate chain in ``--cert``, the server's own first."""
    try:
        return [crypto.X509.from_cryptography(c) for c in x509.load_pem_x509_certificates(pem)]
    except ValueError as error:
        raise TLSConfigError(f"--cert {cert_path}: not a PEM certificate ({error})") from error


def _private_key(pem: bytes, key_path: str, password: str | None) -> _SigningKey:
    """The key in ``--key``, decrypted with ``password``: one that signs TLS handshakes
    (cryptography reads key-exchange keys too, which pyOpenSSL cannot serve with)."""
    try:
        secret = password.encode() if password is not None else None
        key = serialization.load_pem_private_key(pem, secret)
    except TypeError as error:  # a password for a plain key, or none for an encrypted one
        raise TLSConfigError(f"--key {key_path}: {error}") from error
    except ValueError as error:
        what = "a wrong password, or not a PEM private key" if password else "not a PEM private key"
        raise TLSConfigError(f"--key {key_path}: {what} ({error})") from error
    if not isinstance(key, _SIGNING_KEYS):
        kind = type(key).__name__.removesuffix("PrivateKey")
        raise TLSConfigError(f"--key {key_path}: key type {kind} cannot sign TLS handshakes here; "
                             "use RSA, ECDSA or EdDSA")
    return key


def _authorities(ca_path: str) -> list[crypto.X509]:
    """The CA certificates in ``--ca``, that client certificates must verify against."""
    try:
        return [crypto.X509.from_cryptography(ca) for ca in x509.load_pem_x509_certificates(_read("--ca", ca_path))]
    except ValueError as error:
        raise TLSConfigError(f"--ca {ca_path}: not PEM certificates ({error})") from error


def choose_alpn(context: SSL.Context, ours: list[bytes]) -> None:
    """Make ``context`` choose the first of ``ours`` the client offers by ALPN, and go on
    without a protocol when it offers none of them.

    Twisted's own choice answers no overlap with an empty protocol, which OpenSSL turns
    into a fatal ``internal_error`` alert: a client offering only ``http/1.0`` could not
    connect at all. RFC 7301 section 3.2 lets the server go on instead, and a connection
    without a negotiated protocol is served HTTP/1.1.
    """

    def select(connection: SSL.Connection, offered: list[bytes]) -> bytes | Any:
        return next((protocol for protocol in ours if protocol in offered), SSL.NO_OVERLAPPING_PROTOCOLS)

    context.set_alpn_select_callback(select)


def tls_extension(transport: ITransport) -> dict[str, Any] | None:
    """The ASGI ``tls`` scope extension for a connection whose TLS handshake is done, or
    ``None`` if its transport has no TLS connection to read."""
    get_handle = getattr(transport, "getHandle", None)
    connection = get_handle() if get_handle is not None else None
    if not isinstance(connection, SSL.Connection):
        return None
    own = connection.get_certificate()
    peer = connection.get_peer_certificate(as_cryptography=True)
    chain = [peer] if peer is not None else []
    for certificate in connection.get_peer_cert_chain(as_cryptography=True) or []:
        if certificate != peer:  # a server sees the peer's chain without its own certificate
            chain.append(certificate)
    cipher = connection.get_cipher_name()
    return {
        "server_cert": _pem(own.to_cryptography()) if own is not None else None,
        "client_cert_chain": [_pem(certificate) for certificate in chain],
        "client_cert_name": peer.subject.rfc4514_string() if peer is not None else None,
        "client_cert_error": None,  # a client certificate that does not verify fails the handshake
        "tls_version": connection.get_protocol_version(),
        "cipher_suite": _cipher_suites().get(cipher) if cipher else None,
    }


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


@functools.cache
def _cipher_suites() -> dict[str, int]:
    """OpenSSL's cipher names to their 16-bit IANA numbers, which the extension gives:
    pyOpenSSL names the cipher in use but does not number it; Python's ssl lists both."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    return {cipher["name"]: cipher["id"] & 0xFFFF for cipher in context.get_ciphers()}


def development_certificate(directory: Path | None = None) -> tuple[Path, Path, str]:
    """A self-signed certificate for localhost, 127.0.0.1 and ::1, made once and cached.

    Returns the certificate path, the key path and the certificate's SHA-256 fingerprint.
    """
    directory = directory or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hello-asgi"
    cert_path, key_path = directory / "dev-cert.pem", directory / "dev-key.pem"
    if not (cert_path.exists() and key_path.exists()) or _expires_soon(cert_path):
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hello-asgi development certificate")])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        key_path.touch(mode=0o600)
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    fingerprint = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    return cert_path, key_path, ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()


def _expires_soon(cert_path: Path) -> bool:
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    remaining = certificate.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    return remaining < datetime.timedelta(days=7)


_BIO_READ = 80 * 1024  # the records of a 64 KiB write in one read of the send BIO, below malloc's mmap threshold
_DIRECT = 16 * 1024  # a write this large is not gathered with others first


class BoundedTLSProtocol(BufferingTLSTransport):
    """Twisted's TLS, with a bound on closing, and the records of a write sent together.

    Twisted's TLS closes by sending close_notify and then waits for the peer's, without
    limit: a peer that sends neither close_notify nor a FIN held its connection (and its
    slot under the connection limit) for good. Here the wait reads on, so the peer's
    close_notify or FIN is seen even when the protocol had paused reading, and is cut
    short by an abort after the factory's ``close_timeout`` (RFC 8446 section 6.1 does
    not ask the closing side to wait at all).
    """

    factory: BoundedTLSFactory
    transport: IConnectionTransport  # set by makeConnection, before any other call
    _close_timer: IDelayedCall | None = None
    _holding_records = False  # inside _write: the records go out together at its end

    def __init__(self, factory: BoundedTLSFactory, wrappedProtocol: IProtocol, _connectWrapped: bool = True) -> None:
        super().__init__(factory, wrappedProtocol, _connectWrapped)
        aggregate = self.write  # Twisted's: small writes gathered until the loop's next turn
        direct = TLSMemoryBIOProtocol.write.__get__(self)

        def write(data: bytes) -> None:
            """A large write goes straight on, after what was gathered before it, rather than
            being copied into the gathering first."""
            if len(data) < _DIRECT:
                aggregate(data)
            else:
                self._aggregator.flush()
                direct(data)

        # Over the instance's write, as Twisted's __init__ sets its own: no method lookup per write.
        self.write = write  # type: ignore[method-assign]

    def _write(self, bytes: bytes) -> None:  # noqa: A002 (Twisted's name)
        """Twisted's, but the TLS records made from one write leave in one transport write,
        and OpenSSL is handed the write whole rather than in 16 KiB copies: Twisted writes
        each record as it is made, a system call each (a quarter more server CPU for a
        200 MB download than one call per 64 KiB chunk)."""
        if self._lostTLSConnection:
            return
        view = memoryview(bytes)
        done = 0
        self._holding_records = True
        try:
            while done < len(view):
                try:
                    done += self._tlsConnection.send(view[done:])
                except SSL.WantReadError:  # renegotiating: the rest waits, as in Twisted's
                    self._bufferedWrite(bytes[done:])
                    break
                except SSL.Error:  # as Twisted does: the connection is lost, with the error
                    self._tlsShutdownFinished(Failure())
                    break
        finally:
            self._holding_records = False
        self._flushSendBIO()

    def _flushSendBIO(self) -> None:
        """Everything in the send BIO, in one transport write."""
        if self._holding_records:
            return
        pieces = []
        while True:
            try:
                data = self._tlsConnection.bio_read(_BIO_READ)
            except SSL.WantReadError:
                break
            pieces.append(data)
            if len(data) < _BIO_READ:
                break
        if pieces:
            self.transport.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def loseConnection(self) -> None:
        super().loseConnection()
        if self._close_timer is None and self.connected and not self._aborted:
            self._close_timer = self.factory._clock.callLater(self.factory.close_timeout, self.abortConnection)
            self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        if not self.disconnecting:  # a closing connection reads on, for the peer's close
            self.transport.pauseProducing()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        super().connectionLost(reason)


class BoundedTLSFactory(TLSMemoryBIOFactory):
    """``TLSMemoryBIOFactory`` whose connections close within ``close_timeout`` seconds."""

    protocol = BoundedTLSProtocol

    def __init__(self, contextFactory: IOpenSSLServerConnectionCreator, wrappedFactory: IProtocolFactory,
                 close_timeout: float = CLOSE_TIMEOUT, clock: IReactorTime | None = None) -> None:
        super().__init__(contextFactory, False, wrappedFactory, clock)
        self.close_timeout = close_timeout
