"""The remote valve actions: ``irrigate``, ``close``, ``close_all`` and ``resume_programs``.

Each checks its parameters and what may block it -- the valve's interlocks (named,
with the reading and its unit), a valve failing to close, an active flow
interlock, its manifold's capacity -- and answers ``rejected``, or ``accepted``.
The device work then runs as a job, so a valve that takes ``confirm_within`` to
confirm never holds up the command queue: the job answers ``executed`` (with the
state read back and ``confirmed``: whether feedback, not just the coil, agreed)
or ``failed``.  An opening beyond a manifold's capacity answers ``queued`` and
opens when a slot frees (capacity.py).  ``close_all`` closes every valve whoever
opened it and pauses the programs; the pause is in force before its first
``await``, so no program starts behind it.  Times in the words carry date and zone.
"""

from __future__ import annotations

import asyncio
import math

from core.timefmt import fmt_time
from gateway.commands.capacity import Waiting
from gateway.commands.intake import unknown_params

MAX_HOLD = 7 * 86400


def _seconds(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


class ValveCommands:
    def __init__(self, valves, programs, capacity, *, clock, audit, jobs, close_all_hold: float, tz=None):
        self.valves = valves
        self.programs = programs
        self.capacity = capacity
        self.clock = clock
        self.audit = audit
        self.jobs = jobs
        self.close_all_hold = close_all_hold
        self.tz = tz
        capacity.start = self._start_waiting
        capacity.expired = self._fail_waiting

    # ---------------------------------------------------------------- irrigate
    async def irrigate(self, env, info, v) -> None:
        if (problem := unknown_params(env, {"duration_s"})) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        if "duration_s" not in env.params or env.params["duration_s"] is None:
            return await self.audit.reject(info, "missing_duration", "irrigate needs params.duration_s (seconds)")
        d = env.params["duration_s"]
        if not _seconds(d) or d <= 0:
            return await self.audit.reject(info, "invalid_duration", f"duration_s must be a positive number of seconds (got {d!r})")
        if d > v.cfg.max_run:
            return await self.audit.reject(info, "duration_exceeds_max",
                                           f"{d:g} s is longer than {v.id}'s max_run of {v.cfg.max_run:g} s", max_run_s=v.cfg.max_run)
        if (block := self.valves.blocked(v)) is not None:
            return await self.audit.reject(info, "interlock", block[1], interlock=block[0])
        m = self.capacity.full(v)
        if m is not None and m.cfg.when_full == "refuse":
            return await self.audit.reject(info, "capacity", f"{m.words_full()}; {v.id} is not opened (when_full: refuse)",
                                           manifold=m.id)
        await self.audit.accepted(info)
        if m is None:
            return self._open_in_background(v, float(d), env, info)
        until = self.clock.time() + m.cfg.max_wait
        replaced = self.capacity.enqueue(m, Waiting(v, float(d), env, info, until))
        if replaced is not None:
            self._fail_waiting(replaced, "cancelled", f"replaced by command {env.id} before a slot on {m.id} freed")
        self.audit.counters["queued"] += 1
        await self.audit.result(info, "queued", manifold=m.id, queued_until=round(until, 3),
                                detail=f"{m.words_full()}: {v.id} opens when one of them closes, or fails at "
                                       f"{fmt_time(until, self.tz)}")

    def _open_in_background(self, v, duration: float, env, info: dict) -> None:
        v.busy = True  # the slot and the valve are taken from now on (programs and capacity see it)
        self.jobs.spawn(self._open(v, duration, env, info))

    async def _open(self, v, duration: float, env, info: dict) -> None:
        ok, state, reason, detail = await self.valves.open(v, duration, "remote", issuer=env.issuer, command=env.id)
        confirmed = v.cfg.feedback is not None
        if not ok:
            return await self.audit.finish(info, "failed", reason=reason, detail=detail, state=state, confirmed=False)
        closes_at = v.cycle["ends_at"] if v.cycle else None
        await self.audit.finish(info, "executed", state=state, duration_s=duration, confirmed=confirmed,
                                closes_at=round(closes_at, 3) if closes_at else None, device_timer=bool(v.cfg.pulse_point),
                                detail=f"{v.id} open for {duration:g} s"
                                       + (f", closes at {fmt_time(closes_at, self.tz)}" if closes_at else "")
                                       + ("" if confirmed else " (not confirmed: no feedback configured, the coil reads open)"))

    def _start_waiting(self, item: Waiting) -> None:
        """A slot freed for a queued opening (sync, from the valve arbiter): open it, unless something blocks it now."""
        if (block := self.valves.blocked(item.valve)) is not None:
            return self._fail_waiting(item, "interlock", block[1])
        self._open_in_background(item.valve, item.duration, item.env, item.info)

    def _fail_waiting(self, item: Waiting, reason: str, detail: str) -> None:
        self.jobs.spawn(self.audit.finish(item.info, "failed", reason=reason, detail=detail))

    # ---------------------------------------------------------------- close
    async def close(self, env, info, v) -> None:
        if (problem := unknown_params(env, set())) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        await self.audit.accepted(info)
        if (waiting := self.capacity.cancel(v)) is not None:
            self._fail_waiting(waiting, "cancelled", f"cancelled by close {env.id} from {env.issuer} before it opened")
        self.jobs.spawn(self._close(env, info, v))

    async def _close(self, env, info, v) -> None:
        state, error = await self.valves.close(v, "command", by=env.issuer, command=env.id, retry=False)
        confirmed = v.cfg.feedback is not None
        if error is None:
            await self.audit.finish(info, "executed", state=state, confirmed=confirmed)
        else:
            coil_closed = bool(state) and state.get(v.cfg.point) is False  # then only the feedback disagreed
            await self.audit.finish(info, "failed", reason="not_confirmed" if coil_closed else "device_error",
                                    detail=error, state=state, confirmed=False)

    async def close_all(self, env, info, _target) -> None:
        if (problem := unknown_params(env, {"hold_s"})) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        hold = env.params.get("hold_s", self.close_all_hold)
        if not _seconds(hold) or not 0 <= hold <= MAX_HOLD:
            return await self.audit.reject(info, "invalid_params", f"hold_s must be 0..604800 seconds (got {hold!r})")
        # the hold is in force before the first await: no program starts from here on
        if self.programs.by_id:
            self.programs.set_hold(self.clock.time() + hold if hold > 0 else None)
        for v in self.valves.by_id.values():
            if (waiting := self.capacity.cancel(v)) is not None:
                self._fail_waiting(waiting, "cancelled", f"cancelled by close_all {env.id} from {env.issuer} before it opened")
        await self.audit.accepted(info)
        self.jobs.spawn(self._close_all(env, info))

    async def _close_all(self, env, info) -> None:
        valves = list(self.valves.by_id.values())
        results = await asyncio.gather(*(self.valves.close(v, "close_all", by=env.issuer, command=env.id, retry=False)
                                         for v in valves))
        state = {v.id: s for v, (s, _e) in zip(valves, results)}
        errors = {v.id: e for v, (_s, e) in zip(valves, results) if e is not None}
        until = self.programs.hold_until if self.programs.by_id else None
        extra = {"programs_paused_until": round(until, 3) if until else None,
                 "confirmed": bool(valves) and all(v.cfg.feedback is not None for v in valves)}
        if errors:
            return await self.audit.finish(info, "failed", reason="device_error", state=state,
                                           detail="; ".join(f"{k}: {e}" for k, e in errors.items()), **extra)
        await self.audit.finish(info, "executed", state=state, detail=f"closed every valve ({len(valves)}); "
                                + self._programs_words(until), **extra)

    def _programs_words(self, until: float | None) -> str:
        if not self.programs.by_id:
            return "this site has no automatic programs, so nothing is paused"
        if until is None:
            return "automatic programs keep running (hold_s: 0)"
        return f"automatic programs paused until {fmt_time(until, self.tz)}"

    async def resume_programs(self, env, info, _target) -> None:
        if (problem := unknown_params(env, set())) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        await self.audit.accepted(info)
        self.programs.set_hold(None)
        await self.audit.finish(info, "executed", state={"programs_paused_until": None},
                                detail="automatic programs run again" if self.programs.by_id else
                                "this site has no automatic programs")
