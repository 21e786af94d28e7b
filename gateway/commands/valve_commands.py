"""The remote valve actions: ``irrigate``, ``close``, ``close_all`` and ``resume_programs``.

Each checks its parameters and the valve's interlocks, answers ``accepted``,
asks the valve arbiter (gateway/commands/valves.py) and answers ``executed``
with the state read back from the device, or ``failed``.  ``close_all`` closes
every valve whoever opened it and pauses the programs; the pause is in force
before its first ``await``, so no program starts behind it.
"""

from __future__ import annotations

import asyncio
import math

from gateway.commands.interlocks import tripped
from gateway.commands.intake import unknown_params

MAX_HOLD = 7 * 86400


def _seconds(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


class ValveCommands:
    def __init__(self, valves, programs, *, clock, audit, readings, close_all_hold: float):
        self.valves = valves
        self.programs = programs
        self.clock = clock
        self.audit = audit
        self.readings = readings
        self.close_all_hold = close_all_hold

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
        if (trip := tripped(v.cfg.interlocks, self.readings, opening=True)) is not None:
            return await self.audit.reject(info, "interlock", trip[1], interlock=trip[0])
        if v.close_failing:
            return await self.audit.reject(info, "interlock", f"{v.id} is failing to close; it will not be opened",
                                           interlock="close_failing")
        await self.audit.accepted(info)
        v.busy = True
        ok, state, reason, detail = await self.valves.open(v, float(d), "remote", issuer=env.issuer, command=env.id)
        if ok:
            await self.audit.finish(info, "executed", state=state, duration_s=float(d),
                                    closes_at=round(v.cycle["ends_at"], 3) if v.cycle else None,
                                    device_timer=bool(v.cfg.pulse_point))
        else:
            await self.audit.finish(info, "failed", reason=reason, detail=detail, state=state)

    async def close(self, env, info, v) -> None:
        if (problem := unknown_params(env, set())) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        await self.audit.accepted(info)
        state, error = await self.valves.close(v, "command", by=env.issuer, command=env.id, retry=False)
        if error is None:
            await self.audit.finish(info, "executed", state=state)
        else:
            await self.audit.finish(info, "failed", reason="device_error", detail=error, state=state)

    async def close_all(self, env, info, _target) -> None:
        if (problem := unknown_params(env, {"hold_s"})) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        hold = env.params.get("hold_s", self.close_all_hold)
        if not _seconds(hold) or not 0 <= hold <= MAX_HOLD:
            return await self.audit.reject(info, "invalid_params", f"hold_s must be 0..604800 seconds (got {hold!r})")
        # the hold is in force before the first await: no program starts from here on
        self.programs.set_hold(self.clock.time() + hold if hold > 0 else None)
        await self.audit.accepted(info)
        valves = list(self.valves.by_id.values())
        results = await asyncio.gather(*(self.valves.close(v, "close_all", by=env.issuer, command=env.id, retry=False)
                                         for v in valves))
        state = {v.id: s for v, (s, _e) in zip(valves, results)}
        errors = {v.id: e for v, (_s, e) in zip(valves, results) if e is not None}
        until = self.programs.hold_until
        extra = {"programs_paused_until": round(until, 3) if until else None}
        if errors:
            await self.audit.finish(info, "failed", reason="device_error", detail="; ".join(f"{k}: {e}" for k, e in errors.items()),
                                    state=state, **extra)
        else:
            await self.audit.finish(info, "executed", state=state, **extra)

    async def resume_programs(self, env, info, _target) -> None:
        if (problem := unknown_params(env, set())) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        await self.audit.accepted(info)
        self.programs.set_hold(None)
        await self.audit.finish(info, "executed", state={"programs_paused_until": None})
