"""Certificates made at test time: a throwaway CA, a server certificate for localhost/127.0.0.1, client certificates."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_KEY = ec.SECP256R1()  # P-256: fast to generate, accepted by gRPC's BoringSSL and Python's ssl alike


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, as PEM files."""

    cert: str
    key: str


@dataclass(frozen=True)
class Pki:
    """One CA and the certificates it signed; `other_ca` signed `stranger` (a client we must not trust)."""

    ca: str
    server: Pair
    client: Pair
    other_ca: str
    stranger: Pair


def make_pki(directory: Path) -> Pki:
    """Writes a CA, a server certificate (localhost, 127.0.0.1), a client certificate and an untrusted client."""
    ca_key, ca_cert = _ca("llm-twin test CA")
    other_key, other_cert = _ca("someone else's CA")
    return Pki(
        ca=_write_cert(directory / "ca.pem", ca_cert),
        server=_leaf(directory, "server", ca_key, ca_cert, server=True),
        client=_leaf(directory, "client", ca_key, ca_cert, server=False),
        other_ca=_write_cert(directory / "other-ca.pem", other_cert),
        stranger=_leaf(directory, "stranger", other_key, other_cert, server=False),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(_KEY)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    directory: Path, name: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *, server: bool
) -> Pair:
    key = ec.generate_private_key(_KEY)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost" if server else f"{name}.test"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_path = directory / f"{name}-key.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Pair(cert=_write_cert(directory / f"{name}.pem", cert), key=str(key_path))


def _write_cert(path: Path, cert: x509.Certificate) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)
