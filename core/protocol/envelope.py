"""The signed envelope: one shape for every message that acts -- commands, acks, config, replay requests.

A v2 envelope is one JSON object (docs/protocol.md#signed-envelopes)::

    {"v": 2, "kind": "ack", "id": "4c1d…", "issuer": "centre-1", "on_behalf_of": "vol-wang",
     "site": "sunny-court", "gateway": "gw-3", "issued_at": 1767225600, "expires_at": 1767225900,
     "target": "1-d70e", "action": "acknowledge", "params": {"note": "on my way"}, "signature": "<base64>"}

A v1 envelope (docs/commands.md) is a command without ``kind`` and ``on_behalf_of``,
``"v": 1`` or no ``v`` at all; gateways accept it on ``…/cmd`` until protocol v3.

The signature is Ed25519 over :func:`canonical` of the object without its
``signature`` key: ``orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)`` -- compact
JSON, keys sorted by code point at every level, UTF-8.  Every other field is
covered, so nothing can be changed or added on the way.  Parsing goes through
the bounded parser first (:mod:`core.protocol.limits`), so no payload can make
the canonical form (or anything after it) recurse.
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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.protocol import limits
from core.protocol.keys import KeyError_, generate, load_private_key, load_public_key, private_pem, public_key_text
from core.protocol.limits import Malformed
from core.protocol.reasons import FAIL_REASONS, REJECT_REASONS

__all__ = [
    "ACTIONS", "KINDS", "Envelope", "FAIL_REASONS", "KeyError_", "Malformed", "REJECT_REASONS", "Unsigned",
    "canonical", "generate", "legacy_ack", "load_private_key", "load_public_key", "make", "parse", "peek",
    "private_pem", "public_key_text", "sign", "verify",
]

VERSION = 1  # what make() writes unless asked for v2 (the issuer tools move to v2 with the gateway)
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
PERSON_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$")
TARGET_RE = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
FIELDS_V1 = frozenset({"v", "id", "issuer", "site", "gateway", "issued_at", "expires_at", "target", "action", "params",
                       "signature"})
FIELDS = FIELDS_V1 | {"kind", "on_behalf_of"}
REQUIRED_V1 = FIELDS_V1 - {"v", "params"}
REQUIRED = FIELDS - {"params", "on_behalf_of"}
MAX_PARAMS = 16

# kind -> the topic suffix it travels on and the actions a gateway may be asked for
# (commands: docs/commands.md#actions; the gateway answers unknown ones with unknown_action).
KINDS: dict[str, str] = {"command": "cmd", "ack": "alert/ack", "config": "config", "replay": "replay"}
ACTIONS: dict[str, tuple[str, ...]] = {
    "ack": ("acknowledge", "resolve"),
    "config": ("apply",),
    "replay": ("records", "state", "meta"),
}
_LIMITS = {"command": limits.COMMAND, "ack": limits.ACK, "config": limits.CONFIG, "replay": limits.REPLAY}


class Unsigned(Malformed):
    """No signature at all (reason ``unsigned``): told apart from a bad one."""

    def __init__(self, detail: str):
        super().__init__(detail, "unsigned")


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
    v: int = 1
    kind: str = "command"
    on_behalf_of: str | None = None  # the person a service signed for (v2)

    @property
    def acting_for(self) -> str:
        """Who asked: the person a service signed for, else the issuer itself."""
        return self.on_behalf_of or self.issuer


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
         valid_for: float = 300.0, now: float | None = None, id: str | None = None, v: int = VERSION,
         kind: str = "command", on_behalf_of: str | None = None) -> dict:
    """An unsigned envelope (issuer side): v1 command by default, ``v=2`` for any kind."""
    if v == 1 and (kind != "command" or on_behalf_of is not None):
        raise ValueError("a v1 envelope is a command without on_behalf_of; use v=2")
    if v not in (1, 2) or kind not in KINDS:
        raise ValueError(f"v must be 1 or 2 and kind one of {', '.join(KINDS)}")
    now = time.time() if now is None else now
    env = {"v": v, "id": id or secrets.token_hex(8), "issuer": issuer, "site": site, "gateway": gateway,
           "issued_at": round(now, 3), "expires_at": round(now + valid_for, 3), "target": target, "action": action,
           "params": params or {}}
    if v == 2:
        env["kind"] = kind
        if on_behalf_of is not None:
            env["on_behalf_of"] = on_behalf_of
    return env


# -- parsing --------------------------------------------------------------------------------
def peek(payload: bytes) -> dict:
    """What can be said about a payload even when it is rejected (id, issuer, action, target, kind)."""
    if len(payload) > limits.CONFIG.max_bytes:
        return {}  # never parse what no kind allows
    try:
        obj = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError):
        return {}
    if not isinstance(obj, dict):
        return {}
    out = {}
    for k in ("id", "issuer", "action", "target", "kind", "on_behalf_of"):
        v = obj.get(k)
        if isinstance(v, str) and len(v) <= 128:
            out[k] = v
    return out


def _number(obj: dict, key: str) -> float:
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise Malformed(f"{key} must be a number of seconds since the epoch", "bad_field")
    return float(v)


def _text(obj: dict, key: str, pattern: re.Pattern | None = None, max_len: int = 128) -> str:
    v = obj[key]
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise Malformed(f"{key} must be a non-empty string of at most {max_len} characters", "bad_field")
    if pattern is not None and not pattern.match(v):
        raise Malformed(f"{key} {v!r} has characters that are not allowed", "bad_field")
    return v


def _version(obj: dict, kind: str) -> int:
    v = obj.get("v", 1)
    if isinstance(v, bool) or v not in (1, 2):
        raise Malformed(f"v must be 1 or 2 (got {v!r})", "bad_version")
    if v == 1 and kind != "command":
        raise Malformed(f"a {kind} must be a signed v2 envelope (v1 exists only for commands)", "bad_version")
    return v


def _check_fields(obj: dict, v: int, kind: str) -> None:
    fields, required = (FIELDS_V1, REQUIRED_V1) if v == 1 else (FIELDS, REQUIRED)
    missing = sorted(required - obj.keys())
    if missing:
        raise Malformed(f"missing {', '.join(missing)}", "missing_field")
    extra = sorted(obj.keys() - fields)
    if extra:
        raise Malformed(f"unknown field(s) {', '.join(extra)}", "unknown_field")
    if v == 2 and obj["kind"] != kind:
        raise Malformed(f"kind {str(obj['kind'])[:32]!r} sent where a {kind} is expected (…/{KINDS[kind]})", "wrong_kind")
    params = obj.get("params", {})
    if not isinstance(params, dict) or len(params) > MAX_PARAMS:
        raise Malformed(f"params must be an object of at most {MAX_PARAMS} keys", "bad_field")


def _signature(obj: dict) -> bytes:
    sig_text = obj["signature"]
    if not isinstance(sig_text, str):
        raise Malformed("signature must be base64 text", "bad_signature_format")
    try:
        signature = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed("signature is not valid base64", "bad_signature_format") from None
    if len(signature) != 64:
        raise Malformed(f"signature must be 64 bytes (got {len(signature)})", "bad_signature_format")
    return signature


def parse(payload: bytes, max_bytes: int | None = None, *, kind: str = "command") -> Envelope:
    """Payload -> Envelope of ``kind``; raises Malformed (with a ``reason``), or ``Unsigned`` when it has no signature.

    ``max_bytes`` replaces the kind's byte limit (docs/protocol.md#limits); every other limit stays.
    """
    obj = limits.parse(payload, _LIMITS[kind], max_bytes)
    if "signature" not in obj or obj["signature"] in (None, ""):
        raise Unsigned("no signature")
    v = _version(obj, kind)
    _check_fields(obj, v, kind)
    signature = _signature(obj)
    on_behalf_of = _text(obj, "on_behalf_of", PERSON_RE) if "on_behalf_of" in obj else None
    return Envelope(
        id=_text(obj, "id", ID_RE), issuer=_text(obj, "issuer", ID_RE, 64), site=_text(obj, "site", max_len=64),
        gateway=_text(obj, "gateway", max_len=64), issued_at=_number(obj, "issued_at"),
        expires_at=_number(obj, "expires_at"), target=_text(obj, "target", TARGET_RE, 64),
        action=_text(obj, "action", max_len=32), params=obj.get("params", {}), signature=signature,
        signed=canonical(obj), v=v, kind=kind, on_behalf_of=on_behalf_of,
    )


def legacy_ack(payload: bytes) -> dict | None:
    """``{"alert", "by"}`` of a v1 unsigned ack (``{"alert":…,"by":…}`` without a signature), else None.

    The gateway answers one with ``alert.ack_rejected``, reason ``unsigned_ack`` and
    :data:`core.protocol.reasons.UNSIGNED_ACK_DETAIL`, so the sender learns what to do.
    """
    try:
        obj = limits.parse(payload, limits.ACK)
    except Malformed:
        return None
    if "signature" in obj or "kind" in obj or obj.get("v", 1) != 1 or "alert" not in obj or "by" not in obj:
        return None
    return {k: obj[k][:64] if isinstance(obj[k], str) else "" for k in ("alert", "by")}
