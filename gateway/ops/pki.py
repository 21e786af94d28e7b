"""The gateway's mutual-TLS identity: its private key, a certificate signing request, and (for a lab) a local CA.

The key is made on the board and never leaves it: only the CSR goes to the
site's CA.  ``sign_csr`` is for a lab or a test bench, where the CA is a pair of
files at hand.  EC P-256: small, fast on a Pi, accepted by every broker.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def write_private(path: Path, data: bytes) -> None:
    """Create (or replace) a file readable by its owner only, never briefly open to others."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def client_key_and_csr(key_path: Path, csr_path: Path, *, gateway: str, site: str) -> x509.CertificateSigningRequest:
    """A new P-256 key (0600) and a CSR for CN=<gateway>, O=<site>, for client authentication."""
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway), x509.NameAttribute(NameOID.ORGANIZATION_NAME, site)])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
           .sign(key, hashes.SHA256()))
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return csr


def sign_csr(csr: x509.CertificateSigningRequest, ca_cert: Path, ca_key: Path, out: Path, days: int = 825) -> x509.Certificate:
    """A client certificate for ``csr`` from a local CA (lab or test bench only)."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject).public_key(csr.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


@dataclass(frozen=True)
class CertInfo:
    subject: str
    not_before: datetime.datetime
    not_after: datetime.datetime

    def days_left(self, now: datetime.datetime | None = None) -> float:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return (self.not_after - now).total_seconds() / 86400


def cert_info(path: Path) -> list[CertInfo]:
    """Every certificate in a PEM file (a CA bundle may hold several); ValueError when there is none."""
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    return [CertInfo(c.subject.rfc4514_string(), c.not_valid_before_utc, c.not_valid_after_utc) for c in certs]
