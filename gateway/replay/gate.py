"""Who may ask for a replay, and the checks a message on ``…/replay`` passes before it takes a queue slot.

Anyone who can publish on the topic can send ten thousand messages a second,
so the checks run synchronously in the topic handler, cheapest first, in the
order of docs/protocol.md#signed-envelopes, and only an authentic envelope of
an issuer allowed to replay is queued:

1. the bounded parser with the ``replay`` limits (2 KiB, ...) -> junk ``unparseable``
   (reason: the problem code); no signature at all -> ``unsigned``;
2. the issuer known, enabled, allowed to replay (``may_replay``), with a usable key
   -> ``unknown_issuer`` (``unknown``, ``disabled``, ``not_allowed``, ``no_key``);
3. ``(issuer, id)`` among the ids already verified -> ``replayed`` (no signature check);
4. the issuer's verification budget (the commands' ``VERIFY_PER_S``) -> ``rate_limited``;
5. the envelope's shape -> ``unparseable``; the signature -> ``bad_signature``.

Junk gets no answer and no record: it is counted by kind and reason, as on ``…/cmd``
(gateway/commands/junk.py).  ``stale`` then judges an authentic envelope on place
and time; the service answers those within a budget.  Ids are remembered in memory
only: a replay request acts on nothing, so one captured and sent again after a
restart costs a paced re-send of records the broker already had, nothing more.
"""

from __future__ import annotations

import logging

from core.protocol import limits
from core.protocol.envelope import Envelope, KeyError_, Malformed, load_public_key, parse, verify
from gateway.commands.gate import VERIFY_BURST, VERIFY_PER_S, Junk, TokenBucket
from gateway.commands.targets import resolve_key_text

log = logging.getLogger("canopy.replay")

MAX_RECENT = 1024  # verified (issuer, id) pairs kept for the cheap duplicate check
DEFAULT_SKEW = 30.0  # when the site has no `commands:` section to say otherwise
DEFAULT_MAX_VALIDITY = 3600.0


def may_replay(issuer) -> bool:
    """The ``replay`` permission: ``IssuerConfig.replay`` once the model has the field; until then any enabled issuer.

    The interim is safe because a replay acts on nothing and reveals nothing new: it
    re-sends, paced, records the broker already had, on the topics they first went to.
    """
    if not getattr(issuer, "enabled", True):
        return False
    allowed = getattr(issuer, "replay", None)
    return True if allowed is None else bool(allowed)


def issuer_keys(cc, base_dir: str) -> dict:
    """issuer name -> Ed25519 public key, for the issuers of a ``commands:`` section that may replay."""
    keys = {}
    for name, issuer in (cc.issuers.items() if cc is not None else ()):
        if not may_replay(issuer):
            continue
        try:
            keys[name] = load_public_key(resolve_key_text(issuer, base_dir))
        except (OSError, UnicodeDecodeError, KeyError_) as exc:
            log.error("issuer %s: key unusable (%s); their replay requests will be refused", name, exc)
    return keys


class ReplayGate:
    """The checks above, for one site; ``admit`` never raises for any payload."""

    def __init__(self, site: str, gateway: str, cc, keys: dict, clock):
        self.site = site
        self.gateway = gateway
        self.issuers = cc.issuers if cc is not None else {}
        self.keys = keys
        self.clock = clock
        self.skew, self.max_validity = (cc.clock_skew, cc.max_validity) if cc is not None else (DEFAULT_SKEW,
                                                                                               DEFAULT_MAX_VALIDITY)
        self.buckets: dict[str, TokenBucket] = {}
        self.recent: dict[tuple[str, str], float] = {}  # verified (issuer, id) -> until (wall clock)

    def admit(self, payload: bytes) -> Envelope | Junk:
        """A verified envelope of an issuer allowed to replay, or why it is junk."""
        try:
            obj = limits.parse(payload, limits.REPLAY)
        except Malformed as exc:
            return Junk("unparseable", exc.reason, str(exc))
        if obj.get("signature") in (None, ""):
            return Junk("unsigned", "unsigned", "no signature")
        name = obj.get("issuer")
        issuer = self.issuers.get(name) if isinstance(name, str) else None
        if issuer is None:
            return Junk("unknown_issuer", "unknown", f"issuer {str(name)[:64]!r} is not known to this gateway")
        if not getattr(issuer, "enabled", True):
            return Junk("unknown_issuer", "disabled", f"issuer {name!r} is disabled", name)
        key = self.keys.get(name)
        if key is None:
            why = "no_key" if may_replay(issuer) else "not_allowed"
            return Junk("unknown_issuer", why, f"issuer {name!r} may not ask for replays ({why})", name)
        now, env_id = self.clock.time(), obj.get("id")
        if isinstance(env_id, str) and self.recent.get((name, env_id), 0.0) >= now:
            return Junk("replayed", "replayed", f"replay request {env_id} from {name} was already received", name)
        if not self._budget(name).take(self.clock.monotonic()):
            return Junk("rate_limited", "rate_limited", f"more than {VERIFY_PER_S:g} requests a second from {name}", name)
        try:
            env = parse(payload, kind="replay")
        except Malformed as exc:
            return Junk("unparseable", exc.reason, str(exc))
        if not verify(env, key):
            return Junk("bad_signature", "bad_signature", "the signature does not match the envelope and the issuer's key", name)
        self._remember(env, now)
        return env

    def stale(self, env: Envelope, now: float) -> tuple[str, str] | None:
        """(reason, detail) when an authentic envelope is not for here and now; None when it is."""
        if env.site != self.site or env.gateway != self.gateway:
            return "wrong_gateway", f"addressed to {env.site}/{env.gateway}, this is {self.site}/{self.gateway}"
        if env.expires_at <= env.issued_at:
            return "malformed", "expires_at must be after issued_at"
        if env.expires_at - env.issued_at > self.max_validity:
            return "validity_too_long", f"valid for {env.expires_at - env.issued_at:.0f} s; at most {self.max_validity:.0f} s"
        if env.issued_at > now + self.skew:
            return "future_dated", f"issued {env.issued_at - now:.1f} s in the future (skew allowed {self.skew:g} s)"
        if now > env.expires_at:
            return "expired", f"expired {now - env.expires_at:.1f} s ago"
        return None

    def _budget(self, issuer: str) -> TokenBucket:
        bucket = self.buckets.get(issuer)
        if bucket is None:  # one per configured issuer: bounded by the config
            bucket = self.buckets[issuer] = TokenBucket(VERIFY_PER_S, VERIFY_BURST, VERIFY_BURST, self.clock.monotonic())
        return bucket

    def _remember(self, env: Envelope, now: float) -> None:
        recent = self.recent
        recent[(env.issuer, env.id)] = env.expires_at + self.skew
        if len(recent) > MAX_RECENT:
            for k in [k for k, until in recent.items() if until < now]:
                del recent[k]
            while len(recent) > MAX_RECENT:
                del recent[next(iter(recent))]
