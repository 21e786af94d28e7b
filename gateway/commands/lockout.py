"""Lock-out: repeated rejected unlocks of one lock refuse every remote unlock of it for a while.

``lockout_after`` rejected unlocks (any reason but the lock-out itself or a
shutdown) within ``lockout_window`` raise a critical ``lock.lockout`` alarm
and refuse unlocks for ``lockout_for``; the lock-out survives a restart
(``lockout:<id>`` on disk before the alarm) and ends by its timer or by a
``reset_lockout`` command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.records import event_body
from gateway.commands.intake import unknown_params

log = logging.getLogger("canopy.commands")


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
        """At start-up: a lock-out still in force survives the restart, with its end timer."""
        for lk in self.locks.by_id.values():
            until = self.store.get(f"lockout:{lk.id}")
            if isinstance(until, (int, float)) and until > now:
                lk.lockout_until = until
                self.jobs.schedule(("lockout", lk.id), until - now, self.end, lk)
            else:
                self.store.put(f"lockout:{lk.id}", None)

    async def count_rejected_unlock(self, info: dict, reason: str) -> None:
        if info.get("action") != "unlock" or reason in ("lockout", "shutting_down"):
            return
        lk = self.resolve(info.get("target") or "")
        if lk is None or lk.kind != "lock":
            return
        now, mono = self.clock.time(), self.clock.monotonic()
        if lk.lockout_until is not None and now < lk.lockout_until:
            return
        lk.attempts.append(mono)
        while lk.attempts and mono - lk.attempts[0] > lk.cfg.lockout_window:
            lk.attempts.popleft()
        if len(lk.attempts) < lk.cfg.lockout_after:
            return
        attempts = len(lk.attempts)
        lk.attempts.clear()
        lk.lockout_until = now + lk.cfg.lockout_for
        self.jobs.schedule(("lockout", lk.id), lk.cfg.lockout_for, self.end, lk)
        try:
            await self.store.put(f"lockout:{lk.id}", lk.lockout_until)
        except Exception as exc:  # in force in memory all the same
            log.error("lock %s: cannot record the lock-out (%s); it ends if the gateway restarts", lk.id, exc)
        log.warning("lock %s: %d rejected unlock attempts; unlocks refused until %.0f", lk.id, attempts, lk.lockout_until)
        await self.audit.emit("alarm", event_body(
            now, "lock.lockout", lock=lk.id, severity="critical", attempts=attempts, window_s=lk.cfg.lockout_window,
            until=round(lk.lockout_until, 3), last_issuer=info.get("issuer"), last_reason=reason,
            location=self.locations.get(lk.cfg.device) or None,
            message=f"{attempts} rejected unlock attempts on {lk.id}; remote unlock refused for {lk.cfg.lockout_for:g} s"))

    async def end(self, lk) -> None:
        if lk.lockout_until is None:
            return
        was = lk.lockout_until
        lk.lockout_until = None
        self.store.put(f"lockout:{lk.id}", None)
        await self.audit.emit("event", event_body(self.clock.time(), "lock.lockout_ended", lock=lk.id, by="timer", was_until=was))

    async def cmd_reset_lockout(self, env, info, lk) -> None:
        if (problem := unknown_params(env, set())) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        await self.audit.accepted(info)
        was = lk.lockout_until
        self.jobs.cancel(("lockout", lk.id))
        lk.lockout_until = None
        lk.attempts.clear()
        self.store.put(f"lockout:{lk.id}", None)
        await self.audit.emit("event", event_body(self.clock.time(), "lock.lockout_ended", lock=lk.id, by=env.issuer,
                                                  command=env.id, was_until=was))
        await self.audit.finish(info, "executed", state={"lockout_until": None})
