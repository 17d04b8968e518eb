"""A throw-away PKI for TLS tests at a real Mosquitto: a CA, a server certificate for
127.0.0.1/localhost and a client certificate, written as PEM files, plus the Mosquitto
listener that uses them. Shared by the transport tests and the end-to-end tests, so both
speak TLS to the same kind of broker."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, Any] | None,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    """Valid for a day; self-signed when `issuer` (name, key) is None."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def write_pair(
    directory: Path,
    name: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    password: bytes | None = None,
) -> tuple[str, str]:
    """`<name>.pem` and `<name>.key` (PKCS#8, encrypted with `password` when given)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption()
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          encryption)
    )
    return str(directory / f"{name}.pem"), str(directory / f"{name}.key")


def write_pki(directory: Path, client_key_password: bytes | None = None) -> dict[str, str]:
    """Paths by role: ca, ca_key, server, server_key, client, client_key."""
    out: dict[str, str] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("edge-test-ca", ca_key, None, ca=True)
    out["ca"], out["ca_key"] = write_pair(directory, "ca", ca, ca_key)
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(name, key, (ca.subject, ca_key), server=name == "server")
        password = client_key_password if name == "client" else None
        out[name], out[f"{name}_key"] = write_pair(directory, name, cert, key, password)
    return out


def tls_listener(port: int, pki: dict[str, str], require_certificate: bool) -> str:
    """Mosquitto configuration lines of a TLS listener on 127.0.0.1:`port`."""
    return (
        f"listener {port} 127.0.0.1\ncafile {pki['ca']}\ncertfile {pki['server']}\n"
        f"keyfile {pki['server_key']}\n"
        f"require_certificate {str(require_certificate).lower()}\n"
    )
