"""Whom a gateway takes a config from: an enabled issuer with the ``configure`` permission, signing a fresh envelope.

The checks run in the order of docs/protocol.md#signed-envelopes -- the
``config`` limits (size before parsing), a signature at all, the shape, the
issuer known and allowed to configure, the signature, site and gateway, the
times -- then the action and the params.  The daemon runs them on every message
on ``…/config``, and the privileged applier runs them again on what the daemon
handed over (it trusts nothing in that folder), with the keys of the config
that is running *now*: a pushed config can only be signed by an issuer the
current one names.  Replays are the caller's (it keeps the ids).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from core.protocol import limits
from core.protocol.envelope import Envelope, KeyError_, Malformed, Unsigned, load_public_key, parse, peek, verify
from gateway.commands.config import resolve_key_text
from gateway.config.site import LoadedConfig
from gateway.remote_config.bundle import Bundle, Refused, read_params

log = logging.getLogger("canopy.remote_config")

DEFAULT_SKEW = 30.0  # when the site has no `commands:` section to say otherwise
DEFAULT_MAX_VALIDITY = 3600.0
# Answered only within a budget (an attacker can send these at will): before the signature, or authentic but stale.
UNVERIFIED = frozenset({"malformed", "unsigned", "unauthorised_issuer", "bad_signature"})
STALE = frozenset({"wrong_gateway", "expired", "future_dated", "validity_too_long", "replayed"})


def may_configure(issuer) -> bool:
    """The ``configure`` permission (``IssuerConfig.configure``; read with getattr until every config model has it)."""
    return bool(getattr(issuer, "enabled", True)) and bool(getattr(issuer, "configure", False))


@dataclass(frozen=True)
class Verdict:
    """What the checks found: ``reason`` None means a fresh, authentic config bundle (``env``, ``bundle``)."""

    info: dict  # id, issuer, on_behalf_of: what the answer names
    env: Envelope | None = None
    bundle: Bundle | None = None
    reason: str | None = None
    problem: str | None = None
    detail: str = ""

    @property
    def verified(self) -> bool:
        return self.env is not None

    @property
    def budgeted(self) -> bool:
        """Answered only within a budget: unverified, or authentic but stale (perhaps captured and sent again)."""
        return self.reason in UNVERIFIED or self.reason in STALE


@dataclass(frozen=True)
class Trust:
    site: str
    gateway: str
    keys: dict = field(default_factory=dict)  # issuer -> Ed25519 public key, configure issuers only
    skew: float = DEFAULT_SKEW
    max_validity: float = DEFAULT_MAX_VALIDITY

    @classmethod
    def of(cls, cfg: LoadedConfig) -> "Trust":
        """The configure issuers of a validated config (a key file changed since it was loaded is logged and skipped)."""
        cc = cfg.site.commands
        keys = {}
        for name, issuer in (cc.issuers.items() if cc is not None else ()):
            if not may_configure(issuer):
                continue
            try:
                keys[name] = load_public_key(resolve_key_text(issuer, cfg.base_dir))
            except (OSError, UnicodeDecodeError, KeyError_) as exc:
                log.error("issuer %s: key unusable (%s); their configs will be refused", name, exc)
        skew, validity = (cc.clock_skew, cc.max_validity) if cc is not None else (DEFAULT_SKEW, DEFAULT_MAX_VALIDITY)
        return cls(cfg.site.site, cfg.site.gateway, keys, skew, validity)

    def check(self, payload: bytes, now: float, *, grace: float = 0.0) -> Verdict:
        """Every check of one message; never raises.  ``grace``: seconds an expired envelope is still taken (applier)."""
        seen = peek(payload)
        info = {k: seen[k] for k in ("id", "issuer", "on_behalf_of") if k in seen}
        try:
            env = parse(payload, kind="config")
        except Unsigned as exc:
            return Verdict(info, reason="unsigned", detail=str(exc))
        except Malformed as exc:
            return Verdict(info, reason="malformed", problem=exc.reason, detail=str(exc))
        info = {"id": env.id, "issuer": env.issuer, **({"on_behalf_of": env.on_behalf_of} if env.on_behalf_of else {})}
        key = self.keys.get(env.issuer)
        if key is None:
            return Verdict(info, reason="unauthorised_issuer",
                           detail=f"issuer {env.issuer!r} may not configure this gateway (no enabled issuer with `configure`)")
        if not verify(env, key):
            return Verdict(info, reason="bad_signature", detail="the signature does not match the envelope and the issuer's key")
        if (why := self._stale(env, now, grace)) is not None:
            return Verdict(info, env, reason=why[0], detail=why[1])
        if env.action != "apply" or env.target != "*":
            return Verdict(info, env, reason="unknown_action", detail="a config envelope is action `apply`, target `*`")
        try:
            return Verdict(info, env, bundle=read_params(env.params))
        except Refused as exc:
            return Verdict(info, env, reason=exc.reason, detail=exc.detail)

    def _stale(self, env: Envelope, now: float, grace: float) -> tuple[str, str] | None:
        if env.site != self.site or env.gateway != self.gateway:
            return "wrong_gateway", f"addressed to {env.site}/{env.gateway}, this is {self.site}/{self.gateway}"
        if env.expires_at <= env.issued_at:
            return "malformed", "expires_at must be after issued_at"
        if env.expires_at - env.issued_at > self.max_validity:
            return "validity_too_long", f"valid for {env.expires_at - env.issued_at:.0f} s; at most {self.max_validity:.0f} s"
        if env.issued_at > now + self.skew:
            return "future_dated", f"issued {env.issued_at - now:.1f} s in the future (skew allowed {self.skew:g} s)"
        if now > env.expires_at + grace:
            return "expired", f"expired {now - env.expires_at:.1f} s ago"
        return None


def size_ok(payload: bytes) -> bool:
    """Cheap first look, before a message takes a queue slot: no bigger than a config may be."""
    return len(payload) <= limits.CONFIG.max_bytes
