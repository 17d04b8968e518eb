"""Client identity, server trust and secrets for the OPC UA adapter.

Why these rules:

- The client certificate and key are generated on first start (RSA 2048, SHA-256, the
  application URI in the subjectAltName as OPC UA Part 6 requires) and stored under the
  PKI directory with mode 0600 for the key, so a gateway that is simply installed gets a
  stable identity a server administrator can trust once.
- A server certificate is accepted only if it is in the trust directory. With
  `trust_on_first_use`, an unknown certificate is written there on first contact (pinned);
  from then on a different certificate is refused like any other. A refused certificate
  is copied to `<pki_dir>/rejected/`, and the error says which file to move where.
- Secrets are resolved here from the environment or a file at connect time; their values
  never enter a log line or an exception message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapters.base import resolve_secret as resolve_secret_ref
from models.errors import ConfigurationError, TransientError
from models.plant import SecretRef

CERT_NAME = "client-cert.der"
KEY_NAME = "client-key.pem"


class UntrustedServerCertificate(TransientError):
    """The server presented a certificate that is not in the trust list.

    Transient on purpose: once an operator moves the certificate into the trust directory,
    the next reconnect attempt succeeds without restarting the gateway.
    """


@dataclass(frozen=True)
class ClientIdentity:
    cert_der: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path


def thumbprint(der: bytes) -> str:
    """SHA-1 thumbprint, the form OPC UA tools (UaExpert, Prosys) show for a certificate."""
    return hashlib.sha1(der, usedforsecurity=False).hexdigest()


def resolve_secret(ref: SecretRef | str | None) -> str | None:
    """The value a SecretRef names (`adapters.base.resolve_secret`); a plain string (a user
    name written in the YAML) or None passes through."""
    if ref is None or isinstance(ref, str):
        return ref
    return resolve_secret_ref(ref)


def _write_private(path: Path, data: bytes) -> None:
    """Create with 0600 from the start (no window where the key is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def make_self_signed(
    application_uri: str, common_name: str, *, server: bool = False, hostnames: tuple[str, ...] = ()
) -> tuple[bytes, bytes]:
    """A self-signed OPC UA application certificate: (DER cert, PEM PKCS#8 key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-gateway"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    sans += [x509.DNSName(h) for h in hostnames or (socket.gethostname(),)]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.DER), key_pem


def ensure_client_identity(pki_dir: Path, application_uri: str) -> ClientIdentity:
    """Load the client certificate and key, generating them on first start."""
    cert_path, key_path = pki_dir / CERT_NAME, pki_dir / KEY_NAME
    try:
        pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (cert_path.exists() and key_path.exists()):
            cert, key = make_self_signed(application_uri, "edge-gateway OPC UA client")
            _write_private(key_path, key)
            cert_path.write_bytes(cert)
        return ClientIdentity(cert_path.read_bytes(), key_path.read_bytes(), cert_path, key_path)
    except OSError as exc:
        raise ConfigurationError(
            f"OPC UA PKI directory {pki_dir}: {exc.strerror or exc} "
            "(set connection.pki_dir to a writable directory)"
        ) from None


def _load_der(path: Path) -> bytes | None:
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
        except ValueError:
            return None
    return data


def trusted_certificates(trust_dir: Path) -> set[bytes]:
    """Every certificate (DER or PEM, any file name) in the trust directory."""
    if not trust_dir.is_dir():
        return set()
    out: set[bytes] = set()
    for path in sorted(trust_dir.iterdir()):
        if path.is_file() and path.suffix.lower() in {".der", ".pem", ".crt", ".cer"}:
            der = _load_der(path)
            if der:
                out.add(der)
    return out


def check_server_certificate(
    der: bytes, *, trust_dir: Path, pki_dir: Path, tofu: bool, endpoint: str
) -> str | None:
    """Accept a trusted certificate; pin it under TOFU; else raise with how to trust it.

    Returns the path it was pinned to when this call pinned it (for one log line).
    """
    if der in trusted_certificates(trust_dir):
        return None
    tp = thumbprint(der)
    if tofu and not any(trust_dir.glob("*")):
        trust_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pinned = trust_dir / f"server-{tp}.der"
        pinned.write_bytes(der)
        return str(pinned)
    rejected = pki_dir / "rejected" / f"server-{tp}.der"
    try:
        rejected.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        rejected.write_bytes(der)
        trust_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # so the `mv` below works
    except OSError:
        pass
    why = "differs from the pinned one" if tofu else "is not in the trust list"
    raise UntrustedServerCertificate(
        f"{endpoint}: server certificate {tp} {why}; to trust it: "
        f"mv {rejected} {trust_dir}/ (or set trust_on_first_use on a first connection)"
    )
