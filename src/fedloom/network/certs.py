"""Test certificates: a private CA, a server certificate and client certificates.

Made with the ``cryptography`` package (ECDSA P-256, SHA-256). Good for trying TLS and
mutual TLS on a laptop or a lab network; a real deployment should use its own PKI.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedloom test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _sans(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    days: int,
    usage: x509.ObjectIdentifier | None = None,
    hosts: Sequence[str] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    if secret:
        write_secret(path, data)
    else:
        path.write_bytes(data)


def write_secret(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write a file only its owner can read, from its creation on (keys, tokens); without
    ``overwrite``, an existing file is a ``FileExistsError`` (checked atomically)."""
    if overwrite:
        path.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_certs(
    directory: str | Path,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 30,
) -> CertFiles:
    """Write ca.pem, server.pem/server.key (valid for ``hosts``), client.pem/client.key."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("fedloom test CA", ca_key, None, days)
    issuer = (ca.subject, ca_key)
    server_key, client_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    server = _issue(hosts[0], server_key, issuer, days, ExtendedKeyUsageOID.SERVER_AUTH, hosts)
    client = _issue("fedloom client", client_key, issuer, days, ExtendedKeyUsageOID.CLIENT_AUTH)
    files = CertFiles(
        out / "ca.pem",
        out / "server.pem",
        out / "server.key",
        out / "client.pem",
        out / "client.key",
    )
    pem = serialization.Encoding.PEM
    _write(files.ca, ca.public_bytes(pem))
    _write(files.server_cert, server.public_bytes(pem))
    _write(files.server_key, _pem_key(server_key), secret=True)
    _write(files.client_cert, client.public_bytes(pem))
    _write(files.client_key, _pem_key(client_key), secret=True)
    return files
