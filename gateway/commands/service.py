"""Signed remote commands for valves and locks, with the fail-safes enforced on the board.

Seam used by the runtime (gateway/runtime.py):

- ``await start()`` before the uplink connects: every valve driven closed,
  every lock locked, a cycle cut short by a crash reported (``valve.interrupted``);
- ``on_command(topic, payload)`` for every message on ``…/cmd`` (sync, never raises);
- ``on_link(connected)`` when the broker link comes and goes (link-loss policy);
- ``observe(readings)`` with every poll's readings (interlocks, programs, lock events);
- ``run()`` as a task (the command worker and housekeeping);
- ``await stop()`` on clean shutdown: valves closed and locks locked (< 2 s);
- ``snapshot()`` for ``…/state``.

Every command gets results on ``…/cmd/result`` (event-lane records with
``"topic": "cmd/result"``): ``rejected`` (reason) -- or ``accepted`` and then
``executed`` (with the state read back from the device) or ``failed`` -- and
one ``cmd.audit`` record on ``…/event``.  Nothing rejected touches a device.
Valve and lock operations, whoever started them (a command, a program, a
timer, the link-loss policy, start-up), are ``valve.*`` / ``lock.*`` events.

One arbiter: every valve operation runs under that valve's lock; decisions are
made synchronously on the event loop.  A remote ``close_all`` closes every
valve whoever opened it and pauses automatic programs (``close_all_hold``); a
program never touches a valve opened by a command; a command takes over a
valve a program opened.  docs/commands.md has the whole contract.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
from collections import deque
from datetime import datetime

from core.backoff import RateLimitedLog
from core.protocol.envelope import Malformed, Unsigned, load_public_key, parse, peek, verify
from core.records import event_body
from gateway.commands.config import (
    ACTIONS,
    LOCK_ACTIONS,
    SITE_ACTIONS,
    VALVE_ACTIONS,
    CommandsConfig,
    LockConfig,
    ProgramConfig,
    ValveConfig,
    device_locations,
    parse_window,
    resolve_key_text,
    target_allowed,
)
from gateway.commands.store import CommandStore

log = logging.getLogger("canopy.commands")

RESULT_TOPIC = "cmd/result"
PURGE_INTERVAL = 3600.0
RELOCK_GRACE = 2.0  # after a device-side relock was due, the gateway checks (and relocks itself)
RELOCK_RECHECK = 5.0  # door still open: look again this often
CLOSE_RETRY_MAX = 30.0
FOREIGN_GUARD = 1.0  # a reading this soon after our own write may predate it
_UNKNOWN = object()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."



class Valve:
    def __init__(self, cfg: ValveConfig, device):
        self.cfg = cfg
        self.id = cfg.id
        self.device = device
        self.lock = asyncio.Lock()
        self.cycle: dict | None = None
        self.opened_mono = 0.0
        self.busy = False  # an open or close is under way (decided, not finished)
        self.closing = False  # a close was decided for the running cycle
        self.close_failing = False
        self.last_write_ts = 0.0  # wall time of our last write (readings older than this are stale)
        self.observed: bool | None = None

    @property
    def alias(self) -> str | None:
        return f"zone-{self.cfg.zone}" if self.cfg.zone is not None else None


class Lock:
    def __init__(self, cfg: LockConfig, device, writable_points: set[str]):
        self.cfg = cfg
        self.id = cfg.id
        self.device = device
        self.oplock = asyncio.Lock()
        self.relock_point = cfg.relock_point or ("relock_time" if "relock_time" in writable_points and cfg.relock != "gateway" else None)
        self.relock_by = "device" if self.relock_point and cfg.relock != "gateway" else "gateway"
        self.unlocked: dict | None = None  # our unlock waiting for its relock
        self.attempts: deque[float] = deque()
        self.lockout_until: float | None = None
        self.last: dict = {}
        self.battery_low_sent = False
        self.relock_pending_sent = False


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


class CommandService:
    def __init__(self, cfg, clock, emit, devices: dict, state_dir: str, alerts=None):
        self.cfg = cfg
        self.cc: CommandsConfig = cfg.site.commands
        self.site = cfg.site.site
        self.gateway = cfg.site.gateway
        self.clock = clock
        self.emit = emit  # async (lane, body) -> committed
        self.on_change = None  # the runtime sets it: republish …/state when a valve or lock changes
        self.devices = devices
        self.state_dir = state_dir
        self.alerts = alerts
        self.store = CommandStore(os.path.join(state_dir, "commands.sqlite"))
        self.locations = device_locations(cfg.site)
        self.keys = {}
        for name, issuer in self.cc.issuers.items():
            try:
                self.keys[name] = load_public_key(resolve_key_text(issuer, cfg.base_dir))
            except Exception as exc:  # validated at load; a file changed since is refused, not a crash
                log.error("issuer %s: key unusable (%s); their commands will be refused", name, exc)
        profile_points = {}
        for _bus, dev in cfg.devices():
            prof = cfg.profiles.get(getattr(dev, "profile", None))
            profile_points[dev.id] = {p.name for p in prof.points if p.writable} if prof else set()
        self.valves: dict[str, Valve] = {v.id: Valve(v, devices.get(v.device)) for v in self.cc.valves}
        self.zones: dict[str, str] = {f"zone-{v.cfg.zone}": v.id for v in self.valves.values() if v.cfg.zone is not None}
        self.locks: dict[str, Lock] = {lk.id: Lock(lk, devices.get(lk.device), profile_points.get(lk.device, set()))
                                       for lk in self.cc.locks}
        self.programs: dict[str, Program] = {p.id: Program(p) for p in self.cc.programs}
        self._tz = None
        if self.cc.timezone:
            from zoneinfo import ZoneInfo

            self._tz = ZoneInfo(self.cc.timezone)
        self.latest: dict[tuple[str, str], tuple[object, float]] = {}  # (device, point) -> (value, monotonic seen)
        self.link_up = False
        self.hold_until: float | None = None
        self.counters: dict = {"received": 0, "accepted": 0, "executed": 0, "failed": 0, "rejected": {}, "dropped": 0,
                               "emit_errors": 0, "worker_errors": 0}
        self._inbox: deque[bytes] = deque()
        self._inbox_ready = asyncio.Event()
        self._worker_busy = False
        self._current: asyncio.Task | None = None
        self._timers: dict[tuple, asyncio.Task] = {}
        self._jobs: set[asyncio.Task] = set()
        self._parked: set[asyncio.Task] = set()
        self._cycle_ids = itertools.count(1)
        self._runs_cache: dict[tuple[str, str], int] = {}
        self._stopping = False
        self._started = False
        self._ratelog = RateLimitedLog(log)

    # ================================================================ lifecycle
    async def start(self) -> None:
        """Fail-safe first: close every valve, lock every lock, report what a crash cut short."""
        now = self.clock.time()
        self.store.open()
        self.store.purge(now)
        hold = self.store.get("hold_until")
        self.hold_until = hold if isinstance(hold, (int, float)) and hold > now else None
        for lk in self.locks.values():
            until = self.store.get(f"lockout:{lk.id}")
            if isinstance(until, (int, float)) and until > now:
                lk.lockout_until = until
                self._schedule(("lockout", lk.id), until - now, self._end_lockout, lk)
            else:
                self.store.put(f"lockout:{lk.id}", None)
        interrupted = self.store.cycles()
        closed: dict[str, dict | None] = {}
        by_device: dict[str, list[Valve]] = {}
        for v in self.valves.values():
            by_device.setdefault(v.cfg.device, []).append(v)
        await asyncio.gather(*(self._close_device_at_start(valves, closed) for valves in by_device.values()))
        states = [closed.get(v) for v in self.valves]
        for valve_id, cycle in interrupted.items():
            await self._emit("event", event_body(
                now, "valve.interrupted", valve=valve_id, source=cycle.get("source"), issuer=cycle.get("issuer"),
                command=cycle.get("command"), program=cycle.get("program"), opened_at=cycle.get("opened_at"),
                planned_close_at=cycle.get("ends_at"), duration_s=cycle.get("duration"),
                device_timer=cycle.get("device_timer", False), closed=closed.get(valve_id) is not None,
                state=closed.get(valve_id),
                detail="the gateway stopped during this cycle (crash or power loss); the valve was driven closed at start-up"))
            if closed.get(valve_id) is not None or valve_id not in self.valves:
                self.store.clear_cycle(valve_id)
        for lk in self.locks.values():
            pending = self.store.get(f"unlock:{lk.id}")
            state = await self._lock_at_start(lk)
            if pending is not None:
                await self._emit("event", event_body(
                    now, "lock.relocked", lock=lk.id, by="gateway", reason="restart", issuer=pending.get("issuer"),
                    command=pending.get("command"), locked=None if state is None else state.get(lk.cfg.state_point),
                    state=state))
                if state is not None and state.get(lk.cfg.state_point) is True:
                    self.store.put(f"unlock:{lk.id}", None)
        self._started = True
        log.info("commands: %d valve(s) closed, %d lock(s) locked, %d issuer(s), %d program(s)%s",
                 sum(1 for s in states if s is not None), len(self.locks), len(self.keys), len(self.programs),
                 f"; {len(interrupted)} interrupted cycle(s) reported" if interrupted else "")

    async def _close_device_at_start(self, valves: list[Valve], closed: dict) -> None:
        """One device's valves, one after the other; a dead device costs one timeout, not one per valve."""
        error = None
        for v in valves:
            if v.device is None:
                closed[v.id] = None
                continue
            if error is None:
                try:
                    state = await self._write_and_read(v, False)
                    if state.get(v.cfg.point) is False:
                        closed[v.id] = state
                        continue
                    error = f"{v.cfg.point} still reads open"
                except Exception as exc:
                    error = _describe(exc)
            log.error("valve %s: cannot close at start-up (%s); retrying in the background", v.id, error)
            closed[v.id] = None
            v.busy = True
            v.close_failing = True
            self._spawn(self._retry_close(v, "startup", error))

    async def _lock_at_start(self, lk: Lock) -> dict | None:
        if lk.device is None:
            return None
        try:
            await lk.device.write(lk.cfg.point, False)
            return await self._read_lock(lk)
        except Exception as exc:
            log.error("lock %s: cannot lock at start-up (%s)", lk.id, _describe(exc))
            return None

    async def run(self) -> None:
        housekeeping = asyncio.create_task(self._housekeeping(), name="commands-housekeeping")
        try:
            while True:
                while not self._inbox:
                    self._inbox_ready.clear()
                    await self._inbox_ready.wait()
                payload = self._inbox.popleft()
                self._worker_busy = True
                self._current = asyncio.create_task(self._process(payload), name="commands-current")
                try:
                    await self._current
                except asyncio.CancelledError:
                    if self._stopping:
                        return
                    raise
                except Exception:
                    self.counters["worker_errors"] += 1
                    log.exception("commands: handling a command failed")
                finally:
                    self._current = None
                    self._worker_busy = False
        finally:
            housekeeping.cancel()

    async def _housekeeping(self) -> None:
        while True:
            await self.clock.sleep(PURGE_INTERVAL)
            try:
                self.store.purge(self.clock.time())
            except Exception as exc:
                log.warning("commands: purging old ids failed: %s", exc)

    async def stop(self) -> None:
        """Clean shutdown: valves closed, locks locked, within the runtime's 2 s."""
        self._stopping = True
        for t in list(self._timers.values()):
            t.cancel()
        self._timers.clear()
        # nothing may open a valve behind our back: stop what is under way first
        busy = [t for t in [self._current, *self._jobs] if t is not None and not t.done()]
        for t in busy:
            t.cancel()
        if busy:
            await asyncio.wait(busy, timeout=0.3)
        bodies: list[bytes] = []

        async def safe(what: str, coro) -> None:
            try:
                body = await coro
                if body is not None:
                    bodies.append(body)
            except Exception as exc:
                log.error("commands: %s could not be made safe at shutdown: %s", what, _describe(exc))

        try:
            await asyncio.wait_for(asyncio.gather(*(safe(f"valve {v.id}", self._stop_valve(v)) for v in self.valves.values()),
                                                  *(safe(f"lock {lk.id}", self._stop_lock(lk)) for lk in self.locks.values())), 1.2)
        except asyncio.TimeoutError:
            log.error("commands: shutdown could not confirm every valve closed in time; "
                      "an open cycle is reported as interrupted at the next start")
        for body in bodies:
            await self._emit("event", body)
        try:
            self.store.close()
        except Exception:
            pass
        log.info("commands: stopped (valves closed, locks locked)")

    async def _stop_valve(self, v: Valve) -> bytes | None:
        if v.device is None:
            return None
        cycle = v.cycle
        state = await self._write_and_read(v, False)
        if state.get(v.cfg.point) is not False:
            log.error("valve %s: still reads open at shutdown; reported as interrupted at the next start", v.id)
            return None
        v.cycle = None
        if cycle is None:  # an open cut short by the shutdown itself is on disk only
            cycle = self.store.cycles().get(v.id)
        if cycle is not None:
            self.store.clear_cycle(v.id)
            return self._closed_body(v, cycle, "shutdown", state)
        return None

    async def _stop_lock(self, lk: Lock) -> bytes | None:
        if lk.device is None:
            return None
        pending = lk.unlocked
        await lk.device.write(lk.cfg.point, False)
        state = await self._read_lock(lk)
        if pending is not None and state.get(lk.cfg.state_point) is True:
            lk.unlocked = None
            self.store.put(f"unlock:{lk.id}", None)
            return event_body(self.clock.time(), "lock.relocked", lock=lk.id, by="gateway", reason="shutdown",
                              issuer=pending.get("issuer"), command=pending.get("command"), locked=True, state=state)
        return None

    # ================================================================ intake
    def on_command(self, topic: str, payload: bytes) -> None:
        self.counters["received"] += 1
        if len(self._inbox) >= self.cc.queue:
            self.counters["dropped"] += 1
            self._ratelog("dropped", "commands: queue full (%d waiting); a command was dropped unanswered", len(self._inbox))
            return
        self._inbox.append(bytes(payload))
        self._inbox_ready.set()

    def on_link(self, connected: bool) -> None:
        self.link_up = connected
        if connected:
            for key in [k for k in self._timers if k[0] == "linkloss"]:
                self._cancel(key)
            return
        for v in self.valves.values():
            if v.cycle is not None and v.cycle.get("source") == "remote" and v.cfg.on_link_loss == "close":
                self._schedule(("linkloss", v.id), v.cfg.link_loss_after, self._close_job, v, "link_loss",
                               v.cycle["cid"], None)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued command and every started job is done (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for _ in range(5):
                await asyncio.sleep(0)
            active = self._jobs - self._parked
            if not self._inbox and not self._worker_busy and not active:
                return
            if active:
                await asyncio.wait(list(active), timeout=max(0.0, min(0.05, deadline - loop.time())))
            else:
                await asyncio.sleep(0.001)
        raise TimeoutError("command service did not settle")

    # ================================================================ the pipeline
    async def _process(self, payload: bytes) -> None:
        now = self.clock.time()
        info = peek(payload)
        try:
            env = parse(payload, self.cc.max_payload)
        except Unsigned as exc:
            return await self._reject(info, "unsigned", str(exc))
        except Malformed as exc:
            return await self._reject(info, "malformed", str(exc))
        info = {"id": env.id, "issuer": env.issuer, "action": env.action, "target": env.target}
        issuer = self.cc.issuers.get(env.issuer)
        key = self.keys.get(env.issuer)
        if issuer is None or not issuer.enabled or key is None:
            return await self._reject(info, "unauthorised_issuer", f"issuer {env.issuer!r} is not known to this gateway"
                                      if issuer is None else f"issuer {env.issuer!r} is disabled")
        if not verify(env, key):
            return await self._reject(info, "bad_signature", "the signature does not match the envelope and the issuer's key")
        if env.site != self.site or env.gateway != self.gateway:
            return await self._reject(info, "wrong_gateway", f"addressed to {env.site}/{env.gateway}, this is {self.site}/{self.gateway}")
        if env.expires_at <= env.issued_at:
            return await self._reject(info, "malformed", "expires_at must be after issued_at")
        if env.expires_at - env.issued_at > self.cc.max_validity:
            return await self._reject(info, "validity_too_long", f"valid for {env.expires_at - env.issued_at:.0f} s; at most {self.cc.max_validity:.0f} s")
        if env.issued_at > now + self.cc.clock_skew:
            return await self._reject(info, "future_dated", f"issued {env.issued_at - now:.1f} s in the future (skew allowed {self.cc.clock_skew:g} s)")
        if now > env.expires_at:
            return await self._reject(info, "expired", f"expired {now - env.expires_at:.1f} s ago")
        try:
            fresh = self.store.remember(f"{env.issuer}/{env.id}", env.expires_at + self.cc.clock_skew)
        except Exception as exc:  # without the id on disk a replay could not be refused: do nothing
            log.error("commands: cannot record command id (%s); command not executed", exc)
            return await self._finish(info, "failed", reason="store_error", detail=f"cannot record the command id: {_describe(exc)}")
        if not fresh:
            return await self._reject(info, "replayed", f"command {env.id} from {env.issuer} was already received")
        if self._stopping:
            return await self._reject(info, "shutting_down", "the gateway is stopping")
        action = env.action
        if action not in ACTIONS:
            return await self._reject(info, "unknown_action", f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        target = None
        if action in SITE_ACTIONS:
            if env.target != "*":
                return await self._reject(info, "unknown_target", f"{action} takes target '*'")
        else:
            target = self._resolve(env.target)
            if target is None:
                return await self._reject(info, "unknown_target", f"no valve or lock {env.target!r} on this gateway")
            kind_ok = action in VALVE_ACTIONS if isinstance(target, Valve) else action in LOCK_ACTIONS
            if not kind_ok:
                kind = "valve" if isinstance(target, Valve) else "lock"
                return await self._reject(info, "unsupported_action", f"{action} does not apply to {kind} {target.id}")
            info["target"] = target.id
        if action not in issuer.actions:
            return await self._reject(info, "unauthorised_action", f"{env.issuer} may not {action}")
        if target is not None and not self._allowed(issuer, target):
            return await self._reject(info, "unauthorised_target", f"{env.issuer} may not command {target.id}")
        handler = getattr(self, f"_cmd_{action}")
        await handler(env, info, target)

    def _resolve(self, name: str):
        if name in self.valves:
            return self.valves[name]
        if name in self.locks:
            return self.locks[name]
        if name in self.zones:
            return self.valves[self.zones[name]]
        return None

    def _allowed(self, issuer, target) -> bool:
        device = target.cfg.device
        loc = self.locations.get(device, {})
        if target_allowed(issuer, target.id, loc):
            return True
        alias = target.alias if isinstance(target, Valve) else None
        return alias is not None and target_allowed(issuer, alias, {})

    def _params(self, env, allowed: set[str]) -> str | None:
        extra = sorted(set(env.params) - allowed)
        if extra:
            return f"unknown parameter(s) {', '.join(extra)}" + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else "; this action takes none")
        return None

    # ---------------------------------------------------------------- valves
    async def _cmd_irrigate(self, env, info, v: Valve) -> None:
        if (problem := self._params(env, {"duration_s"})) is not None:
            return await self._reject(info, "invalid_params", problem)
        if "duration_s" not in env.params or env.params["duration_s"] is None:
            return await self._reject(info, "missing_duration", "irrigate needs params.duration_s (seconds)")
        d = env.params["duration_s"]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d <= 0:
            return await self._reject(info, "invalid_duration", f"duration_s must be a positive number of seconds (got {d!r})")
        if d > v.cfg.max_run:
            return await self._reject(info, "duration_exceeds_max", f"{d:g} s is longer than {v.id}'s max_run of {v.cfg.max_run:g} s",
                                      max_run_s=v.cfg.max_run)
        if (tripped := self._interlock(v, opening=True)) is not None:
            return await self._reject(info, "interlock", tripped[1], interlock=tripped[0])
        if v.close_failing:
            return await self._reject(info, "interlock", f"{v.id} is failing to close; it will not be opened", interlock="close_failing")
        await self._accepted(info)
        v.busy = True
        ok, state, reason, detail = await self._open_valve(v, float(d), "remote", issuer=env.issuer, command=env.id)
        if ok:
            await self._finish(info, "executed", state=state, duration_s=float(d),
                               closes_at=round(v.cycle["ends_at"], 3) if v.cycle else None,
                               device_timer=bool(v.cfg.pulse_point))
        else:
            await self._finish(info, "failed", reason=reason, detail=detail, state=state)

    async def _cmd_close(self, env, info, v: Valve) -> None:
        if (problem := self._params(env, set())) is not None:
            return await self._reject(info, "invalid_params", problem)
        await self._accepted(info)
        state, error = await self._close_valve(v, "command", by=env.issuer, command=env.id, retry=False)
        if error is None:
            await self._finish(info, "executed", state=state)
        else:
            await self._finish(info, "failed", reason="device_error", detail=error, state=state)

    async def _cmd_close_all(self, env, info, _target) -> None:
        if (problem := self._params(env, {"hold_s"})) is not None:
            return await self._reject(info, "invalid_params", problem)
        hold = env.params.get("hold_s", self.cc.close_all_hold)
        if isinstance(hold, bool) or not isinstance(hold, (int, float)) or not math.isfinite(hold) or not 0 <= hold <= 7 * 86400:
            return await self._reject(info, "invalid_params", f"hold_s must be 0..604800 seconds (got {hold!r})")
        # the hold is in force before the first await: no program starts from here on
        self._set_hold(self.clock.time() + hold if hold > 0 else None)
        await self._accepted(info)
        results = await asyncio.gather(*(self._close_valve(v, "close_all", by=env.issuer, command=env.id, retry=False)
                                         for v in self.valves.values()))
        state = {v.id: s for v, (s, _e) in zip(self.valves.values(), results)}
        errors = {v.id: e for v, (_s, e) in zip(self.valves.values(), results) if e is not None}
        extra = {"programs_paused_until": round(self.hold_until, 3) if self.hold_until else None}
        if errors:
            await self._finish(info, "failed", reason="device_error", detail="; ".join(f"{k}: {e}" for k, e in errors.items()),
                               state=state, **extra)
        else:
            await self._finish(info, "executed", state=state, **extra)

    async def _cmd_resume_programs(self, env, info, _target) -> None:
        if (problem := self._params(env, set())) is not None:
            return await self._reject(info, "invalid_params", problem)
        await self._accepted(info)
        self._set_hold(None)
        await self._finish(info, "executed", state={"programs_paused_until": None})

    def _set_hold(self, until: float | None) -> None:
        self.hold_until = until
        try:
            self.store.put("hold_until", until)
        except Exception as exc:
            log.warning("commands: cannot persist the program hold: %s", exc)

    def _held(self, now: float) -> bool:
        return self.hold_until is not None and now < self.hold_until

    async def _open_valve(self, v: Valve, duration: float, source: str, *, issuer=None, command=None, program=None):
        """Open for ``duration`` seconds. Returns (ok, state, fail_reason, detail)."""
        try:
            async with v.lock:
                if self._stopping:
                    return False, None, "device_error", "the gateway is stopping"
                if program is not None and (v.cycle is not None or self._held(self.clock.time())):
                    return False, None, None, "superseded"
                if v.device is None:
                    return False, None, "device_error", f"device {v.cfg.device} is not running (disabled?)"
                now, mono = self.clock.time(), self.clock.monotonic()
                previous = v.cycle
                cycle = {"cid": next(self._cycle_ids), "valve": v.id, "source": source, "issuer": issuer, "command": command,
                         "program": program, "opened_at": round(now, 3), "duration": duration,
                         "ends_at": round(now + duration, 3), "device_timer": bool(v.cfg.pulse_point)}
                self.store.save_cycle(v.id, cycle)  # before the device is touched: a crash from here on is reported
                try:
                    if v.cfg.pulse_point:
                        await v.device.write(v.cfg.pulse_point, max(1, math.ceil(duration)))
                    state = await self._write_and_read(v, True)
                except Exception as exc:
                    await self._safe_close_after_failure(v, previous)
                    return False, None, "device_error", _describe(exc)
                if state.get(v.cfg.point) is not True:
                    await self._safe_close_after_failure(v, previous)
                    return False, state, "readback_mismatch", f"{v.cfg.point} reads {state.get(v.cfg.point)!r} after writing true"
                v.cycle = cycle
                v.opened_mono = mono
                v.closing = False
                self._schedule(("close", v.id), duration, self._close_job, v,
                               "max_run" if source == "program" else "duration_elapsed", cycle["cid"], None)
                if source == "remote" and not self.link_up and v.cfg.on_link_loss == "close":
                    self._schedule(("linkloss", v.id), v.cfg.link_loss_after, self._close_job, v, "link_loss", cycle["cid"], None)
                elif source != "remote":
                    self._cancel(("linkloss", v.id))
                await self._emit("event", event_body(
                    now, "valve.opened", valve=v.id, source=source, issuer=issuer, command=command, program=program,
                    duration_s=duration, closes_at=cycle["ends_at"], device_timer=cycle["device_timer"], state=state,
                    **({"replaced": {"source": previous.get("source"), "issuer": previous.get("issuer"),
                                     "program": previous.get("program")}} if previous else {})))
                # a reading that came in while the valve was being opened was not judged yet
                if (tripped := self._interlock(v, opening=False)) is not None:
                    v.closing = True
                    self._spawn(self._close_job(v, "interlock", cycle["cid"], tripped[0], tripped[1]))
                return True, state, None, None
        finally:
            v.busy = False

    async def _safe_close_after_failure(self, v: Valve, previous: dict | None) -> None:
        """An open failed half way: the valve must end closed (and any previous cycle with it)."""
        self._cancel(("close", v.id))
        try:
            state = await self._write_and_read(v, False)
            if state.get(v.cfg.point) is False:
                self.store.clear_cycle(v.id)
                v.cycle = None
                if previous is not None:
                    await self._emit("event", self._closed_body(v, previous, "open_failed", state))
                return
            error = "read back still open"
        except Exception as exc:
            error = _describe(exc)
        v.close_failing = True
        self._spawn(self._retry_close(v, "open_failed", error))

    async def _close_job(self, v: Valve, reason: str, cid: int | None, interlock: str | None, detail: str | None = None) -> None:
        await self._close_valve(v, reason, expect_cid=cid, interlock=interlock, detail=detail)

    async def _close_valve(self, v: Valve, reason: str, *, by=None, command=None, expect_cid=None, interlock=None,
                           detail=None, retry=True) -> tuple[dict | None, str | None]:
        """Close whatever cycle runs (or only cycle ``expect_cid``). Returns (state, error)."""
        if not retry and v.close_failing and v.lock.locked():
            return None, "the valve is failing to close; the gateway keeps trying (valve.close_failed)"
        async with v.lock:
            cycle = v.cycle
            if expect_cid is not None and (cycle is None or cycle.get("cid") != expect_cid):
                return None, None  # that cycle already ended; a newer one has its own timers
            self._cancel(("close", v.id))
            self._cancel(("linkloss", v.id))
            if v.device is None:
                return None, f"device {v.cfg.device} is not running"
            v.closing = True
            try:
                state = await self._write_and_read(v, False)
                error = None if state.get(v.cfg.point) is False else "read back still open"
            except Exception as exc:
                state, error = None, _describe(exc)
            if error is not None:
                if not retry:
                    # a command's answer must not wait for ever; keep trying in the background
                    v.close_failing = True
                    self._spawn(self._retry_close(v, reason, error))
                    return state, error
                state = await self._drive_closed(v, reason, first_error=error)
                if state is None:
                    return None, "stopping"
            v.cycle = None
            v.closing = False
            if cycle is not None:
                self.store.clear_cycle(v.id)
                if cycle.get("program") in self.programs:
                    self.programs[cycle["program"]].last_end_mono = self.clock.monotonic()
                await self._emit("event", self._closed_body(v, cycle, reason, state, closed_by=by, closed_by_command=command,
                                                            interlock=interlock, detail=detail))
            return state, None

    async def _retry_close(self, v: Valve, reason: str, first_error: str | None = None) -> None:
        async with v.lock:
            cycle = v.cycle
            state = await self._drive_closed(v, reason, first_error=first_error)
            if state is None:
                return
            v.cycle = None
            v.closing = False
            v.busy = False
            self.store.clear_cycle(v.id)
            if cycle is not None:
                await self._emit("event", self._closed_body(v, cycle, reason, state))

    async def _drive_closed(self, v: Valve, reason: str, first_error: str | None) -> dict | None:
        """Keep writing 'closed' until the device confirms it (a valve must close). None if stopping."""
        attempt = 0
        error = first_error
        while not self._stopping:
            if error is not None:
                attempt += 1
                if attempt == 1:
                    v.close_failing = True
                    log.error("valve %s: cannot close (%s); retrying until it does", v.id, error)
                    await self._emit("alarm", event_body(self.clock.time(), "valve.close_failed", valve=v.id, reason=reason,
                                                         detail=error, open=v.cycle is not None))
                await self._park(min(CLOSE_RETRY_MAX, 0.5 * 2 ** min(attempt, 8)))
            try:
                state = await self._write_and_read(v, False)
                if state.get(v.cfg.point) is False:
                    if v.close_failing:
                        v.close_failing = False
                        await self._emit("event", event_body(self.clock.time(), "valve.close_recovered", valve=v.id,
                                                             attempts=attempt, state=state))
                    return state
                error = "read back still open"
            except Exception as exc:
                error = _describe(exc)
        return None

    def _closed_body(self, v: Valve, cycle: dict, reason: str, state, **extra) -> bytes:
        now = self.clock.time()
        opened = cycle.get("opened_at") or now
        return event_body(now, "valve.closed", valve=v.id, reason=reason, source=cycle.get("source"),
                          issuer=cycle.get("issuer"), command=cycle.get("command"), program=cycle.get("program"),
                          opened_at=opened, ran_s=round(max(0.0, now - opened), 3), planned_s=cycle.get("duration"),
                          state=state, **{k: val for k, val in extra.items() if val is not None})

    async def _write_and_read(self, v: Valve, value: bool) -> dict:
        v.last_write_ts = self.clock.time()
        await v.device.write(v.cfg.point, value)
        values = {p.name: val for p, val in await v.device.read_all()}
        v.last_write_ts = self.clock.time()
        state = {v.cfg.point: values.get(v.cfg.point)}
        if v.cfg.pulse_point:
            state[v.cfg.pulse_point] = values.get(v.cfg.pulse_point)
        return state

    # ---------------------------------------------------------------- interlocks
    def _fresh(self, device: str, point: str, stale_after: float):
        rec = self.latest.get((device, point))
        if rec is None or self.clock.monotonic() - rec[1] > stale_after:
            return _UNKNOWN
        return rec[0]

    def _interlock(self, v: Valve, opening: bool) -> tuple[str, str] | None:
        il = v.cfg.interlocks
        if il is None:
            return None
        checks = []
        if il.moisture is not None:
            checks.append(("moisture", il.moisture, lambda x, c=il.moisture: x > c.above,
                           lambda x, c=il.moisture: f"soil moisture {x} is above {c.above} ({c.device}.{c.point})"))
        if il.rain is not None:
            checks.append(("rain", il.rain, lambda x: bool(x), lambda x, c=il.rain: f"rain detected ({c.device}.{c.point})"))
        if il.tank is not None:
            checks.append(("tank", il.tank, lambda x, c=il.tank: x < c.below,
                           lambda x, c=il.tank: f"tank level {x} is below {c.below} ({c.device}.{c.point})"))
        for name, c, tripped, say in checks:
            value = self._fresh(c.device, c.point, il.stale_after)
            if value is _UNKNOWN:
                if opening and il.if_unknown == "block":
                    return name, f"no reading of {c.device}.{c.point} in the last {il.stale_after:g} s ({name} interlock cannot be checked)"
                continue
            try:
                if tripped(value):
                    return name, say(value)
            except TypeError:
                continue
        return None

    def _check_flow(self, readings_keys: set) -> None:
        groups: dict[tuple[str, str], list[Valve]] = {}
        for v in self.valves.values():
            fl = v.cfg.interlocks.flow if v.cfg.interlocks else None
            if fl is not None:
                groups.setdefault((fl.device, fl.point), []).append(v)
        mono = self.clock.monotonic()
        for key, valves in groups.items():
            if key not in readings_keys:
                continue
            running = [v for v in valves if v.cycle is not None and not v.closing]
            if not running or any(mono - v.opened_mono < v.cfg.interlocks.flow.settle for v in running):
                continue
            value = self.latest[key][0]
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            lo = sum(v.cfg.interlocks.flow.min for v in running)
            hi = sum(v.cfg.interlocks.flow.max for v in running)
            if value < lo:
                detail = f"flow {value} is below {lo:g} at {key[0]}.{key[1]} (blocked line?)"
            elif value > hi:
                detail = f"flow {value} is above {hi:g} at {key[0]}.{key[1]} (leak?)"
            else:
                continue
            for v in running:
                v.closing = True
                self._spawn(self._close_job(v, "interlock", v.cycle["cid"], "flow", detail))

    # ---------------------------------------------------------------- observe
    def observe(self, readings) -> None:
        if self._stopping or not readings:
            return
        mono = self.clock.monotonic()
        keys = set()
        by_device: dict[str, dict] = {}
        for r in readings:
            value = r.value
            if isinstance(value, float) and not math.isfinite(value):
                continue
            self.latest[(r.device, r.point)] = (value, mono)
            keys.add((r.device, r.point))
            by_device.setdefault(r.device, {})[r.point] = (value, r.ts)
        if not self._started:
            return
        for v in self.valves.values():
            if v.cycle is not None and not v.closing and not v.busy:
                tripped = self._interlock(v, opening=False)
                if tripped is not None:
                    v.closing = True
                    self._spawn(self._close_job(v, "interlock", v.cycle["cid"], tripped[0], tripped[1]))
            seen = by_device.get(v.cfg.device, {}).get(v.cfg.point)
            if seen is not None:
                self._watch_foreign(v, seen[0], seen[1])
        self._check_flow(keys)
        for p in self.programs.values():
            self._eval_program(p)
        for lk in self.locks.values():
            if lk.cfg.device in by_device:
                self._observe_lock(lk, {k: val for k, (val, _ts) in by_device[lk.cfg.device].items()})

    def _watch_foreign(self, v: Valve, value, ts: float) -> None:
        """A valve found open that nobody here opened (a button, a stuck relay): max_run still applies."""
        v.observed = bool(value)
        if not value or v.cycle is not None or v.busy or v.closing or ts < v.last_write_ts + FOREIGN_GUARD:
            return
        now = self.clock.time()
        cycle = {"cid": next(self._cycle_ids), "valve": v.id, "source": "unknown", "issuer": None, "command": None,
                 "program": None, "opened_at": round(now, 3), "duration": v.cfg.max_run,
                 "ends_at": round(now + v.cfg.max_run, 3), "device_timer": False}
        v.cycle = cycle
        v.opened_mono = self.clock.monotonic()
        self.store.save_cycle(v.id, cycle)
        self._schedule(("close", v.id), v.cfg.max_run, self._close_job, v, "max_run", cycle["cid"], None)
        self._spawn(self._emit("event", event_body(now, "valve.unexpected_open", valve=v.id, closes_at=cycle["ends_at"],
                                                   detail="found open without a command or program; closes at max_run")))

    # ---------------------------------------------------------------- programs
    def _local(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, self._tz) if self._tz is not None else datetime.fromtimestamp(t).astimezone()

    def _runs(self, p: Program, day: str) -> int:
        key = (p.id, day)
        if key not in self._runs_cache:
            if len(self._runs_cache) > 4 * len(self.programs) + 8:
                self._runs_cache.clear()
            self._runs_cache[key] = self.store.runs(p.id, day)
        return self._runs_cache[key]

    def _eval_program(self, p: Program) -> None:
        v = self.valves[p.cfg.valve]
        value = self._fresh(p.cfg.sensor.device, p.cfg.sensor.point, p.cfg.stale_after)
        if v.cycle is not None and v.cycle.get("program") == p.id:
            if not v.closing and not v.busy and value is not _UNKNOWN and _num(value) and value >= p.cfg.stop_at:
                v.closing = True
                self._spawn(self._close_job(v, "target_reached", v.cycle["cid"], None,
                                            f"{p.cfg.sensor.device}.{p.cfg.sensor.point} = {value} reached {p.cfg.stop_at}"))
            return
        if not p.cfg.enabled or v.cycle is not None or v.busy or v.closing or v.close_failing or self._stopping:
            return
        if value is _UNKNOWN or not _num(value) or value >= p.cfg.start_below:
            return
        now = self.clock.time()
        if self._held(now):
            p.skipped = "paused by close_all"
            return
        local = self._local(now)
        if not p.in_window(local.hour * 60 + local.minute):
            p.skipped = None
            return
        if p.last_end_mono is not None and self.clock.monotonic() - p.last_end_mono < p.cfg.rest:
            p.skipped = "resting"
            return
        day = local.date().isoformat()
        if self._runs(p, day) >= p.cfg.max_per_day:
            p.skipped = f"{p.cfg.max_per_day} cycles today already"
            return
        tripped = self._interlock(v, opening=True)
        if tripped is not None:
            p.skipped = f"interlock {tripped[0]}: {tripped[1]}"
            return
        p.skipped = None
        v.busy = True
        self._spawn(self._program_start(p, v, day, value))

    async def _program_start(self, p: Program, v: Valve, day: str, value) -> None:
        try:
            self._runs_cache[(p.id, day)] = self.store.add_run(p.id, day)  # counted before opening: never more than K
        except Exception as exc:
            v.busy = False
            log.error("program %s: cannot record the run (%s); not starting", p.id, exc)
            return
        ok, _state, reason, detail = await self._open_valve(v, p.cfg.max_run, "program", program=p.id)
        if not ok and reason is not None:
            log.warning("program %s: could not open %s: %s (%s)", p.id, v.id, reason, detail)
            await self._emit("event", event_body(self.clock.time(), "program.failed", program=p.id, valve=v.id,
                                                 reason=reason, detail=detail))

    # ---------------------------------------------------------------- locks
    async def _cmd_unlock(self, env, info, lk: Lock) -> None:
        if (problem := self._params(env, set())) is not None:
            return await self._reject(info, "invalid_params", problem)
        now = self.clock.time()
        if lk.lockout_until is not None and now < lk.lockout_until:
            return await self._reject(info, "lockout", f"{lk.id} is locked out for another {lk.lockout_until - now:.0f} s "
                                      "after repeated rejected unlock attempts", lockout_until=round(lk.lockout_until, 3))
        await self._accepted(info)
        async with lk.oplock:
            try:
                if lk.device is None:
                    raise RuntimeError(f"device {lk.cfg.device} is not running (disabled?)")
                if lk.relock_by == "device":
                    await lk.device.write(lk.relock_point, max(1, math.ceil(lk.cfg.relock_after)))
                await lk.device.write(lk.cfg.point, True)
                state = await self._read_lock(lk)
            except Exception as exc:
                return await self._finish(info, "failed", reason="device_error", detail=_describe(exc))
            if state.get(lk.cfg.state_point) is not False:
                try:
                    await lk.device.write(lk.cfg.point, False)
                except Exception:
                    pass
                return await self._finish(info, "failed", reason="readback_mismatch", state=state,
                                          detail=f"{lk.cfg.state_point} reads {state.get(lk.cfg.state_point)!r} after unlocking")
            now = self.clock.time()
            lk.unlocked = {"issuer": env.issuer, "command": env.id, "at": round(now, 3),
                           "relock_at": round(now + lk.cfg.relock_after, 3)}
            self.store.put(f"unlock:{lk.id}", lk.unlocked)
            lk.relock_pending_sent = False
            delay = lk.cfg.relock_after + (RELOCK_GRACE if lk.relock_by == "device" else 0.0)
            self._schedule(("relock", lk.id), delay, self._relock, lk, "timer")
            await self._emit("event", event_body(now, "lock.unlocked", lock=lk.id, issuer=env.issuer, command=env.id,
                                                 relock_after_s=lk.cfg.relock_after, relock_by=lk.relock_by, state=state))
        await self._finish(info, "executed", state=state, relock_at=lk.unlocked["relock_at"], relock_by=lk.relock_by)

    async def _cmd_lock(self, env, info, lk: Lock) -> None:
        if (problem := self._params(env, set())) is not None:
            return await self._reject(info, "invalid_params", problem)
        await self._accepted(info)
        async with lk.oplock:
            self._cancel(("relock", lk.id))
            try:
                if lk.device is None:
                    raise RuntimeError(f"device {lk.cfg.device} is not running (disabled?)")
                await lk.device.write(lk.cfg.point, False)
                state = await self._read_lock(lk)
            except Exception as exc:
                return await self._finish(info, "failed", reason="device_error", detail=_describe(exc))
            locked = state.get(lk.cfg.state_point) is True
            if locked:
                lk.unlocked = None
                self.store.put(f"unlock:{lk.id}", None)
            else:  # the door is open: the bolt goes home when it shuts; keep watching
                self._schedule(("relock", lk.id), RELOCK_RECHECK, self._relock, lk, "command")
            await self._emit("event", event_body(self.clock.time(), "lock.locked", lock=lk.id, issuer=env.issuer,
                                                 command=env.id, locked=locked, state=state))
        await self._finish(info, "executed", state=state)

    async def _cmd_reset_lockout(self, env, info, lk: Lock) -> None:
        if (problem := self._params(env, set())) is not None:
            return await self._reject(info, "invalid_params", problem)
        await self._accepted(info)
        was = lk.lockout_until
        self._cancel(("lockout", lk.id))
        lk.lockout_until = None
        lk.attempts.clear()
        self.store.put(f"lockout:{lk.id}", None)
        await self._emit("event", event_body(self.clock.time(), "lock.lockout_ended", lock=lk.id, by=env.issuer,
                                             command=env.id, was_until=was))
        await self._finish(info, "executed", state={"lockout_until": None})

    async def _relock(self, lk: Lock, reason: str) -> None:
        async with lk.oplock:
            if lk.device is None:
                return
            by = "device"
            try:
                state = await self._read_lock(lk)
                if state.get(lk.cfg.state_point) is not True:
                    by = "gateway"
                    await lk.device.write(lk.cfg.point, False)
                    state = await self._read_lock(lk)
            except Exception as exc:
                log.warning("lock %s: relock failed (%s); trying again", lk.id, _describe(exc))
                self._schedule(("relock", lk.id), RELOCK_RECHECK, self._relock, lk, reason)
                return
            pending = lk.unlocked or {}
            if state.get(lk.cfg.state_point) is True:
                lk.unlocked = None
                self.store.put(f"unlock:{lk.id}", None)
                await self._emit("event", event_body(self.clock.time(), "lock.relocked", lock=lk.id, by=by, reason=reason,
                                                     issuer=pending.get("issuer"), command=pending.get("command"),
                                                     locked=True, state=state))
                return
            if not lk.relock_pending_sent:
                lk.relock_pending_sent = True
                await self._emit("event", event_body(self.clock.time(), "lock.relock_pending", lock=lk.id,
                                                     detail="the door is open; it locks when the door shuts", state=state))
            self._schedule(("relock", lk.id), RELOCK_RECHECK, self._relock, lk, reason)

    async def _read_lock(self, lk: Lock) -> dict:
        values = {p.name: val for p, val in await lk.device.read_all()}
        names = [lk.cfg.state_point, lk.cfg.point, lk.cfg.door_point, lk.cfg.tamper_point, lk.cfg.battery_point, lk.relock_point]
        return {n: values.get(n) for n in names if n is not None and n in values}

    def _observe_lock(self, lk: Lock, values: dict) -> None:
        now = self.clock.time()
        c = lk.cfg
        first = not lk.last
        if c.state_point in values:
            locked = values[c.state_point]
            if not first and lk.last.get("locked") is not None and bool(locked) != lk.last["locked"]:
                self._spawn(self._emit("event", event_body(now, "lock.state", lock=lk.id, locked=bool(locked),
                                                           door_open=values.get(c.door_point) if c.door_point else None,
                                                           by_gateway=lk.unlocked is not None)))
            lk.last["locked"] = bool(locked)
        if c.tamper_point and c.tamper_point in values:
            tamper = bool(values[c.tamper_point])
            if (first and tamper) or (not first and lk.last.get("tamper") is not None and tamper != lk.last["tamper"]):
                self._spawn(self._emit("event", event_body(now, "lock.tamper", lock=lk.id, tamper=tamper)))
            lk.last["tamper"] = tamper
        if c.battery_point and c.battery_point in values and _num(values[c.battery_point]):
            battery = values[c.battery_point]
            if battery < c.battery_low and not lk.battery_low_sent:
                lk.battery_low_sent = True
                self._spawn(self._emit("event", event_body(now, "lock.battery_low", lock=lk.id, battery=battery,
                                                           below=c.battery_low)))
            elif battery >= c.battery_low + 5:
                lk.battery_low_sent = False
            lk.last["battery"] = battery
        if c.door_point and c.door_point in values:
            lk.last["door_open"] = bool(values[c.door_point])

    async def _count_rejected_unlock(self, info: dict, reason: str) -> None:
        if info.get("action") != "unlock" or reason in ("lockout", "shutting_down"):
            return
        target = self._resolve(info.get("target") or "")
        if not isinstance(target, Lock):
            return
        lk = target
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
        self.store.put(f"lockout:{lk.id}", lk.lockout_until)
        self._schedule(("lockout", lk.id), lk.cfg.lockout_for, self._end_lockout, lk)
        log.warning("lock %s: %d rejected unlock attempts; unlocks refused until %.0f", lk.id, attempts, lk.lockout_until)
        await self._emit("alarm", event_body(
            now, "lock.lockout", lock=lk.id, severity="critical", attempts=attempts, window_s=lk.cfg.lockout_window,
            until=round(lk.lockout_until, 3), last_issuer=info.get("issuer"), last_reason=reason,
            location=self.locations.get(lk.cfg.device) or None,
            message=f"{attempts} rejected unlock attempts on {lk.id}; remote unlock refused for {lk.cfg.lockout_for:g} s"))

    async def _end_lockout(self, lk: Lock) -> None:
        if lk.lockout_until is None:
            return
        was = lk.lockout_until
        lk.lockout_until = None
        self.store.put(f"lockout:{lk.id}", None)
        await self._emit("event", event_body(self.clock.time(), "lock.lockout_ended", lock=lk.id, by="timer", was_until=was))

    # ================================================================ results and audit
    async def _reject(self, info: dict, reason: str, detail: str, **extra) -> None:
        rejected = self.counters["rejected"]
        rejected[reason] = rejected.get(reason, 0) + 1
        self._ratelog(reason, "command %s from %s rejected: %s (%s)", info.get("id"), info.get("issuer"), reason, detail)
        await self._result(info, "rejected", reason=reason, detail=detail, **extra)
        await self._audit(info, "rejected", reason=reason, detail=detail, **extra)
        await self._count_rejected_unlock(info, reason)

    async def _accepted(self, info: dict) -> None:
        self.counters["accepted"] += 1
        await self._result(info, "accepted")

    async def _finish(self, info: dict, status: str, **fields) -> None:
        self.counters[status] += 1
        if status == "failed":
            log.warning("command %s (%s %s) failed: %s %s", info.get("id"), info.get("action"), info.get("target"),
                        fields.get("reason"), fields.get("detail"))
        await self._result(info, status, **fields)
        await self._audit(info, status, **{k: v for k, v in fields.items() if k in ("reason", "detail", "state", "duration_s")})

    async def _result(self, info: dict, status: str, **fields) -> None:
        await self._emit("event", event_body(self.clock.time(), "cmd.result", id=info.get("id"),
                                             status=status, issuer=info.get("issuer"), action=info.get("action"),
                                             target=info.get("target"), **fields), topic=RESULT_TOPIC)

    async def _audit(self, info: dict, outcome: str, **fields) -> None:
        await self._emit("event", event_body(self.clock.time(), "cmd.audit", id=info.get("id"), issuer=info.get("issuer"),
                                             action=info.get("action"), target=info.get("target"), outcome=outcome, **fields))

    async def _emit(self, lane: str, body: bytes, topic: str | None = None) -> None:
        try:
            await self.emit(lane, body, topic)
            if self.on_change is not None and (b'"type":"valve.' in body or b'"type":"lock.' in body):
                self.on_change()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters["emit_errors"] += 1
            self._ratelog("emit", "commands: a record could not be stored: %s", exc)

    # ================================================================ timers and jobs
    def _schedule(self, key: tuple, delay: float, fn, *args) -> None:
        self._cancel(key)
        if self._stopping:
            return

        async def timer():
            await self.clock.sleep(max(0.0, delay))
            if self._timers.get(key) is task:
                del self._timers[key]
            if not self._stopping:
                self._spawn(fn(*args))

        task = asyncio.create_task(timer(), name=f"commands-timer-{key[0]}-{key[1]}")
        self._timers[key] = task

    def _cancel(self, key: tuple) -> None:
        task = self._timers.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _park(self, seconds: float) -> None:
        """A job waiting for time to pass (a retry); ``drain`` does not wait for it."""
        task = asyncio.current_task()
        self._parked.add(task)
        try:
            await self.clock.sleep(seconds)
        finally:
            self._parked.discard(task)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters["worker_errors"] += 1
            log.error("commands: background job failed", exc_info=task.exception())

    # ================================================================ state
    def snapshot(self) -> dict:
        now, mono = self.clock.time(), self.clock.monotonic()
        valves = {}
        for v in self.valves.values():
            c = v.cycle
            valves[v.id] = {"open": c is not None or bool(v.observed), **({
                "source": c.get("source"), "issuer": c.get("issuer"), "program": c.get("program"),
                "closes_in_s": round(max(0.0, v.opened_mono + c["duration"] - mono), 1)} if c else {}),
                **({"close_failing": True} if v.close_failing else {})}
        locks = {}
        for lk in self.locks.values():
            locks[lk.id] = {"locked": lk.last.get("locked"), "tamper": lk.last.get("tamper"), "battery": lk.last.get("battery"),
                            **({"unlocked_by": lk.unlocked.get("issuer"), "relock_at": lk.unlocked.get("relock_at")} if lk.unlocked else {}),
                            **({"lockout_until": round(lk.lockout_until, 3)} if lk.lockout_until and lk.lockout_until > now else {})}
        programs = {}
        day = self._local(now).date().isoformat()
        for p in self.programs.values():
            try:
                runs = self._runs(p, day)
            except Exception:
                runs = None
            programs[p.id] = {"enabled": p.cfg.enabled, "runs_today": runs, "max_per_day": p.cfg.max_per_day,
                              **({"waiting": p.skipped} if p.skipped else {})}
        return {"link": self.link_up, "valves": valves, "locks": locks, "programs": programs,
                "programs_paused_until": round(self.hold_until, 3) if self._held(now) else None,
                "counters": {**self.counters, "rejected": dict(self.counters["rejected"])}}


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
