"""Door locks: remote unlock and lock, the relock that always follows, and what the lock reports.

An unlock is on disk (``unlock:<id>``) before it is reported, and a relock is
scheduled at once: by the device's own relock register where it has one (the
gateway checks ``RELOCK_GRACE`` later and relocks itself if needed), else by
the gateway.  A door still open is looked at again every ``RELOCK_RECHECK``
seconds; the bolt goes home when it shuts.  Locks are locked at start-up (an
unlock a restart cut short is reported as relocked) and at shutdown.  Lock
state, tamper and battery changes seen in the readings are events.

A lock's ``state_point`` (the bolt sensor) is its feedback: an unlock counts as
done only when it reads unlocked, and results say ``confirmed: true`` unless the
state point is the coil itself (then it only says what was written).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque

from core.records import event_body
from gateway.commands.audit import describe
from gateway.commands.config import LockConfig
from gateway.commands.interlocks import is_number
from gateway.commands.intake import unknown_params
from gateway.commands.lockout import locked_out_until, requester

log = logging.getLogger("canopy.commands")

RELOCK_GRACE = 2.0  # after a device-side relock was due, the gateway checks (and relocks itself)
RELOCK_RECHECK = 5.0  # door still open: look again this often


class Lock:
    kind = "lock"
    alias = None  # locks have no zone-N name

    def __init__(self, cfg: LockConfig, device, writable_points: set[str]):
        self.cfg = cfg
        self.id = cfg.id
        self.device = device
        self.oplock = asyncio.Lock()
        self.relock_point = cfg.relock_point or ("relock_time" if "relock_time" in writable_points and cfg.relock != "gateway" else None)
        self.relock_by = "device" if self.relock_point and cfg.relock != "gateway" else "gateway"
        self.unlocked: dict | None = None  # our unlock waiting for its relock
        self.attempts: dict[str, deque[float]] = {}  # requester -> monotonic times of refused unlocks (lockout.py)
        self.lockouts: dict[str, float] = {}  # requester -> locked out until (wall clock)
        self.last: dict = {}
        self.battery_low_sent = False
        self.relock_pending_sent = False

    @property
    def device_id(self) -> str:
        return self.cfg.device

    @property
    def confirmed(self) -> bool:
        """Whether the read-back is a sensor (the bolt), not the coil the gateway wrote."""
        return self.cfg.state_point != self.cfg.point


class Locks:
    def __init__(self, configs: list[LockConfig], devices: dict, writable: dict[str, set[str]], *, clock, store, jobs, audit):
        self.clock = clock
        self.store = store
        self.jobs = jobs
        self.audit = audit
        self.by_id: dict[str, Lock] = {c.id: Lock(c, devices.get(c.device), writable.get(c.device, set())) for c in configs}

    # ---------------------------------------------------------------- start-up and shutdown
    async def lock_all_at_start(self, now: float) -> None:
        """Every lock locked; an unlock the restart cut short is reported as relocked."""
        for lk in self.by_id.values():
            pending = self.store.get(f"unlock:{lk.id}")
            state = await self._lock_at_start(lk)
            if pending is None:
                continue
            await self.audit.emit("event", event_body(
                now, "lock.relocked", lock=lk.id, by="gateway", reason="restart", issuer=pending.get("issuer"),
                command=pending.get("command"), locked=None if state is None else state.get(lk.cfg.state_point),
                state=state))
            if state is not None and state.get(lk.cfg.state_point) is True:
                self.store.put(f"unlock:{lk.id}", None)

    async def _lock_at_start(self, lk: Lock) -> dict | None:
        if lk.device is None:
            return None
        try:
            await lk.device.write(lk.cfg.point, False)
            return await self.read(lk)
        except Exception as exc:
            log.error("lock %s: cannot lock at start-up (%s)", lk.id, describe(exc))
            return None

    async def stop_lock(self, lk: Lock) -> bytes | None:
        """Clean shutdown: locked, and the ``lock.relocked`` record of a pending unlock (emitted by the caller)."""
        if lk.device is None:
            return None
        pending = lk.unlocked
        await lk.device.write(lk.cfg.point, False)
        state = await self.read(lk)
        if pending is not None and state.get(lk.cfg.state_point) is True:
            lk.unlocked = None
            self.store.put(f"unlock:{lk.id}", None)
            return event_body(self.clock.time(), "lock.relocked", lock=lk.id, by="gateway", reason="shutdown",
                              issuer=pending.get("issuer"), command=pending.get("command"), locked=True, state=state)
        return None

    # ---------------------------------------------------------------- commands
    async def cmd_unlock(self, env, info, lk: Lock) -> None:
        if (problem := unknown_params(env, set())) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        now = self.clock.time()
        who = requester(env.issuer, env.on_behalf_of)
        if (until := locked_out_until(lk, who, now)) is not None:
            return await self.audit.reject(info, "lockout", f"{who} is locked out of {lk.id} for another {until - now:.0f} s "
                                           "after repeated refused unlock attempts", lockout_until=round(until, 3))
        await self.audit.accepted(info)
        async with lk.oplock:
            try:
                state = await self._unlock(lk)
            except Exception as exc:
                return await self.audit.finish(info, "failed", reason="device_error", detail=describe(exc))
            if state.get(lk.cfg.state_point) is not False:
                try:
                    await lk.device.write(lk.cfg.point, False)
                except Exception:
                    pass
                return await self.audit.finish(info, "failed", reason="readback_mismatch", state=state,
                                               detail=f"{lk.cfg.state_point} reads {state.get(lk.cfg.state_point)!r} after unlocking")
            now = self.clock.time()
            lk.unlocked = {"issuer": env.issuer, "command": env.id, "at": round(now, 3),
                           "relock_at": round(now + lk.cfg.relock_after, 3)}
            lk.relock_pending_sent = False
            delay = lk.cfg.relock_after + (RELOCK_GRACE if lk.relock_by == "device" else 0.0)
            self.jobs.schedule(("relock", lk.id), delay, self.relock, lk, "timer")
            await self._persist_unlock(lk)
            await self.audit.emit("event", event_body(now, "lock.unlocked", lock=lk.id, issuer=env.issuer, command=env.id,
                                                      relock_after_s=lk.cfg.relock_after, relock_by=lk.relock_by, state=state))
        await self.audit.finish(info, "executed", state=state, relock_at=lk.unlocked["relock_at"], relock_by=lk.relock_by,
                                confirmed=lk.confirmed)

    async def _unlock(self, lk: Lock) -> dict:
        if lk.device is None:
            raise RuntimeError(f"device {lk.cfg.device} is not running (disabled?)")
        if lk.relock_by == "device":
            await lk.device.write(lk.relock_point, max(1, math.ceil(lk.cfg.relock_after)))
        await lk.device.write(lk.cfg.point, True)
        return await self.read(lk)

    async def _persist_unlock(self, lk: Lock) -> None:
        """The pending relock on disk, so a restart reports it (the restart locks the door anyway)."""
        try:
            await self.store.put(f"unlock:{lk.id}", lk.unlocked)
        except Exception as exc:
            log.warning("lock %s: cannot record the unlock (%s); the relock goes ahead", lk.id, describe(exc))

    async def cmd_lock(self, env, info, lk: Lock) -> None:
        if (problem := unknown_params(env, set())) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        await self.audit.accepted(info)
        async with lk.oplock:
            self.jobs.cancel(("relock", lk.id))
            try:
                if lk.device is None:
                    raise RuntimeError(f"device {lk.cfg.device} is not running (disabled?)")
                await lk.device.write(lk.cfg.point, False)
                state = await self.read(lk)
            except Exception as exc:
                return await self.audit.finish(info, "failed", reason="device_error", detail=describe(exc))
            locked = state.get(lk.cfg.state_point) is True
            if locked:
                lk.unlocked = None
                self.store.put(f"unlock:{lk.id}", None)
            else:  # the door is open: the bolt goes home when it shuts; keep watching
                self.jobs.schedule(("relock", lk.id), RELOCK_RECHECK, self.relock, lk, "command")
            await self.audit.emit("event", event_body(self.clock.time(), "lock.locked", lock=lk.id, issuer=env.issuer,
                                                      command=env.id, locked=locked, state=state))
        await self.audit.finish(info, "executed", state=state, confirmed=lk.confirmed and locked)

    # ---------------------------------------------------------------- relock
    async def relock(self, lk: Lock, reason: str) -> None:
        async with lk.oplock:
            if lk.device is None:
                return
            by = "device"
            try:
                state = await self.read(lk)
                if state.get(lk.cfg.state_point) is not True:
                    by = "gateway"
                    await lk.device.write(lk.cfg.point, False)
                    state = await self.read(lk)
            except Exception as exc:
                log.warning("lock %s: relock failed (%s); trying again", lk.id, describe(exc))
                self.jobs.schedule(("relock", lk.id), RELOCK_RECHECK, self.relock, lk, reason)
                return
            pending = lk.unlocked or {}
            if state.get(lk.cfg.state_point) is True:
                lk.unlocked = None
                self.store.put(f"unlock:{lk.id}", None)
                await self.audit.emit("event", event_body(self.clock.time(), "lock.relocked", lock=lk.id, by=by, reason=reason,
                                                          issuer=pending.get("issuer"), command=pending.get("command"),
                                                          locked=True, state=state))
                return
            if not lk.relock_pending_sent:
                lk.relock_pending_sent = True
                await self.audit.emit("event", event_body(self.clock.time(), "lock.relock_pending", lock=lk.id,
                                                          detail="the door is open; it locks when the door shuts", state=state))
            self.jobs.schedule(("relock", lk.id), RELOCK_RECHECK, self.relock, lk, reason)

    async def read(self, lk: Lock) -> dict:
        values = {p.name: val for p, val in await lk.device.read_all()}
        names = [lk.cfg.state_point, lk.cfg.point, lk.cfg.door_point, lk.cfg.tamper_point, lk.cfg.battery_point, lk.relock_point]
        return {n: values.get(n) for n in names if n is not None and n in values}

    # ---------------------------------------------------------------- readings
    def observe(self, by_device: dict[str, dict]) -> None:
        for lk in self.by_id.values():
            if lk.cfg.device in by_device:
                self._observe_lock(lk, {k: val for k, (val, _ts) in by_device[lk.cfg.device].items()})

    def _observe_lock(self, lk: Lock, values: dict) -> None:
        now = self.clock.time()
        c = lk.cfg
        first = not lk.last
        if c.state_point in values:
            locked = values[c.state_point]
            if not first and lk.last.get("locked") is not None and bool(locked) != lk.last["locked"]:
                self._event(now, "lock.state", lock=lk.id, locked=bool(locked),
                            door_open=values.get(c.door_point) if c.door_point else None, by_gateway=lk.unlocked is not None)
            lk.last["locked"] = bool(locked)
        if c.tamper_point and c.tamper_point in values:
            tamper = bool(values[c.tamper_point])
            if (first and tamper) or (not first and lk.last.get("tamper") is not None and tamper != lk.last["tamper"]):
                self._event(now, "lock.tamper", lock=lk.id, tamper=tamper)
            lk.last["tamper"] = tamper
        if c.battery_point and c.battery_point in values and is_number(values[c.battery_point]):
            battery = values[c.battery_point]
            if battery < c.battery_low and not lk.battery_low_sent:
                lk.battery_low_sent = True
                self._event(now, "lock.battery_low", lock=lk.id, battery=battery, below=c.battery_low)
            elif battery >= c.battery_low + 5:
                lk.battery_low_sent = False
            lk.last["battery"] = battery
        if c.door_point and c.door_point in values:
            lk.last["door_open"] = bool(values[c.door_point])

    def _event(self, now: float, type_: str, **fields) -> None:
        self.jobs.spawn(self.audit.emit("event", event_body(now, type_, **fields)))

    def snapshot(self) -> dict:
        now = self.clock.time()
        out = {}
        for lk in self.by_id.values():
            entry = out[lk.id] = {"locked": lk.last.get("locked"), "tamper": lk.last.get("tamper"), "battery": lk.last.get("battery")}
            if lk.unlocked:
                entry.update(unlocked_by=lk.unlocked.get("issuer"), relock_at=lk.unlocked.get("relock_at"))
            lockouts = {who: round(until, 3) for who, until in lk.lockouts.items() if until > now}
            if lockouts:
                entry["lockouts"] = lockouts  # requester (issuer or issuer/person) -> until
        return out
