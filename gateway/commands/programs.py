"""Automatic irrigation programs: water by moisture inside time windows, at most K times a day.

A program starts its valve when the sensor reads below ``start_below`` inside
one of its windows (after ``rest`` since its last cycle, if no interlock
trips, at most ``max_per_day`` times a local day -- counted before opening),
and stops it at ``stop_at`` or ``max_run``.  It goes through the same valve
arbiter as remote commands: it never touches a valve opened by a command, and
a remote ``close_all`` pauses every program for ``close_all_hold``.  It does not
start while an interlock blocks its valve (flow included) nor while its
manifold is full: it waits for its next reading, and queued remote openings
go first.
"""

from __future__ import annotations

import logging
from datetime import datetime

from core.records import event_body
from gateway.commands.config import ProgramConfig, parse_window
from gateway.commands.interlocks import UNKNOWN, is_number

log = logging.getLogger("canopy.commands")


class Program:
    def __init__(self, cfg: ProgramConfig):
        self.cfg = cfg
        self.id = cfg.id
        self.windows = [parse_window(w) for w in cfg.windows]
        self.last_end_mono: float | None = None
        self.skipped: str | None = None  # why the last due start did not happen (snapshot)

    def in_window(self, minute: int) -> bool:
        for start, end in self.windows:
            if (start <= minute < end) if start < end else (minute >= start or minute < end):
                return True
        return False


class Programs:
    def __init__(self, configs: list[ProgramConfig], timezone: str | None, *, clock, store, jobs, audit, readings, valves,
                 capacity=None):
        self.clock = clock
        self.store = store
        self.jobs = jobs
        self.audit = audit
        self.readings = readings
        self.valves = valves
        self.capacity = capacity
        self.by_id: dict[str, Program] = {c.id: Program(c) for c in configs}
        self.hold_until: float | None = None
        self._tz = None
        if timezone:
            from zoneinfo import ZoneInfo

            self._tz = ZoneInfo(timezone)
        valves.is_held = lambda: self.held(self.clock.time())
        valves.on_cycle_end = self._cycle_ended

    # ---------------------------------------------------------------- the close_all hold
    def restore(self, now: float) -> None:
        """At start-up: a hold still in force survives the restart."""
        hold = self.store.get("hold_until")
        self.hold_until = hold if isinstance(hold, (int, float)) and hold > now else None

    def set_hold(self, until: float | None) -> None:
        self.hold_until = until
        self.store.put("hold_until", until)  # on disk soon; a failure is logged by the store

    def held(self, now: float) -> bool:
        return self.hold_until is not None and now < self.hold_until

    # ---------------------------------------------------------------- time and counts
    def local(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, self._tz) if self._tz is not None else datetime.fromtimestamp(t).astimezone()

    def _cycle_ended(self, cycle: dict) -> None:
        p = self.by_id.get(cycle.get("program"))
        if p is not None:
            p.last_end_mono = self.clock.monotonic()

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, p: Program) -> None:
        """On every poll: stop a running cycle at its target, or start one if everything allows it."""
        v = self.valves.by_id[p.cfg.valve]
        value = self.readings.fresh(p.cfg.sensor.device, p.cfg.sensor.point, p.cfg.stale_after)
        if v.cycle is not None and v.cycle.get("program") == p.id:
            if not v.closing and not v.busy and value is not UNKNOWN and is_number(value) and value >= p.cfg.stop_at:
                v.closing = True
                self.jobs.spawn(self.valves.close_job(v, "target_reached", v.cycle["cid"], None,
                                                      f"{p.cfg.sensor.device}.{p.cfg.sensor.point} = {value} reached {p.cfg.stop_at}"))
            return
        if not p.cfg.enabled or v.cycle is not None or v.busy or v.closing or v.close_failing or self.jobs.stopping:
            return
        if value is UNKNOWN or not is_number(value) or value >= p.cfg.start_below:
            return
        day = self._why_not(p, v)
        if day is None:
            return
        p.skipped = None
        v.busy = True
        self.jobs.spawn(self._start(p, v, day))

    def _why_not(self, p: Program, v) -> str | None:
        """The local day if the program may start now; else None, with ``p.skipped`` saying why."""
        now = self.clock.time()
        if self.held(now):
            p.skipped = "paused by close_all"
            return None
        local = self.local(now)
        if not p.in_window(local.hour * 60 + local.minute):
            p.skipped = None
            return None
        if p.last_end_mono is not None and self.clock.monotonic() - p.last_end_mono < p.cfg.rest:
            p.skipped = "resting"
            return None
        day = local.date().isoformat()
        if self.store.runs(p.id, day) >= p.cfg.max_per_day:
            p.skipped = f"{p.cfg.max_per_day} cycles today already"
            return None
        if (block := self.valves.blocked(v)) is not None:
            p.skipped = block[1]
            return None
        if self.capacity is not None and (m := self.capacity.full(v)) is not None:
            p.skipped = f"waiting for a free slot: {m.words_full()}"
            return None
        return day

    async def _start(self, p: Program, v, day: str) -> None:
        try:
            self.store.add_run(p.id, day)  # counted before opening (on disk before the cycle is): never more than K
        except Exception as exc:
            v.busy = False
            log.error("program %s: cannot record the run (%s); not starting", p.id, exc)
            return
        ok, _state, reason, detail = await self.valves.open(v, p.cfg.max_run, "program", program=p.id)
        if not ok and reason is not None:
            log.warning("program %s: could not open %s: %s (%s)", p.id, v.id, reason, detail)
            await self.audit.emit("event", event_body(self.clock.time(), "program.failed", program=p.id, valve=v.id,
                                                      reason=reason, detail=detail))

    def snapshot(self) -> dict:
        now = self.clock.time()
        day = self.local(now).date().isoformat()
        out = {}
        for p in self.by_id.values():
            out[p.id] = {"enabled": p.cfg.enabled, "runs_today": self.store.runs(p.id, day), "max_per_day": p.cfg.max_per_day,
                         **({"waiting": p.skipped} if p.skipped else {})}
        return out
