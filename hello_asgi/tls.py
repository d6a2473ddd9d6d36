"""TLS: server contexts that offer h2 and http/1.1 by ALPN, and a development certificate."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.ssl import CertificateOptions, TLSVersion

ALPN_PROTOCOLS = [b"h2", b"http/1.1"]  # h2 preferred


class TLSConfigError(Exception):
    """The certificate or key cannot be used; the message says which file and why."""


def server_options(cert_path: str, key_path: str, h2: bool = True) -> CertificateOptions:
    """TLS 1.2 or newer, ALPN offering h2 (unless ``h2`` is false) then http/1.1, with the PEM
    chain in ``cert_path``."""
    try:
        pem = Path(cert_path).read_bytes()
    except OSError as error:
        raise TLSConfigError(f"--cert {cert_path}: {error.strerror}") from error
    try:
        key_pem = Path(key_path).read_bytes()
    except OSError as error:
        raise TLSConfigError(f"--key {key_path}: {error.strerror}") from error
    try:
        chain = [crypto.X509.from_cryptography(c) for c in x509.load_pem_x509_certificates(pem)]
    except ValueError as error:
        raise TLSConfigError(f"--cert {cert_path}: not a PEM certificate ({error})") from error
    try:
        key = crypto.PKey.from_cryptography_key(serialization.load_pem_private_key(key_pem, None))
    except (ValueError, TypeError) as error:
        raise TLSConfigError(f"--key {key_path}: not an unencrypted PEM private key ({error})") from error
    options = CertificateOptions(
        privateKey=key,
        certificate=chain[0],
        extraCertChain=chain[1:],
        raiseMinimumTo=TLSVersion.TLSv1_2,
        acceptableProtocols=ALPN_PROTOCOLS if h2 else ALPN_PROTOCOLS[1:],
    )
    try:
        options.getContext().check_privatekey()
    except SSL.Error as error:
        raise TLSConfigError(f"--key {key_path} does not match the certificate in --cert {cert_path}") from error
    return options


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
