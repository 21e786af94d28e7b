"""The valve arbiter: every open and close of a valve, whoever asked for it.

One arbiter: every valve operation runs under that valve's lock, and the
decisions are made synchronously on the event loop.  A valve opens only for a
duration (a close timer, and the relay's own pulse register where it has one);
a cycle is on disk before the valve is touched, so a crash is reported after
the restart (``valve.interrupted``); a close that fails is retried until the
device confirms it (``valve.close_failed`` once, ``valve.close_recovered``);
a valve found open that nobody here opened still closes at ``max_run``.
Start-up and shutdown are in failsafe.py.

A valve with ``feedback:`` is opened or closed only when its feedback agrees
within ``confirm_within`` (feedback.py): an opening that is not confirmed
raises ``valve.not_confirmed`` (alarm lane), and the valve is commanded closed
again and that close verified; a close that is not confirmed is a close that
failed.  Without feedback the coil read back is all there is (``confirmed:
false``).  The shutdown close is judged by the coil only: it has 1.2 s.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable

from core.records import event_body
from gateway.commands.audit import describe
from gateway.commands.config import ValveConfig
from gateway.commands.feedback import Confirmation, FeedbackReader, feedback_key
from gateway.commands.interlocks import blocked_words, tripped

log = logging.getLogger("canopy.commands")

CLOSE_RETRY_MAX = 30.0
FOREIGN_GUARD = 1.0  # a reading this soon after our own write may predate it


class Valve:
    kind = "valve"

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
        self.changed_mono = 0.0  # monotonic time of our last write (flow settles after it)
        self.observed: bool | None = None

    @property
    def device_id(self) -> str:
        return self.cfg.device

    @property
    def alias(self) -> str | None:
        return f"zone-{self.cfg.zone}" if self.cfg.zone is not None else None


class Valves:
    def __init__(self, configs: list[ValveConfig], devices: dict, *, clock, store, jobs, audit, readings,
                 units: dict | None = None):
        self.clock = clock
        self.store = store
        self.jobs = jobs
        self.audit = audit
        self.readings = readings
        self.by_id: dict[str, Valve] = {c.id: Valve(c, devices.get(c.device)) for c in configs}
        self.zones: dict[str, str] = {v.alias: v.id for v in self.by_id.values() if v.alias is not None}
        self.link_up = False
        self.is_held: Callable[[], bool] = lambda: False  # programs: a close_all hold is in force
        self.on_cycle_end: Callable[[dict], None] | None = None  # programs: a cycle of theirs ended
        self.on_slot_free: Callable[[], None] = lambda: None  # capacity: a valve closed or an opening ended
        self.flow_block: Callable[[Valve], tuple[str, str] | None] = lambda v: None  # flow.py: the flow interlock
        self.units = units or {}  # (device, point) -> unit, for the words of interlocks
        self.feedback = FeedbackReader(devices, clock, jobs)
        self._cycle_ids = itertools.count(1)

    def get(self, name: str) -> Valve | None:
        """A valve by id or by its ``zone-N`` alias."""
        v = self.by_id.get(name)
        return v if v is not None else self.by_id.get(self.zones.get(name, ""))

    def blocked(self, v: Valve) -> tuple[str, str] | None:
        """Why ``v`` may not be opened now: (interlock, words for people), or None."""
        trip = tripped(v.cfg.interlocks, self.readings, opening=True, units=self.units)
        if trip is not None:
            return trip[0], blocked_words(*trip)
        if v.close_failing:
            return "close_failing", f"{v.id} is failing to close; it will not be opened"
        return self.flow_block(v)

    # ---------------------------------------------------------------- open
    def _new_cycle(self, v: Valve, now: float, duration: float, source: str, issuer, command, program) -> dict:
        return {"cid": next(self._cycle_ids), "valve": v.id, "source": source, "issuer": issuer, "command": command,
                "program": program, "opened_at": round(now, 3), "duration": duration,
                "ends_at": round(now + duration, 3), "device_timer": bool(v.cfg.pulse_point)}

    async def open(self, v: Valve, duration: float, source: str, *, issuer=None, command=None, program=None):
        """Open for ``duration`` seconds. Returns (ok, state, fail_reason, detail)."""
        try:
            async with v.lock:
                if self.jobs.stopping:
                    return False, None, "device_error", "the gateway is stopping"
                if program is not None and (v.cycle is not None or self.is_held()):
                    return False, None, None, "superseded"
                if v.device is None:
                    return False, None, "device_error", f"device {v.cfg.device} is not running (disabled?)"
                now, mono = self.clock.time(), self.clock.monotonic()
                previous = v.cycle
                cycle = self._new_cycle(v, now, duration, source, issuer, command, program)
                try:
                    await self.store.save_cycle(v.id, cycle)  # on disk before the device is touched: a crash is reported
                except Exception as exc:
                    if previous is not None:  # the mirror keeps what is really running
                        self.store.save_cycle(v.id, previous)
                    else:
                        self.store.clear_cycle(v.id)
                    return False, None, "store_error", f"cannot record the cycle: {describe(exc)}"
                try:
                    if v.cfg.pulse_point:
                        await v.device.write(v.cfg.pulse_point, max(1, math.ceil(duration)))
                    state = await self.write_and_read(v, True)
                except Exception as exc:
                    await self._safe_close_after_failure(v, previous)
                    return False, None, "device_error", describe(exc)
                if state.get(v.cfg.point) is not True:
                    await self._safe_close_after_failure(v, previous)
                    return False, state, "readback_mismatch", f"{v.cfg.point} reads {state.get(v.cfg.point)!r} after writing true"
                if v.cfg.feedback is not None:
                    conf = await self.feedback.wait_for(v, True, state.get(feedback_key(v)))
                    state[feedback_key(v)] = conf.value
                    if not conf.confirmed:
                        await self._not_confirmed(v, cycle, conf)
                        closed = await self._safe_close_after_failure(v, previous)
                        return False, state, "not_confirmed", conf.words(v, True) + (
                            "; it was commanded closed again and reads closed" if closed else
                            "; it was commanded closed again, and that is not confirmed either (valve.close_failed)")
                v.cycle, v.opened_mono, v.closing = cycle, mono, False
                self._schedule_ends(v, cycle, self.clock.monotonic() - mono)
                await self.audit.emit("event", event_body(
                    now, "valve.opened", valve=v.id, source=source, issuer=issuer, command=command, program=program,
                    duration_s=duration, closes_at=cycle["ends_at"], device_timer=cycle["device_timer"], state=state,
                    confirmed=v.cfg.feedback is not None,
                    **({"replaced": {"source": previous.get("source"), "issuer": previous.get("issuer"),
                                     "program": previous.get("program")}} if previous else {})))
                # a reading that came in while the valve was being opened was not judged yet
                if (trip := tripped(v.cfg.interlocks, self.readings, opening=False, units=self.units)) is not None:
                    v.closing = True
                    self.jobs.spawn(self.close_job(v, "interlock", cycle["cid"], trip[0], trip[1]))
                return True, state, None, None
        finally:
            v.busy = False
            self.on_slot_free()

    async def _not_confirmed(self, v: Valve, cycle: dict, conf: Confirmation) -> None:
        detail = conf.words(v, True)
        log.error("valve %s: %s; commanding it closed again", v.id, detail)
        await self.audit.emit("alarm", event_body(
            self.clock.time(), "valve.not_confirmed", valve=v.id, expected="open", feedback={feedback_key(v): conf.value},
            within_s=v.cfg.confirm_within, source=cycle.get("source"), issuer=cycle.get("issuer"),
            command=cycle.get("command"), program=cycle.get("program"), detail=detail))

    def _schedule_ends(self, v: Valve, cycle: dict, elapsed: float = 0.0) -> None:
        """The close timer of a new cycle (``elapsed`` of it went by confirming), and its link-loss timer."""
        source = cycle["source"]
        self.jobs.schedule(("close", v.id), cycle["duration"] - elapsed, self.close_job, v,
                           "max_run" if source == "program" else "duration_elapsed", cycle["cid"], None)
        if source == "remote" and not self.link_up and v.cfg.on_link_loss == "close":
            self.jobs.schedule(("linkloss", v.id), v.cfg.link_loss_after, self.close_job, v, "link_loss", cycle["cid"], None)
        elif source != "remote":
            self.jobs.cancel(("linkloss", v.id))

    async def _safe_close_after_failure(self, v: Valve, previous: dict | None) -> bool:
        """An open failed half way: the valve must end closed (and any previous cycle with it). True: verified closed."""
        self.jobs.cancel(("close", v.id))
        state, error = await self.close_verified(v)
        if error is None:
            self.store.clear_cycle(v.id)
            v.cycle = None
            if previous is not None:
                await self.audit.emit("event", self.closed_body(v, previous, "open_failed", state))
            return True
        v.close_failing = True
        self.jobs.spawn(self.retry_close(v, "open_failed", error))
        return False

    # ---------------------------------------------------------------- close
    async def close_job(self, v: Valve, reason: str, cid: int | None, interlock: str | None, detail: str | None = None) -> None:
        await self.close(v, reason, expect_cid=cid, interlock=interlock, detail=detail)

    async def close(self, v: Valve, reason: str, *, by=None, command=None, expect_cid=None, interlock=None,
                    detail=None, retry=True) -> tuple[dict | None, str | None]:
        """Close whatever cycle runs (or only cycle ``expect_cid``). Returns (state, error)."""
        if not retry and v.close_failing and v.lock.locked():
            return None, "the valve is failing to close; the gateway keeps trying (valve.close_failed)"
        async with v.lock:
            cycle = v.cycle
            if expect_cid is not None and (cycle is None or cycle.get("cid") != expect_cid):
                return None, None  # that cycle already ended; a newer one has its own timers
            self.jobs.cancel(("close", v.id))
            self.jobs.cancel(("linkloss", v.id))
            if v.device is None:
                return None, f"device {v.cfg.device} is not running"
            v.closing = True
            state, error = await self.close_verified(v)
            if error is not None:
                if not retry:
                    # a command's answer must not wait for ever; keep trying in the background
                    v.close_failing = True
                    self.jobs.spawn(self.retry_close(v, reason, error))
                    return state, error
                state = await self.drive_closed(v, reason, first_error=error)
                if state is None:
                    return None, "stopping"
            v.cycle = None
            v.closing = False
            self.on_slot_free()
            if cycle is not None:
                self.store.clear_cycle(v.id)
                if self.on_cycle_end is not None:
                    self.on_cycle_end(cycle)
                await self.audit.emit("event", self.closed_body(v, cycle, reason, state, closed_by=by, closed_by_command=command,
                                                                interlock=interlock, detail=detail))
            return state, None

    async def retry_close(self, v: Valve, reason: str, first_error: str | None = None) -> None:
        async with v.lock:
            cycle = v.cycle
            state = await self.drive_closed(v, reason, first_error=first_error)
            if state is None:
                return
            v.cycle = None
            v.closing = False
            v.busy = False
            self.store.clear_cycle(v.id)
            self.on_slot_free()
            if cycle is not None:
                await self.audit.emit("event", self.closed_body(v, cycle, reason, state))

    async def drive_closed(self, v: Valve, reason: str, first_error: str | None) -> dict | None:
        """Keep writing 'closed' until the device confirms it (a valve must close). None if stopping."""
        attempt = 0
        error = first_error
        while not self.jobs.stopping:
            if error is not None:
                attempt += 1
                if attempt == 1:
                    v.close_failing = True
                    log.error("valve %s: cannot close (%s); retrying until it does", v.id, error)
                    await self.audit.emit("alarm", event_body(self.clock.time(), "valve.close_failed", valve=v.id, reason=reason,
                                                              detail=error, open=v.cycle is not None))
                await self.jobs.park(min(CLOSE_RETRY_MAX, 0.5 * 2 ** min(attempt, 8)))
            state, error = await self.close_verified(v)
            if error is None:
                if v.close_failing:
                    v.close_failing = False
                    await self.audit.emit("event", event_body(self.clock.time(), "valve.close_recovered", valve=v.id,
                                                              attempts=attempt, state=state))
                return state
        return None

    async def close_verified(self, v: Valve) -> tuple[dict | None, str | None]:
        """Write closed, read the coil back and, with feedback, wait for it to agree: (state, error or None)."""
        try:
            state = await self.write_and_read(v, False)
        except Exception as exc:
            return None, describe(exc)
        if state.get(v.cfg.point) is not False:
            return state, "read back still open"
        if v.cfg.feedback is None:
            return state, None
        conf = await self.feedback.wait_for(v, False, state.get(feedback_key(v)))
        state[feedback_key(v)] = conf.value
        return state, None if conf.confirmed else conf.words(v, False)

    def closed_body(self, v: Valve, cycle: dict, reason: str, state, **extra) -> bytes:
        now = self.clock.time()
        opened = cycle.get("opened_at") or now
        return event_body(now, "valve.closed", valve=v.id, reason=reason, source=cycle.get("source"),
                          issuer=cycle.get("issuer"), command=cycle.get("command"), program=cycle.get("program"),
                          opened_at=opened, ran_s=round(max(0.0, now - opened), 3), planned_s=cycle.get("duration"),
                          state=state, **{k: val for k, val in extra.items() if val is not None})

    async def write_and_read(self, v: Valve, value: bool) -> dict:
        """Write the coil and read the device back: the coil, the pulse register, feedback on the same device."""
        v.last_write_ts = self.clock.time()
        v.changed_mono = self.clock.monotonic()
        await v.device.write(v.cfg.point, value)
        values = {p.name: val for p, val in await v.device.read_all()}
        v.last_write_ts = self.clock.time()
        state = {v.cfg.point: values.get(v.cfg.point)}
        if v.cfg.pulse_point:
            state[v.cfg.pulse_point] = values.get(v.cfg.pulse_point)
        fb = v.cfg.feedback
        if fb is not None and fb.device == v.cfg.device:
            state[fb.point] = values.get(fb.point)
        return state

    # ---------------------------------------------------------------- the link and the readings
    def on_link(self, connected: bool) -> None:
        """Link-loss policy: a remote cycle on a valve with ``on_link_loss: close`` closes after ``link_loss_after``."""
        self.link_up = connected
        if connected:
            self.jobs.cancel_kind("linkloss")
            return
        for v in self.by_id.values():
            if v.cycle is not None and v.cycle.get("source") == "remote" and v.cfg.on_link_loss == "close":
                self.jobs.schedule(("linkloss", v.id), v.cfg.link_loss_after, self.close_job, v, "link_loss",
                                   v.cycle["cid"], None)

    def observe(self, by_device: dict[str, dict]) -> None:
        """A poll's readings: interlocks on running cycles, valves found open (flow: flow.py)."""
        for v in self.by_id.values():
            if v.cycle is not None and not v.closing and not v.busy:
                trip = tripped(v.cfg.interlocks, self.readings, opening=False, units=self.units)
                if trip is not None:
                    v.closing = True
                    self.jobs.spawn(self.close_job(v, "interlock", v.cycle["cid"], trip[0], trip[1]))
            seen = by_device.get(v.cfg.device, {}).get(v.cfg.point)
            if seen is not None:
                self._watch_foreign(v, seen[0], seen[1])

    def _watch_foreign(self, v: Valve, value, ts: float) -> None:
        """A valve found open that nobody here opened (a button, a stuck relay): max_run still applies."""
        v.observed = bool(value)
        if not value or v.cycle is not None or v.busy or v.closing or ts < v.last_write_ts + FOREIGN_GUARD:
            return
        now = self.clock.time()
        cycle = self._new_cycle(v, now, v.cfg.max_run, "unknown", None, None, None)
        cycle["device_timer"] = False
        v.cycle = cycle
        v.opened_mono = self.clock.monotonic()
        self.store.save_cycle(v.id, cycle)  # on disk soon; the valve is open already
        self.jobs.schedule(("close", v.id), v.cfg.max_run, self.close_job, v, "max_run", cycle["cid"], None)
        self.jobs.spawn(self.audit.emit("event", event_body(now, "valve.unexpected_open", valve=v.id, closes_at=cycle["ends_at"],
                                                            detail="found open without a command or program; closes at max_run")))

    def snapshot(self) -> dict:
        mono = self.clock.monotonic()
        out = {}
        for v in self.by_id.values():
            c = v.cycle
            out[v.id] = {"open": c is not None or bool(v.observed), **({
                "source": c.get("source"), "issuer": c.get("issuer"), "program": c.get("program"),
                "closes_in_s": round(max(0.0, v.opened_mono + c["duration"] - mono), 1)} if c else {}),
                **({"close_failing": True} if v.close_failing else {}),
                **({"confirmed": v.cfg.feedback is not None} if c else {})}
        return out
