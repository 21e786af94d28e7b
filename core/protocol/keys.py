"""Ed25519 keys in the forms Canopy reads and writes: raw base64 (``canopy keys gen``), ``ed25519:`` prefixed, PEM.

Every signed envelope (docs/protocol.md#signed-envelopes) is signed with one of these;
errors say what is wrong with a key, never print the key.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyError_(ValueError):
    """A key that cannot be used (message says why, never the key itself)."""


def public_key_text(key: Ed25519PublicKey) -> str:
    """base64 of the raw 32-byte public key (what goes into the site config)."""
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError):
            raise KeyError_("not a readable PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyError_("not an Ed25519 key (Canopy signs with Ed25519; make one with `canopy keys gen`)")
        return key
    if text.startswith("ed25519:"):
        text = text[len("ed25519:"):]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyError_("not base64 (expected the 44-character key `canopy keys gen` prints, or PEM)") from None
    if len(raw) != 32:
        raise KeyError_(f"an Ed25519 public key is 32 bytes; this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"not a readable unencrypted PEM private key ({exc.__class__.__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_("not an Ed25519 private key (make one with `canopy keys gen`)")
    return key
