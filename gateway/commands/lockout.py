"""Lock-out: one requester's repeated refused unlocks of one lock refuse that requester's unlocks of it for a while.

A requester is an issuer, or the person a service signed for through it
(``issuer/on_behalf_of``): a centre signs for many people, and one person's
mistakes must not shut the door on the others.  Only refusals of authenticated,
fresh requests count -- not allowed, wrong parameters -- never junk (unsigned,
forged, unknown issuer: the gate drops it before anything is counted) nor a
stale envelope (expired, another gateway's: perhaps captured and sent again),
so nobody can lock a door out for someone else.

``lockout_after`` such refusals within ``lockout_window`` raise a critical
``lock.lockout`` alarm and refuse that requester's unlocks (and resets) of that
lock for ``lockout_for``; it survives a restart (``lockout:<lock>`` on disk before
the alarm: requester -> until) and ends by its timer or by a ``reset_lockout``
from another requester.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from core.records import event_body
from gateway.commands.intake import unknown_params

log = logging.getLogger("canopy.commands")


def requester(issuer: str | None, on_behalf_of: str | None = None) -> str:
    """Who asked, as lock-outs are kept: ``issuer``, or ``issuer/person`` when a service signed for one."""
    return f"{issuer}/{on_behalf_of}" if on_behalf_of else str(issuer)


def locked_out_until(lk, who: str, now: float) -> float | None:
    """When ``who``'s lock-out on ``lk`` ends, or None when they are not locked out."""
    until = lk.lockouts.get(who)
    return until if until is not None and now < until else None


class Lockout:
    def __init__(self, locks, *, clock, store, jobs, audit, resolve: Callable[[str], object], locations: dict):
        self.locks = locks
        self.clock = clock
        self.store = store
        self.jobs = jobs
        self.audit = audit
        self.resolve = resolve  # a command's target name -> valve or lock (the intake's rule)
        self.locations = locations
        audit.on_rejected = self.count_rejected_unlock

    def restore(self, now: float) -> None:
        """At start-up: lock-outs still in force survive the restart, with their end timers."""
        for lk in self.locks.by_id.values():
            saved = self.store.get(f"lockout:{lk.id}")
            if not isinstance(saved, dict):  # none, or a whole-door lock-out of an older version: not any more
                if saved is not None:
                    log.warning("lock %s: a lock-out for everyone (older version) is lifted: lock-outs now apply "
                                "to one requester", lk.id)
                    self.store.put(f"lockout:{lk.id}", None)
                continue
            lk.lockouts = {who: until for who, until in saved.items() if isinstance(until, (int, float)) and until > now}
            for who, until in lk.lockouts.items():
                self.jobs.schedule(("lockout", f"{lk.id}:{who}"), until - now, self.end, lk, who)
            if len(lk.lockouts) != len(saved):
                self.store.put(f"lockout:{lk.id}", lk.lockouts or None)

    async def count_rejected_unlock(self, info: dict, reason: str) -> None:
        """Called for every answered refusal of a fresh, authenticated command (Audit.on_rejected)."""
        if info.get("action") != "unlock" or reason in ("lockout", "shutting_down"):
            return
        lk = self.resolve(info.get("target") or "")
        if lk is None or lk.kind != "lock":
            return
        who = requester(info.get("issuer"), info.get("on_behalf_of"))
        now, mono = self.clock.time(), self.clock.monotonic()
        if locked_out_until(lk, who, now) is not None:
            return
        attempts = lk.attempts.setdefault(who, deque())
        attempts.append(mono)
        for name in list(lk.attempts):  # forget what fell out of the window (bounded by who failed lately)
            kept = lk.attempts[name]
            while kept and mono - kept[0] > lk.cfg.lockout_window:
                kept.popleft()
            if not kept:
                del lk.attempts[name]
        if len(attempts) < lk.cfg.lockout_after:
            return
        del lk.attempts[who]
        await self._lock_out(lk, who, len(attempts), info, reason, now)

    async def _lock_out(self, lk, who: str, attempts: int, info: dict, reason: str, now: float) -> None:
        until = lk.lockouts[who] = now + lk.cfg.lockout_for
        self.jobs.schedule(("lockout", f"{lk.id}:{who}"), lk.cfg.lockout_for, self.end, lk, who)
        try:
            await self.store.put(f"lockout:{lk.id}", dict(lk.lockouts))
        except Exception as exc:  # in force in memory all the same
            log.error("lock %s: cannot record the lock-out of %s (%s); it ends if the gateway restarts", lk.id, who, exc)
        log.warning("lock %s: %d refused unlock attempts by %s; their unlocks refused until %.0f", lk.id, attempts, who, until)
        await self.audit.emit("alarm", event_body(
            now, "lock.lockout", lock=lk.id, severity="critical", attempts=attempts, window_s=lk.cfg.lockout_window,
            until=round(until, 3), last_issuer=info.get("issuer"), last_reason=reason,
            location=self.locations.get(lk.cfg.device) or None,
            message=f"{attempts} refused unlock attempts on {lk.id} by {who}; their remote unlocks of it are refused "
                    f"for {lk.cfg.lockout_for:g} s (others' are not)"))

    async def end(self, lk, who: str) -> None:
        was = lk.lockouts.pop(who, None)
        if was is None:
            return
        self.store.put(f"lockout:{lk.id}", dict(lk.lockouts) or None)
        await self.audit.emit("event", event_body(self.clock.time(), "lock.lockout_ended", lock=lk.id, by="timer", was_until=was))

    async def cmd_reset_lockout(self, env, info, lk) -> None:
        """Every lock-out of that lock ends -- unless the one asking is locked out of it."""
        if (problem := unknown_params(env, set())) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        now = self.clock.time()
        if (until := locked_out_until(lk, requester(env.issuer, env.on_behalf_of), now)) is not None:
            return await self.audit.reject(info, "lockout", f"you are locked out of {lk.id} for another {until - now:.0f} s; "
                                           "someone else must reset it", lockout_until=round(until, 3))
        await self.audit.accepted(info)
        was = max(lk.lockouts.values(), default=None)
        for who in list(lk.lockouts):
            self.jobs.cancel(("lockout", f"{lk.id}:{who}"))
        lk.lockouts.clear()
        lk.attempts.clear()
        self.store.put(f"lockout:{lk.id}", None)
        await self.audit.emit("event", event_body(now, "lock.lockout_ended", lock=lk.id, by=env.issuer,
                                                  command=env.id, was_until=was))
        await self.audit.finish(info, "executed", state={"lockouts": {}})
