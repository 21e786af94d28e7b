"""Command intake: queue, parse, verify, authorise, then hand the command to its action.

``on_command`` only queues (bounded: beyond ``commands.queue`` a command is
dropped and counted); one worker takes them one at a time.  A command runs
only if it parses, its issuer is known and enabled, its Ed25519 signature
verifies, it is addressed to this gateway, it is within its validity (with
``clock_skew``), its id was not seen before (the id is on disk before the
command runs) and the issuer may do that action on that target.  Anything
else is rejected with a reason (docs/commands.md lists them), answered,
audited, and touches no device.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from core.protocol.envelope import Malformed, Unsigned, load_public_key, parse, peek, verify
from gateway.commands.audit import describe
from gateway.commands.config import ACTIONS, LOCK_ACTIONS, SITE_ACTIONS, VALVE_ACTIONS, CommandsConfig, resolve_key_text, target_allowed

log = logging.getLogger("canopy.commands")

PURGE_INTERVAL = 3600.0  # forget expired command ids this often

Handler = Callable[[object, dict, object], Awaitable[None]]  # (envelope, info, target or None)


class Rejected(Exception):
    """A command refused before it runs: ``reason`` (a REJECT_REASONS key), ``detail`` for people."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


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
                 resolve: Callable[[str], object], locations: dict, handlers: dict[str, Handler]):
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
        self.inbox: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self.worker_busy = False
        self.current: asyncio.Task | None = None

    def on_command(self, topic: str, payload: bytes) -> None:
        self.counters["received"] += 1
        if len(self.inbox) >= self.cc.queue:
            self.counters["dropped"] += 1
            self.audit.ratelog("dropped", "commands: queue full (%d waiting); a command was dropped unanswered", len(self.inbox))
            return
        self.inbox.append(bytes(payload))
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
                payload = self.inbox.popleft()
                self.worker_busy = True
                self.current = asyncio.create_task(self.process(payload), name="commands-current")
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

    async def process(self, payload: bytes) -> None:
        info = peek(payload)
        try:
            env = parse(payload, self.cc.max_payload)
        except Unsigned as exc:
            return await self.audit.reject(info, "unsigned", str(exc))
        except Malformed as exc:
            return await self.audit.reject(info, "malformed", str(exc))
        info = {"id": env.id, "issuer": env.issuer, "action": env.action, "target": env.target}
        try:
            self._authenticate(env, self.clock.time())
            if not await self._fresh(env, info):
                return
            target = self._authorise(env, info)
        except Rejected as r:
            return await self.audit.reject(info, r.reason, r.detail)
        await self.handlers[env.action](env, info, target)

    def _authenticate(self, env, now: float) -> None:
        """Who sent it, for whom, and is it still valid? Raises Rejected."""
        issuer = self.cc.issuers.get(env.issuer)
        key = self.keys.get(env.issuer)
        if issuer is None or not issuer.enabled or key is None:
            raise Rejected("unauthorised_issuer", f"issuer {env.issuer!r} is not known to this gateway"
                           if issuer is None else f"issuer {env.issuer!r} is disabled")
        if not verify(env, key):
            raise Rejected("bad_signature", "the signature does not match the envelope and the issuer's key")
        if env.site != self.site or env.gateway != self.gateway:
            raise Rejected("wrong_gateway", f"addressed to {env.site}/{env.gateway}, this is {self.site}/{self.gateway}")
        if env.expires_at <= env.issued_at:
            raise Rejected("malformed", "expires_at must be after issued_at")
        if env.expires_at - env.issued_at > self.cc.max_validity:
            raise Rejected("validity_too_long", f"valid for {env.expires_at - env.issued_at:.0f} s; at most {self.cc.max_validity:.0f} s")
        if env.issued_at > now + self.cc.clock_skew:
            raise Rejected("future_dated", f"issued {env.issued_at - now:.1f} s in the future (skew allowed {self.cc.clock_skew:g} s)")
        if now > env.expires_at:
            raise Rejected("expired", f"expired {now - env.expires_at:.1f} s ago")

    async def _fresh(self, env, info: dict) -> bool:
        """Record the id on disk before anything runs; False once the command has been answered."""
        try:
            fresh = await self.store.remember(f"{env.issuer}/{env.id}", env.expires_at + self.cc.clock_skew)
        except Exception as exc:  # without the id on disk a replay could not be refused: do nothing
            log.error("commands: cannot record command id (%s); command not executed", exc)
            await self.audit.finish(info, "failed", reason="store_error", detail=f"cannot record the command id: {describe(exc)}")
            return False
        if not fresh:
            raise Rejected("replayed", f"command {env.id} from {env.issuer} was already received")
        if self.jobs.stopping:
            raise Rejected("shutting_down", "the gateway is stopping")
        return True

    def _authorise(self, env, info: dict):
        """The action and its target exist, and this issuer may do it. Returns the target (None for '*')."""
        action = env.action
        if action not in ACTIONS:
            raise Rejected("unknown_action", f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        target = None
        if action in SITE_ACTIONS:
            if env.target != "*":
                raise Rejected("unknown_target", f"{action} takes target '*'")
        else:
            target = self.resolve(env.target)
            if target is None:
                raise Rejected("unknown_target", f"no valve or lock {env.target!r} on this gateway")
            if action not in (VALVE_ACTIONS if target.kind == "valve" else LOCK_ACTIONS):
                raise Rejected("unsupported_action", f"{action} does not apply to {target.kind} {target.id}")
            info["target"] = target.id
        issuer = self.cc.issuers[env.issuer]
        if action not in issuer.actions:
            raise Rejected("unauthorised_action", f"{env.issuer} may not {action}")
        if target is not None and not self._allowed(issuer, target):
            raise Rejected("unauthorised_target", f"{env.issuer} may not command {target.id}")
        return target

    def _allowed(self, issuer, target) -> bool:
        loc = self.locations.get(target.cfg.device, {})
        if target_allowed(issuer, target.id, loc):
            return True
        return target.alias is not None and target_allowed(issuer, target.alias, {})
