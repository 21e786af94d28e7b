"""The gate in front of the command queue: junk is recognised before it costs a queue slot.

Anyone who can publish on ``…/cmd`` can send ten thousand messages a second.  So
``Intake.on_command`` runs these checks synchronously, cheapest first, and only a
verified envelope of a known issuer takes a slot of the queue:

1. bytes, then JSON, then one object (``core.protocol.limits``) -> ``unparseable``,
   reason the problem code (``too_large``, ``not_json``, ...);
2. signed, but naming an issuer this gateway does not know (a dict lookup) ->
   ``unknown_issuer``; signed by a known issuer with an ``(issuer, id)`` among the ids
   already verified (memory, bounded) -> ``replayed``: a captured command sent again
   costs no signature check.  Both come before the shape walk of step 3 (a few µs a
   message, a good part of what a flood costs): neither kind is ever answered, so
   which of the two reasons such junk is counted under matters to nobody;
3. the shape: depth, counts and string lengths (``limits.check_shape``) ->
   ``unparseable``; no signature at all -> ``unsigned``;
4. the issuer enabled and with a usable key -> ``unknown_issuer``;
5. the issuer's verification budget (a token bucket, VERIFY_PER_S) -> ``rate_limited``.
   One Ed25519 verify costs ~170 µs here, so 10k forged messages a second would eat
   1.7 cores; with the budget a flood naming a real issuer costs at most VERIFY_PER_S
   verifies a second -- and starves that issuer only (the broker's ACL is what stops
   it: docs/commands.md#junk);
6. the envelope's own shape (``envelope.parse``: fields, types, canonical form) ->
   ``unparseable``; the signature -> ``bad_signature``.

Validity in time and place, the durable replay check and authorisation come after the
queue (intake.py): they concern correctly signed messages, which are answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.protocol import limits
from core.protocol.envelope import Envelope, Malformed, parse, verify

VERIFY_PER_S = 20.0  # signature checks per issuer and second (a person sends a few commands a minute)
VERIFY_BURST = 40.0
MAX_RECENT = 4096  # verified (issuer, id) pairs kept in memory for the cheap replay check

KINDS = ("unparseable", "unsigned", "unknown_issuer", "replayed", "rate_limited", "bad_signature", "stale")


@dataclass(frozen=True, slots=True)
class Junk:
    """A message refused without an answer: counted by ``kind`` and ``reason`` (junk.py)."""

    kind: str  # one of KINDS
    reason: str  # unparseable: the problem code; unknown_issuer: unknown/disabled/no_key; else the kind
    detail: str
    issuer: str | None = None  # the configured issuer it names (never an unknown name: those are unbounded)


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take`` spends one if there is one."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Gate:
    def __init__(self, cc, keys: dict, clock):
        self.cc = cc
        self.keys = keys
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}
        self.recent: dict[tuple[str, str], float] = {}  # verified (issuer, id) -> until (wall clock)

    def admit(self, payload: bytes) -> Envelope | Junk:
        """A verified envelope of a known issuer, or why it is junk. Never raises for any payload.

        Junk must be cheap, so the issuer, the id and the budget are looked up on the bounded
        parser's object; the envelope itself (field checks, canonical form) is only built for a
        message that passed them -- at most VERIFY_PER_S a second per issuer.
        """
        obj = self._load(payload)
        if isinstance(obj, Junk):
            return obj
        signed = obj.get("signature") not in (None, "")
        name = obj.get("issuer")
        issuer = self.cc.issuers.get(name) if isinstance(name, str) else None
        if signed and issuer is None:
            shown = repr(name[:64]) if isinstance(name, str) else f"of type {type(name).__name__}"
            return Junk("unknown_issuer", "unknown", f"issuer {shown} is not known to this gateway")
        now, cmd_id = self.clock.time(), obj.get("id")
        if signed and isinstance(cmd_id, str) and self.recent.get((name, cmd_id), 0.0) >= now:
            return Junk("replayed", "replayed", f"command {cmd_id} from {name} was already received", name)
        try:
            limits.check_shape(obj, limits.COMMAND)
        except Malformed as exc:
            return Junk("unparseable", exc.reason, str(exc))
        if not signed:
            return Junk("unsigned", "unsigned", "no signature")
        if not issuer.enabled:
            return Junk("unknown_issuer", "disabled", f"issuer {name!r} is disabled", name)
        key = self.keys.get(name)
        if key is None:
            return Junk("unknown_issuer", "no_key", f"issuer {name!r} has no usable key", name)
        if not self._budget(name).take(self.clock.monotonic()):
            return Junk("rate_limited", "rate_limited",
                        f"more than {VERIFY_PER_S:g} commands a second from {name}; not verified", name)
        try:
            env = parse(payload, self.cc.max_payload)
        except Malformed as exc:
            return Junk("unparseable", exc.reason, str(exc))
        if not verify(env, key):
            return Junk("bad_signature", "bad_signature",
                        "the signature does not match the envelope and the issuer's key", name)
        self._remember(env, now)
        return env

    def _load(self, payload: bytes) -> dict | Junk:
        """Size, JSON and one object (``limits.load``); the shape walk comes later (step 3)."""
        try:
            return limits.load(payload, limits.COMMAND, self.cc.max_payload)
        except Malformed as exc:
            return Junk("unparseable", exc.reason, str(exc))

    def forget(self, env: Envelope) -> None:
        """An envelope that never reached the worker (queue full): the issuer may send it again."""
        self.recent.pop((env.issuer, env.id), None)

    def _budget(self, issuer: str) -> TokenBucket:
        bucket = self.buckets.get(issuer)
        if bucket is None:  # one per configured issuer, so the dict is bounded by the config
            bucket = self.buckets[issuer] = TokenBucket(VERIFY_PER_S, VERIFY_BURST, VERIFY_BURST, self.clock.monotonic())
        return bucket

    def _remember(self, env: Envelope, now: float) -> None:
        """Keep the id until the command expires (plus skew); the oldest go first beyond MAX_RECENT.

        Forgetting early only costs a verify: the durable check in the worker still refuses the replay.
        """
        recent = self.recent
        recent[(env.issuer, env.id)] = env.expires_at + self.cc.clock_skew
        while len(recent) > MAX_RECENT:
            del recent[next(iter(recent))]
        if len(recent) % 256 == 0:  # now and then: drop what has expired
            for k in [k for k, until in recent.items() if until < now]:
                del recent[k]
