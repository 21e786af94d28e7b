"""Acks from ``…/alert/ack``: signed v2 envelopes (kind ``ack``), checked in the order docs/protocol.md gives.

An ack silences a sounder and stops an escalation, so nothing that is not signed
by a key of ``commands.issuers`` with an ``ack`` permission may act.  Checks, in order:
the bounded parser and a signature at all (``unsigned``; the v1 form ``{"alert", "by"}``
is ``unsigned_ack``, answered with what to do), the shape (``malformed``), the issuer
known, enabled and allowed to ack (``unauthorised_issuer``, before any Ed25519 work),
per-issuer verification budget (``rate_limited``), the signature (``bad_signature``),
this gateway (``wrong_gateway``), the times (``malformed``, ``validity_too_long``,
``future_dated``, ``expired``), the id not seen before (``replayed``).

What passes is an :class:`AckRequest`: correctly signed and new, so whatever the engine
then decides (accepted, unknown alert, outside the issuer's scope, already closed) is
recorded durably -- the audit.  What fails is an :class:`AckRefusal`: counted and
answered at most REJECTIONS_PER_MINUTE times a minute, never stored otherwise, so junk
costs no durable record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.protocol import envelope, limits
from core.protocol.envelope import ACTIONS, Malformed, Unsigned
from core.protocol.reasons import UNSIGNED_ACK, UNSIGNED_ACK_DETAIL
from gateway.alerts.ack_ids import SeenAcks
from gateway.commands.config import resolve_key_text

log = logging.getLogger("canopy.alerts")

FIELD_MAX = 64  # alert and by, as answers carry them
NOTE_MAX = 500
VERIFY_PER_S = 20.0  # Ed25519 verifications per issuer and second (a person acks a few times a minute)
VERIFY_BURST = 40.0
DEFAULT_SKEW, DEFAULT_VALIDITY = 30.0, 3600.0  # commands.clock_skew / max_validity when the site has no commands:


@dataclass(frozen=True)
class AckRefusal:
    """Why an ack changes nothing; ``audited`` when it was correctly signed and new (written, never rate-limited)."""

    reason: str
    detail: str
    alert: str = ""
    by: str = ""
    id: str | None = None
    audited: bool = False


@dataclass(frozen=True)
class AckRequest:
    """A correctly signed, new ack: who (``issuer``, for ``by``), which alert, and what to do."""

    id: str
    issuer: str
    by: str
    alert: str
    resolve: bool
    note: str | None
    permission: object  # the issuer's IssuerConfig: ``may_ack(cls, groups)``

    def refused(self, reason: str, detail: str) -> AckRefusal:
        return AckRefusal(reason, detail, self.alert, self.by, self.id, audited=True)


def ack_keys(commands, base_dir: str) -> dict:
    """issuer -> public key, for the issuers that may ack (read once, at start; validated at load)."""
    keys = {}
    for name, issuer in (commands.issuers.items() if commands is not None else ()):
        if not issuer.ack:
            continue
        try:
            keys[name] = envelope.load_public_key(resolve_key_text(issuer, base_dir))
        except Exception as exc:  # the file changed since validation: refuse their acks, do not crash
            log.error("issuer %s: key unusable (%s); their acks will be refused", name, exc)
    return keys


def _junk(reason: str, detail: str, payload: bytes) -> AckRefusal:
    """A refusal before the signature was verified: name what the payload claims, nothing more."""
    info = envelope.peek(payload) if len(payload) <= limits.ACK.max_bytes else {}  # never parse what is too large
    return AckRefusal(reason, detail, info.get("target", "")[:FIELD_MAX],
                      (info.get("on_behalf_of") or info.get("issuer") or "")[:FIELD_MAX], info.get("id"))


class _Budget:
    """A token bucket per issuer: how many signatures we are willing to verify for it."""

    def __init__(self):
        self._tokens: dict[str, tuple[float, float]] = {}  # issuer -> (tokens, at)

    def take(self, issuer: str, now: float) -> bool:
        tokens, at = self._tokens.get(issuer, (VERIFY_BURST, now))
        tokens = min(VERIFY_BURST, tokens + max(0.0, now - at) * VERIFY_PER_S)
        ok = tokens >= 1.0
        self._tokens[issuer] = (tokens - 1.0 if ok else tokens, now)
        return ok


class AckChecker:
    """Payload -> AckRequest or AckRefusal, for one gateway and its issuers."""

    def __init__(self, site: str, gateway: str, commands, keys: dict, seen: SeenAcks):
        """``commands``: the site's CommandsConfig (or None: nobody may ack); ``keys``: issuer -> public key."""
        self.site, self.gateway = site, gateway
        self.issuers = dict(commands.issuers) if commands is not None else {}
        self.skew = commands.clock_skew if commands is not None else DEFAULT_SKEW
        self.max_validity = commands.max_validity if commands is not None else DEFAULT_VALIDITY
        self.keys = keys
        self.seen = seen
        self._budget = _Budget()

    def check(self, payload: bytes, now: float) -> AckRequest | AckRefusal:
        try:
            env = envelope.parse(payload, kind="ack")
        except Unsigned:
            legacy = envelope.legacy_ack(payload)
            if legacy is not None:  # the v1 form: tell the sender what to do
                return AckRefusal(UNSIGNED_ACK, UNSIGNED_ACK_DETAIL, legacy["alert"], legacy["by"])
            return _junk("unsigned", "no signature: acks must be signed v2 envelopes, see docs/protocol.md#acknowledgements", payload)
        except Malformed as exc:
            return _junk("malformed", f"{exc.reason}: {exc}", payload)
        refusal = self._authenticate(env, now, payload)
        if refusal is not None:
            return refusal
        if not self.seen.fresh(f"{env.issuer}/{env.id}", env.expires_at + self.skew, now):
            return _junk("replayed", f"ack {env.id} from {env.issuer} was already received", payload)
        return self._request(env)

    def _authenticate(self, env, now: float, payload: bytes) -> AckRefusal | None:
        """Who signed it, is it for us, is it valid now?  None when it is."""
        issuer = self.issuers.get(env.issuer)
        if issuer is None or not issuer.enabled or not issuer.ack or env.issuer not in self.keys:
            why = ("is not known to this gateway" if issuer is None else "is disabled" if not issuer.enabled
                   else "may not acknowledge alerts (no ack permission)" if not issuer.ack else "has an unusable key")
            return _junk("unauthorised_issuer", f"issuer {env.issuer!r} {why}", payload)
        if not self._budget.take(env.issuer, now):
            return _junk("rate_limited", f"more than {VERIFY_PER_S:g} acks a second from {env.issuer}; not verified", payload)
        if not envelope.verify(env, self.keys[env.issuer]):
            return _junk("bad_signature", "the signature does not match the envelope and the issuer's key", payload)
        if env.site != self.site or env.gateway != self.gateway:
            return _junk("wrong_gateway", f"addressed to {env.site}/{env.gateway}, this is {self.site}/{self.gateway}", payload)
        if env.expires_at <= env.issued_at:
            return _junk("malformed", "expires_at must be after issued_at", payload)
        if env.expires_at - env.issued_at > self.max_validity:
            return _junk("validity_too_long", f"valid for {env.expires_at - env.issued_at:.0f} s; at most {self.max_validity:.0f} s", payload)
        if env.issued_at > now + self.skew:
            return _junk("future_dated", f"issued {env.issued_at - now:.1f} s in the future (skew allowed {self.skew:g} s)", payload)
        if now > env.expires_at:
            return _junk("expired", f"expired {now - env.expires_at:.1f} s ago", payload)
        return None

    def _request(self, env) -> AckRequest | AckRefusal:
        note = env.params.get("note")
        req = AckRequest(env.id, env.issuer, env.acting_for, env.target, env.action == "resolve",
                         note if isinstance(note, str) else None, self.issuers[env.issuer])
        if env.action not in ACTIONS["ack"]:
            return req.refused("unknown_action", f"unknown action {env.action!r}; one of {', '.join(ACTIONS['ack'])}")
        extra = sorted(set(env.params) - {"note"})
        if extra or (note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX)):
            return req.refused("invalid_params", f"params take only note (text up to {NOTE_MAX} characters); got {', '.join(sorted(env.params))}")
        return req
