"""Signed remote commands for valves and locks, with the fail-safes enforced on the board.

Seam used by the runtime (gateway/runtime.py):

- ``await start()`` before the uplink connects: every valve driven closed,
  every lock locked, a cycle cut short by a crash reported (``valve.interrupted``);
- ``on_command(topic, payload)`` for every message on ``…/cmd`` (sync, never raises);
- ``on_link(connected)`` when the broker link comes and goes (link-loss policy);
- ``observe(readings)`` with every poll's readings (interlocks, programs, lock events);
- ``run()`` as a task (the command worker and housekeeping);
- ``await stop()`` on clean shutdown: valves closed and locks locked (< 2 s);
- ``snapshot()`` for ``…/state``;
- ``controls``: the ControlService (or None), for the ``override`` action.

This class only wires the parts together, one concept per module:
gate.py (junk recognised before it costs a queue slot), junk.py (what junk
costs: counters and a summary a minute), intake.py (the queue of verified
commands, freshness, authorisation), valves.py (the valve arbiter),
valve_commands.py (irrigate, close, close_all, resume_programs),
feedback.py (confirming a valve by its feedback), interlocks.py, flow.py (the
flow interlock and the built-in flow alarms), capacity.py (pump/manifold
limits and the queue), programs.py (the irrigation scheduler), overrides.py
(``override`` of a local control), locks.py (unlock, lock, relock),
lockout.py, audit.py (results, audit records, counters), timers.py (timers
and background jobs) and store.py (durable state, written off the event
loop).  docs/commands.md has the whole contract.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from gateway.commands.audit import Audit, describe, new_counters
from gateway.commands.capacity import Capacity
from gateway.commands.config import CommandsConfig
from gateway.commands.failsafe import FailSafe
from gateway.commands.targets import CONTROL_ACTIONS, device_locations
from gateway.commands.flow import FlowWatch
from gateway.commands.intake import Intake, load_keys
from gateway.commands.interlocks import Readings
from gateway.commands.locks import Locks
from gateway.commands.lockout import Lockout
from gateway.commands.overrides import Overrides, control_targets
from gateway.commands.programs import Programs
from gateway.commands.store import CommandStore
from gateway.commands.timers import Jobs
from gateway.commands.valve_commands import ValveCommands
from gateway.commands.valves import Valves

log = logging.getLogger("canopy.commands")

SAFE_STOP_S = 1.2  # of the runtime's 2 s: valves closed and locks locked, confirmed


class CommandService:
    def __init__(self, cfg, clock, emit, devices: dict, state_dir: str, alerts=None,
                 on_commit: Callable[[], None] | None = None, controls=None):
        self.cfg = cfg
        self.cc: CommandsConfig = cfg.site.commands
        self.site = cfg.site.site
        self.gateway = cfg.site.gateway
        self.clock = clock
        self.emit = emit  # async (lane, body, topic) -> committed
        self.devices = devices
        self.state_dir = state_dir
        self.alerts = alerts
        self.store = CommandStore(os.path.join(state_dir, "commands.sqlite"), on_commit=on_commit)
        self.locations = device_locations(cfg.site)
        self.counters = new_counters()
        self.jobs = Jobs(clock, self.counters)
        self.audit = Audit(clock, emit, self.counters)
        self.readings = Readings(clock)
        parts = {"clock": clock, "store": self.store, "jobs": self.jobs, "audit": self.audit}
        self.tz = _zone(self.cc.timezone)
        units = _units(cfg)
        self.valves = Valves(self.cc.valves, devices, readings=self.readings, units=units, **parts)
        self.failsafe = FailSafe(self.valves)
        self.flow = FlowWatch(self.valves, self.readings, units, tz=self.tz, **parts)
        self.capacity = Capacity(self.cc.manifolds, self.valves, clock=clock, jobs=self.jobs, tz=self.tz)
        self.programs = Programs(self.cc.programs, self.cc.timezone, readings=self.readings, valves=self.valves,
                                 capacity=self.capacity, **parts)
        self.locks = Locks(self.cc.locks, devices, _writable_points(cfg), **parts)
        self.lockout = Lockout(self.locks, resolve=self.resolve, locations=self.locations, **parts)
        self.control_targets = control_targets(cfg.site)
        self.overrides = Overrides(controls, clock=clock, audit=self.audit, tz=self.tz)
        vc = ValveCommands(self.valves, self.programs, self.capacity, clock=clock, audit=self.audit, jobs=self.jobs,
                           close_all_hold=self.cc.close_all_hold, tz=self.tz)
        handlers = {"irrigate": vc.irrigate, "close": vc.close, "close_all": vc.close_all, "resume_programs": vc.resume_programs,
                    "unlock": self.locks.cmd_unlock, "lock": self.locks.cmd_lock, "reset_lockout": self.lockout.cmd_reset_lockout,
                    "override": self.overrides.cmd_override}
        self.intake = Intake(self.cc, self.site, self.gateway, load_keys(self.cc, cfg.base_dir), resolve=self.resolve,
                             locations=self.locations, handlers=handlers, **parts)
        self._started = False

    # -- what the runtime and the tests read ---------------------------------------------------------
    @property
    def on_change(self) -> Callable[[], None] | None:
        return self.audit.on_change

    @on_change.setter
    def on_change(self, fn: Callable[[], None] | None) -> None:  # the runtime republishes …/state
        self.audit.on_change = fn

    @property
    def keys(self) -> dict:
        return self.intake.keys

    @property
    def link_up(self) -> bool:
        return self.valves.link_up

    @property
    def hold_until(self) -> float | None:
        return self.programs.hold_until

    @property
    def latest(self) -> dict:
        return self.readings.latest

    def resolve(self, name: str, action: str | None = None):
        """A command's target: a control id (``override``), else a valve id, a lock id, or ``zone-N``."""
        if action in CONTROL_ACTIONS:
            return self.control_targets.get(name)
        if name in self.valves.by_id:
            return self.valves.by_id[name]
        if name in self.locks.by_id:
            return self.locks.by_id[name]
        return self.valves.get(name)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Fail-safe first: close every valve, lock every lock, report what a crash cut short."""
        now = self.clock.time()
        await self.store.open()
        await self.store.purge(now)
        self.programs.restore(now)
        self.lockout.restore(now)
        self.flow.restore(now)
        interrupted = self.store.cycles()
        closed = await self.failsafe.close_all_at_start()
        await self.failsafe.report_interrupted(interrupted, closed, now)
        await self.locks.lock_all_at_start(now)
        self._started = True
        log.info("commands: %d valve(s) closed, %d lock(s) locked, %d issuer(s), %d program(s)%s",
                 sum(1 for s in closed.values() if s is not None), len(self.locks.by_id), len(self.keys),
                 len(self.programs.by_id), f"; {len(interrupted)} interrupted cycle(s) reported" if interrupted else "")

    async def run(self) -> None:
        await self.intake.run()

    async def stop(self) -> None:
        """Clean shutdown: valves closed, locks locked, within the runtime's 2 s."""
        # nothing may open a valve behind our back: stop what is under way first
        await self.jobs.stop(self.intake.current)
        bodies: list[bytes] = []

        async def safe(what: str, coro) -> None:
            try:
                body = await coro
                if body is not None:
                    bodies.append(body)
            except Exception as exc:
                log.error("commands: %s could not be made safe at shutdown: %s", what, describe(exc))

        try:
            await asyncio.wait_for(asyncio.gather(
                *(safe(f"valve {v.id}", self.failsafe.stop_valve(v)) for v in self.valves.by_id.values()),
                *(safe(f"lock {lk.id}", self.locks.stop_lock(lk)) for lk in self.locks.by_id.values())), SAFE_STOP_S)
        except asyncio.TimeoutError:
            log.error("commands: shutdown could not confirm every valve closed in time; "
                      "an open cycle is reported as interrupted at the next start")
        for body in bodies:
            await self.audit.emit("event", body)
        for item in self.capacity.waiting():  # accepted, never opened: say so rather than leave them hanging
            await self.audit.finish(item.info, "failed", reason="cancelled", detail="the gateway stopped before a slot freed")
        try:
            await self.store.close()
        except Exception as exc:
            log.warning("commands: closing the command state failed: %s", exc)
        log.info("commands: stopped (valves closed, locks locked)")

    # -- inputs --------------------------------------------------------------------------------------
    def on_command(self, topic: str, payload: bytes) -> None:
        self.intake.on_command(topic, payload)

    def on_link(self, connected: bool) -> None:
        self.valves.on_link(connected)

    def observe(self, readings) -> None:
        if self.jobs.stopping or not readings:
            return
        keys, by_device = self.readings.update(readings)
        if not self._started:
            return
        self.valves.observe(by_device)
        self.flow.observe(keys)
        for p in self.programs.by_id.values():
            self.programs.evaluate(p)
        self.locks.observe(by_device)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued command, every started job and every store write is done (tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for _ in range(5):
                await asyncio.sleep(0)
            active = self.jobs.active()
            if self.intake.idle() and not active and self.store.idle():
                return
            if active:
                await asyncio.wait(list(active), timeout=max(0.0, min(0.05, deadline - loop.time())))
            else:
                await asyncio.sleep(0.001)
        raise TimeoutError("command service did not settle")

    # -- state ---------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        now = self.clock.time()
        return {"link": self.link_up, "valves": self.valves.snapshot(), "locks": self.locks.snapshot(),
                "programs": self.programs.snapshot(),
                **({"manifolds": self.capacity.snapshot()} if self.capacity.by_id else {}),
                **({"flow": self.flow.snapshot()} if self.flow.meters else {}),
                "programs_paused_until": round(self.hold_until, 3) if self.programs.held(now) else None,
                "counters": {**self.counters, "rejected": dict(self.counters["rejected"]),
                             "junk": {kind: dict(reasons) for kind, reasons in self.counters["junk"].items()},
                             "junk_issuers": dict(self.counters["junk_issuers"]), "store_errors": self.store.write_errors}}


def _zone(name: str | None):
    """The site's time zone for people's words (None: the board's)."""
    if not name:
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _units(cfg) -> dict[tuple[str, str], str]:
    """(device, point) -> unit, from the profiles: interlock and flow words give readings with their unit."""
    out = {}
    for _bus, dev in cfg.devices():
        prof = cfg.profiles.get(getattr(dev, "profile", None))
        for p in (prof.points if prof else getattr(dev, "points", [])):
            if getattr(p, "unit", None):
                out[(dev.id, p.name)] = p.unit
    return out


def _writable_points(cfg) -> dict[str, set[str]]:
    """device id -> its profile's writable point names (a lock's relock register is found here)."""
    out = {}
    for _bus, dev in cfg.devices():
        prof = cfg.profiles.get(getattr(dev, "profile", None))
        out[dev.id] = {p.name for p in prof.points if p.writable} if prof else set()
    return out
