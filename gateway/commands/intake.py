"""Command intake: the gate, a queue of verified commands, then freshness, authorisation and the action.

``on_command`` (sync, for every message on ``…/cmd``) runs the gate (gate.py): junk --
unparseable, unknown issuer, replayed, rate-limited, bad signature -- is counted
(junk.py) and goes no further.  A verified envelope of a known issuer takes a slot of
the queue (``commands.queue``; beyond it the command is dropped and counted), which junk
therefore cannot fill.  One worker takes them one at a time: the envelope must be
addressed to this gateway and within its validity (with ``clock_skew``), its id must be
new (on disk before the command runs), and the issuer must be allowed that action on
that target.  Each of these is answered with a reason (docs/commands.md), audited, and
touches no device.  Answers to authentic but stale envelopes (expired, another
gateway's...: perhaps captured and sent again) have a budget per issuer; beyond it
they are junk too (kind ``stale``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from core.protocol.envelope import Envelope, load_public_key
from gateway.commands.audit import describe
from gateway.commands.config import CommandsConfig
from gateway.commands.targets import (ACTIONS, CONTROL_ACTIONS, LOCK_ACTIONS, SITE_ACTIONS, VALVE_ACTIONS, resolve_key_text,
                                      target_allowed)
from gateway.commands.gate import Gate, Junk, TokenBucket
from gateway.commands.junk import JunkLedger

log = logging.getLogger("canopy.commands")

PURGE_INTERVAL = 3600.0  # forget expired command ids this often
STALE_ANSWERS_BURST = 5.0  # answers to stale envelopes per issuer ...
STALE_ANSWERS_PER_S = 1 / 60  # ... then one a minute

Handler = Callable[[Envelope, dict, object], Awaitable[None]]  # (envelope, info, target or None)


class Rejected(Exception):
    """A command refused before it runs: ``reason`` (a REJECT_REASONS key), ``detail`` for people, extra fields."""

    def __init__(self, reason: str, detail: str, **extra):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.extra = extra


def unknown_params(env, allowed: set[str]) -> str | None:
    """What is wrong with ``env.params`` given the names the action takes, or None."""
    extra = sorted(set(env.params) - allowed)
    if extra:
        takes = f"; allowed: {', '.join(sorted(allowed))}" if allowed else "; this action takes none"
        return f"unknown parameter(s) {', '.join(extra)}{takes}"
    return None


def load_keys(cc: CommandsConfig, base_dir: str) -> dict:
    keys = {}
    for name, issuer in cc.issuers.items():
        try:
            keys[name] = load_public_key(resolve_key_text(issuer, base_dir))
        except Exception as exc:  # validated at load; a file changed since is refused, not a crash
            log.error("issuer %s: key unusable (%s); their commands will be refused", name, exc)
    return keys


class Intake:
    def __init__(self, cc: CommandsConfig, site: str, gateway: str, keys: dict, *, clock, store, jobs, audit,
                 resolve: Callable[[str, str], object], locations: dict, handlers: dict[str, Handler]):
        self.cc = cc
        self.site = site
        self.gateway = gateway
        self.keys = keys
        self.clock = clock
        self.store = store
        self.jobs = jobs
        self.audit = audit
        self.resolve = resolve
        self.locations = locations
        self.handlers = handlers
        self.counters = audit.counters
        self.gate = Gate(cc, keys, clock)
        self.junk = JunkLedger(clock, jobs, audit, self.counters)
        self.stale_answers: dict[str, TokenBucket] = {}
        self.inbox: deque[Envelope] = deque()
        self._ready = asyncio.Event()
        self.worker_busy = False
        self.current: asyncio.Task | None = None

    def on_command(self, topic: str, payload: bytes) -> None:
        self.counters["received"] += 1
        verdict = self.gate.admit(payload)
        if isinstance(verdict, Junk):
            self.junk.count(verdict, payload)
            return
        if len(self.inbox) >= self.cc.queue:
            self.gate.forget(verdict)
            self.counters["dropped"] += 1
            self.audit.ratelog("dropped", "commands: queue full (%d verified commands waiting); command %s from %s dropped "
                               "unanswered", len(self.inbox), verdict.id, verdict.issuer)
            return
        self.inbox.append(verdict)
        self._ready.set()

    def idle(self) -> bool:
        return not self.inbox and not self.worker_busy

    async def run(self) -> None:
        """The worker: one command at a time, each in its own task (so shutdown can cancel it)."""
        housekeeping = asyncio.create_task(self._housekeeping(), name="commands-housekeeping")
        try:
            while True:
                while not self.inbox:
                    self._ready.clear()
                    await self._ready.wait()
                env = self.inbox.popleft()
                self.worker_busy = True
                self.current = asyncio.create_task(self.process(env), name="commands-current")
                try:
                    await self.current
                except asyncio.CancelledError:
                    if self.jobs.stopping:
                        return
                    raise
                except Exception:
                    self.counters["worker_errors"] += 1
                    log.exception("commands: handling a command failed")
                finally:
                    self.current = None
                    self.worker_busy = False
        finally:
            housekeeping.cancel()

    async def _housekeeping(self) -> None:
        while True:
            await self.clock.sleep(PURGE_INTERVAL)
            try:
                await self.store.purge(self.clock.time())
            except Exception as exc:
                log.warning("commands: purging old ids failed: %s", exc)

    async def process(self, env: Envelope) -> None:
        """A verified envelope: where and when, new, allowed -- then its action."""
        info = {"id": env.id, "issuer": env.issuer, "action": env.action, "target": env.target}
        if env.on_behalf_of is not None:
            info["on_behalf_of"] = env.on_behalf_of
        try:
            self._check_validity(env, self.clock.time())
        except Rejected as r:
            return await self._stale(env, info, r)
        if not await self._fresh(env, info):
            return
        try:
            target = self._authorise(env, info)
        except Rejected as r:
            return await self.audit.reject(info, r.reason, r.detail, **r.extra)
        await self.handlers[env.action](env, info, target)

    def _check_validity(self, env: Envelope, now: float) -> None:
        """Addressed to this gateway, and valid now? Raises Rejected."""
        if env.site != self.site or env.gateway != self.gateway:
            raise Rejected("wrong_gateway", f"addressed to {env.site}/{env.gateway}, this is {self.site}/{self.gateway}")
        if env.expires_at <= env.issued_at:
            raise Rejected("malformed", "expires_at must be after issued_at", problem="bad_field")
        if env.expires_at - env.issued_at > self.cc.max_validity:
            raise Rejected("validity_too_long", f"valid for {env.expires_at - env.issued_at:.0f} s; at most {self.cc.max_validity:.0f} s")
        if env.issued_at > now + self.cc.clock_skew:
            raise Rejected("future_dated", f"issued {env.issued_at - now:.1f} s in the future (skew allowed {self.cc.clock_skew:g} s)")
        if now > env.expires_at:
            raise Rejected("expired", f"expired {now - env.expires_at:.1f} s ago")

    async def _stale(self, env: Envelope, info: dict, r: Rejected) -> None:
        """Answer an authentic envelope outside its time or place -- within the issuer's budget; else it is junk."""
        bucket = self.stale_answers.get(env.issuer)
        if bucket is None:
            bucket = self.stale_answers[env.issuer] = TokenBucket(STALE_ANSWERS_PER_S, STALE_ANSWERS_BURST,
                                                                  STALE_ANSWERS_BURST, self.clock.monotonic())
        if bucket.take(self.clock.monotonic()):
            await self.audit.reject(info, r.reason, r.detail, stale=True, **r.extra)
        else:
            self.junk.count(Junk("stale", r.reason, r.detail, env.issuer))

    async def _fresh(self, env: Envelope, info: dict) -> bool:
        """Record the id on disk before anything runs; False once the command has been dealt with."""
        try:
            fresh = await self.store.remember(f"{env.issuer}/{env.id}", env.expires_at + self.cc.clock_skew)
        except Exception as exc:  # without the id on disk a replay could not be refused: do nothing
            log.error("commands: cannot record command id (%s); command not executed", exc)
            await self.audit.finish(info, "failed", reason="store_error", detail=f"cannot record the command id: {describe(exc)}")
            return False
        if not fresh:  # sent again after the gate forgot it (a restart): junk all the same
            self.junk.count(Junk("replayed", "replayed", f"command {env.id} from {env.issuer} was already received", env.issuer))
            return False
        if self.jobs.stopping:
            await self.audit.reject(info, "shutting_down", "the gateway is stopping")
            return False
        return True

    def _authorise(self, env: Envelope, info: dict):
        """The action and its target exist, and this issuer may do it. Returns the target (None for '*')."""
        action = env.action
        if action not in ACTIONS:
            raise Rejected("unknown_action", f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        target = None
        if action in SITE_ACTIONS:
            if env.target != "*":
                raise Rejected("unknown_target", f"{action} takes target '*'")
        else:
            target = self.resolve(env.target, action)
            if target is None:
                what = "control" if action in CONTROL_ACTIONS else "valve or lock"
                raise Rejected("unknown_target", f"no {what} {env.target!r} on this gateway")
            fits = {"valve": VALVE_ACTIONS, "lock": LOCK_ACTIONS, "control": CONTROL_ACTIONS}[target.kind]
            if action not in fits:
                raise Rejected("unsupported_action", f"{action} does not apply to {target.kind} {target.id}")
            info["target"] = target.id
        issuer = self.cc.issuers[env.issuer]
        if action not in issuer.actions:
            raise Rejected("unauthorised_action", f"{env.issuer} may not {action}")
        if target is not None and not self._allowed(issuer, target):
            raise Rejected("unauthorised_target", f"{env.issuer} may not command {target.id}")
        return target

    def _allowed(self, issuer, target) -> bool:
        loc = self.locations.get(target.device_id, {})
        if target_allowed(issuer, target.id, loc):
            return True
        return target.alias is not None and target_allowed(issuer, target.alias, {})
