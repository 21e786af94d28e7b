"""The centre's own HTTPS certificate, for a site without a CA (``http.self_signed: true``).

A duty desk needs a secure origin (browsers allow notifications only there), and a village
hall has no certificate authority.  So the centre makes one self-signed certificate (ECDSA
P-256, ``cryptography``), keeps it in ``http.tls_dir`` (key 0600 in a 0700 folder) and reuses
it at every start until 30 days before it expires; then it makes a new one.  Browsers warn
once about it: the installer checks the SHA-256 fingerprint the centre logs at start against
the one the browser shows, and accepts (or installs) it.  A real certificate (``tls_cert``)
is always better; this is the floor, never plain HTTP.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("canopy.centre.web")

VALID_DAYS = 825  # the longest validity browsers accept for a server certificate
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Certificate:
    cert: str
    key: str
    fingerprint: str  # SHA-256, hex pairs, as browsers show it
    made: bool  # made now (False: reused)


def names_for(host: str) -> list[str]:
    """What the certificate names: the configured address, this machine's name, loopback."""
    names = [host] if host not in ("0.0.0.0", "::", "") else []
    names += [socket.gethostname(), "localhost", "127.0.0.1"]
    return list(dict.fromkeys(n for n in names if n))


def ensure(tls_dir: str, names: list[str], now: datetime.datetime | None = None) -> Certificate:
    """The certificate in ``tls_dir`` if it is still good for these names, else a new one there."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    folder = Path(tls_dir)
    cert_file, key_file = folder / "centre.crt", folder / "centre.key"
    current = _load(cert_file, key_file)
    if current is not None and current.not_valid_after_utc - RENEW_BEFORE > now and set(names) <= _names_in(current):
        return Certificate(str(cert_file), str(key_file), _fingerprint(current), made=False)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build(key, names, now)
    _write(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return Certificate(str(cert_file), str(key_file), _fingerprint(cert), made=True)


def _build(key: ec.EllipticCurvePrivateKey, names: list[str], now: datetime.datetime) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Canopy Centre (self-signed)")])
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))


def _load(cert_file: Path, key_file: Path) -> x509.Certificate | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        return None  # a key from another certificate: make a matching pair
    return cert


def _names_in(cert: x509.Certificate) -> set[str]:
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in alt.get_values_for_type(x509.IPAddress)} | set(alt.get_values_for_type(x509.DNSName))


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _write(path: Path, data: bytes) -> None:
    """0600 whatever the umask, replaced atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
