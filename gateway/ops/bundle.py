"""The offline install bundle: wheels, units and the installer, a sha256 of every file, signed by the release key.

A board on a flaky link downloads one file, ``canopy-<version>-<set>.tar``::

    canopy-0.2.0-sensor/
      manifest.json   {"format", "version", "set", "extras", "requirement", "files": {path: sha256}, ...}
      manifest.sig    Ed25519 signature of manifest.json by the release key
      release.pub     the release key's public half (trusted on the first install only)
      wheels/*.whl    aarch64 and x86_64, CPython 3.11-3.13
      systemd/*, install.sh

The release key is not an issuer key (``canopy keys``): it signs software, and its
public half is installed with the first bundle (``/etc/canopy/release.pub``); from
then on a bundle signed by any other key is refused, whatever it carries.  Every
file is checked against the manifest, and a file the manifest does not name is
refused too, so nothing unsigned reaches pip.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "release.pub"
_UNSIGNED = {MANIFEST, SIGNATURE}  # the only files a manifest cannot name (it is them)
MAX_MANIFEST_BYTES = 1 << 20


class BundleError(Exception):
    """A bundle that must not be installed, and why."""


@dataclass(frozen=True)
class Manifest:
    version: str
    set: str  # "sensor" or "camera"
    extras: tuple[str, ...]
    requirement: str  # what pip installs from wheels/, e.g. "canopy-gateway[camera]==0.2.0"
    files: dict[str, str]  # relative path -> sha256
    created: float

    def to_json(self) -> bytes:
        body = {"format": FORMAT, "name": "canopy", "version": self.version, "set": self.set, "extras": list(self.extras),
                "requirement": self.requirement, "created": self.created, "files": dict(sorted(self.files.items()))}
        return json.dumps(body, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data)
            if body.get("format") != FORMAT:
                raise BundleError(f"unknown bundle format {body.get('format')!r} (this installer reads format {FORMAT})")
            files = body["files"]
            if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
                raise BundleError("manifest.json: files must map paths to sha256 digests")
            return cls(str(body["version"]), str(body["set"]), tuple(body.get("extras", ())), str(body["requirement"]),
                       files, float(body.get("created", 0)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"manifest.json is not a bundle manifest: {exc}") from None


# -- keys ---------------------------------------------------------------------------------
def generate_release_key(private_path: Path) -> Path:
    """A new release key: ``NAME.key`` (0600, PKCS#8 PEM) and ``NAME.pub``; returns the public file."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = private_path.with_suffix(".pub")
    public.write_bytes(public_pem(key.public_key()))
    return public


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(data: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise BundleError(f"{where} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{where} is not an Ed25519 public key")
    return key


def fingerprint(key: Ed25519PublicKey) -> str:
    """``SHA256:…`` of the raw public key, to compare with the one the release page publishes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    return base64.b64encode(key.sign(data)) + b"\n"


def verify_signature(data: bytes, signature: bytes, key: Ed25519PublicKey, what: str) -> None:
    try:
        key.verify(base64.b64decode(signature.strip(), validate=True), data)
    except (InvalidSignature, ValueError):
        raise BundleError(f"{what}: the signature does not verify with release key {fingerprint(key)}") from None


# -- building -----------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` but the manifest and its signature, with its sha256."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel not in _UNSIGNED:
            out[rel] = sha256_file(path)
    return out


def seal(folder: Path, *, version: str, set_name: str, extras: tuple[str, ...], key: Ed25519PrivateKey) -> Manifest:
    """Write release.pub, manifest.json and manifest.sig into a filled bundle folder."""
    (folder / PUBLIC_KEY).write_bytes(public_pem(key.public_key()))
    extra = f"[{','.join(extras)}]" if extras else ""
    manifest = Manifest(version, set_name, extras, f"canopy-gateway{extra}=={version}", bundle_files(folder), round(time.time(), 3))
    data = manifest.to_json()
    (folder / MANIFEST).write_bytes(data)
    (folder / SIGNATURE).write_bytes(sign(data, key))
    return manifest


def pack(folder: Path, out: Path) -> Path:
    """One uncompressed tar (wheels are compressed already) with the folder at its top."""
    with tarfile.open(out, "w") as tar:
        tar.add(folder, arcname=folder.name)
    return out


# -- checking -------------------------------------------------------------------------------
def unpack(bundle: Path, into: Path) -> Path:
    """Extract a bundle tar (links, devices and paths outside ``into`` refused) and return its folder."""
    try:
        with tarfile.open(bundle, "r:*") as tar:
            tops = {PurePosixPath(m.name).parts[0] for m in tar.getmembers() if m.name not in ("", ".")}
            if len(tops) != 1:
                raise BundleError(f"{bundle}: a bundle has exactly one top folder (found {len(tops)})")
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{bundle}: not a readable bundle: {exc}") from None
    return into / tops.pop()


def verify(folder: Path, trusted: Ed25519PublicKey | None, *, expect_fingerprint: str | None = None) -> Manifest:
    """The signed manifest of an unpacked bundle once every file checks out; BundleError otherwise.

    ``trusted`` is the installed release key; None on a first install, where the
    bundle's own ``release.pub`` is used (and must match ``expect_fingerprint`` when given).
    """
    data = _read_small(folder / MANIFEST)
    signature = _read_small(folder / SIGNATURE)
    bundled = load_public_key(_read_small(folder / PUBLIC_KEY), f"{folder.name}/{PUBLIC_KEY}")
    key = trusted or bundled
    if expect_fingerprint and fingerprint(key) != expect_fingerprint:
        raise BundleError(f"release key {fingerprint(key)} is not the expected {expect_fingerprint}")
    verify_signature(data, signature, key, f"{folder.name}/{MANIFEST}")
    manifest = Manifest.from_json(data)
    _check_files(folder, manifest)
    return manifest


def _read_small(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{path.name} is larger than {MAX_MANIFEST_BYTES} bytes")
        return path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"the bundle has no {path.name}") from None


def _check_files(folder: Path, manifest: Manifest) -> None:
    for rel in manifest.files:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            raise BundleError(f"manifest names a path outside the bundle: {rel}")
    present = bundle_files(folder)
    for rel, digest in manifest.files.items():
        if rel not in present:
            raise BundleError(f"{rel} is in the manifest but not in the bundle")
        if present[rel] != digest:
            raise BundleError(f"{rel}: sha256 {present[rel]} differs from the manifest's {digest}")
    extra = sorted(set(present) - set(manifest.files))
    if extra:
        raise BundleError(f"{extra[0]} is in the bundle but not in the signed manifest" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
