"""The command envelope: shape, canonical bytes, Ed25519 signatures, keys, reason codes.

An envelope is one JSON object (docs/commands.md)::

    {"v": 1, "id": "...", "issuer": "farmer", "site": "green-valley", "gateway": "farm-gw-01",
     "issued_at": 1767225600, "expires_at": 1767225900, "target": "zone-2",
     "action": "irrigate", "params": {"duration_s": 900}, "signature": "<base64>"}

The signature is Ed25519 over :func:`canonical` of the object without its
``signature`` key: ``orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)`` -- compact
JSON, keys sorted by code point at every level, UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
import time
from dataclasses import dataclass, field

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VERSION = 1
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
TARGET_RE = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
FIELDS = {"v", "id", "issuer", "site", "gateway", "issued_at", "expires_at", "target", "action", "params", "signature"}
REQUIRED = FIELDS - {"params"}
MAX_PARAMS = 16

# Reason codes of a "rejected" result (docs/commands.md lists them with their meaning).
REJECT_REASONS: dict[str, str] = {
    "malformed": "not a JSON object of the envelope's shape (or too large)",
    "unsigned": "no signature",
    "unauthorised_issuer": "issuer unknown or disabled",
    "bad_signature": "signature does not verify with the issuer's key",
    "wrong_gateway": "site/gateway in the envelope are not this gateway's",
    "expired": "expires_at is in the past",
    "future_dated": "issued_at is ahead of the gateway's clock by more than clock_skew",
    "validity_too_long": "expires_at - issued_at is longer than max_validity",
    "replayed": "this id was already received from this issuer",
    "unknown_target": "no valve or lock with that id (or zone)",
    "unknown_action": "not an action the gateway knows",
    "unsupported_action": "the action does not apply to that kind of target",
    "unauthorised_action": "the issuer may not ask for this action",
    "unauthorised_target": "the issuer may not command this valve or lock",
    "missing_duration": "irrigate needs params.duration_s",
    "invalid_duration": "duration_s is not a positive number of seconds",
    "duration_exceeds_max": "duration_s is longer than the valve's max_run",
    "invalid_params": "unknown or wrongly typed parameters",
    "interlock": "an interlock forbids opening (see the interlock field)",
    "lockout": "too many rejected unlock attempts; unlocks refused for a while",
    "shutting_down": "the gateway is stopping",
}
FAIL_REASONS: dict[str, str] = {
    "device_error": "the device did not answer or refused the write",
    "readback_mismatch": "the state read back after the write is not what was written",
    "store_error": "the command id could not be recorded (replay protection), so nothing was done",
}


class KeyError_(ValueError):
    """A key that cannot be used (message says why, never the key itself)."""


class Malformed(ValueError):
    pass


@dataclass(frozen=True)
class Envelope:
    id: str
    issuer: str
    site: str
    gateway: str
    issued_at: float
    expires_at: float
    target: str
    action: str
    params: dict = field(default_factory=dict)
    signature: bytes = b""
    signed: bytes = b""  # the canonical bytes the signature covers


# -- canonical form and signatures ----------------------------------------------------------
def canonical(obj: dict) -> bytes:
    """The bytes an issuer signs: the envelope without ``signature``, keys sorted, compact."""
    return orjson.dumps({k: v for k, v in obj.items() if k != "signature"}, option=orjson.OPT_SORT_KEYS)


def sign(obj: dict, key: Ed25519PrivateKey) -> dict:
    """A copy of ``obj`` with its ``signature`` (base64 of the 64-byte Ed25519 signature)."""
    return {**{k: v for k, v in obj.items() if k != "signature"},
            "signature": base64.b64encode(key.sign(canonical(obj))).decode("ascii")}


def verify(env: Envelope, key: Ed25519PublicKey) -> bool:
    try:
        key.verify(env.signature, env.signed)
        return True
    except InvalidSignature:
        return False


def make(*, issuer: str, site: str, gateway: str, target: str, action: str, params: dict | None = None,
         valid_for: float = 300.0, now: float | None = None, id: str | None = None) -> dict:
    """An unsigned envelope (issuer side)."""
    now = time.time() if now is None else now
    return {"v": VERSION, "id": id or secrets.token_hex(8), "issuer": issuer, "site": site, "gateway": gateway,
            "issued_at": round(now, 3), "expires_at": round(now + valid_for, 3), "target": target, "action": action,
            "params": params or {}}


# -- parsing --------------------------------------------------------------------------------
def peek(payload: bytes) -> dict:
    """What can be said about a payload even when it is rejected (id, issuer, action, target)."""
    try:
        obj = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError):
        return {}
    if not isinstance(obj, dict):
        return {}
    out = {}
    for k in ("id", "issuer", "action", "target"):
        v = obj.get(k)
        if isinstance(v, str) and len(v) <= 128:
            out[k] = v
    return out


def _number(obj: dict, key: str) -> float:
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise Malformed(f"{key} must be a number of seconds since the epoch")
    return float(v)


def _text(obj: dict, key: str, pattern: re.Pattern | None = None, max_len: int = 128) -> str:
    v = obj[key]
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise Malformed(f"{key} must be a non-empty string of at most {max_len} characters")
    if pattern is not None and not pattern.match(v):
        raise Malformed(f"{key} {v!r} has characters that are not allowed")
    return v


def parse(payload: bytes, max_bytes: int = 8192) -> Envelope:
    """Payload -> Envelope; raises Malformed, or ``Unsigned`` when it has no signature."""
    if len(payload) > max_bytes:
        raise Malformed(f"message is {len(payload)} bytes; at most {max_bytes}")
    try:
        obj = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Malformed("not a JSON object")
    if "signature" not in obj or obj["signature"] in (None, ""):
        raise Unsigned("no signature")
    missing = sorted(REQUIRED - obj.keys())
    if missing:
        raise Malformed(f"missing {', '.join(missing)}")
    extra = sorted(obj.keys() - FIELDS)
    if extra:
        raise Malformed(f"unknown field(s) {', '.join(extra)}")
    if obj["v"] != VERSION or isinstance(obj["v"], bool):
        raise Malformed(f"v must be {VERSION}")
    params = obj.get("params", {})
    if not isinstance(params, dict) or len(params) > MAX_PARAMS:
        raise Malformed(f"params must be an object of at most {MAX_PARAMS} keys")
    sig_text = obj["signature"]
    if not isinstance(sig_text, str):
        raise Malformed("signature must be base64 text")
    try:
        signature = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed("signature is not valid base64") from None
    if len(signature) != 64:
        raise Malformed(f"signature must be 64 bytes (got {len(signature)})")
    return Envelope(
        id=_text(obj, "id", ID_RE), issuer=_text(obj, "issuer", ID_RE, 64), site=_text(obj, "site", max_len=64),
        gateway=_text(obj, "gateway", max_len=64), issued_at=_number(obj, "issued_at"),
        expires_at=_number(obj, "expires_at"), target=_text(obj, "target", TARGET_RE, 64),
        action=_text(obj, "action", max_len=32), params=params, signature=signature, signed=canonical(obj),
    )


class Unsigned(Malformed):
    pass


# -- keys -----------------------------------------------------------------------------------
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
