"""The control loops of a site: readings in, output writes and ``control.*`` records out, failures as alerts.

Seam used by the runtime (the same shape as the alert engine's):

- ``observe(readings)``: every poll's readings (sync, cheap): sensor values and feedback;
- ``run()``: the task -- decide every control at least every ``tick`` seconds and at once
  after a reading, write outputs in tasks, commit records through ``emit(lane, body, topic)``;
- ``override(control, state, until, by)``: a person's manual state, for the command service;
- ``snapshot()``: each control's mode, output and faults for ``…/state``;
- ``stop()``: outputs to their safe state, overrides saved.

Nothing here waits for the network: the loops run while the link is down, and
their records wait in the outbox like any other.  A control's own failure -- an
output that does not confirm a switch, a stale sensor -- is raised through the
alert engine's external-source API (``control.failed``, ``control.sensor_stale``;
``rules.external`` gives them a class), never a switch of its own.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.records import Reading
from gateway.alerts.wakeup import Wakeup
from gateway.controls import overrides as saved
from gateway.controls.control import Control, Expect, build
from gateway.controls.loop import Decision, Override, decide, stale

log = logging.getLogger("canopy.controls")

MAX_PENDING = 1000  # records waiting for the outbox (it refuses them: disk full); older ones are dropped and counted
RETRY = 1.0
FAILED, STALE = "control.failed", "control.sensor_stale"
COUNTERS = ("switched", "overrides", "overrides_refused", "faults", "stale", "records_dropped", "emit_errors", "state_errors")


@dataclass(frozen=True)
class OverrideResult:
    ok: bool
    reason: str | None = None  # unknown_control, bad_state, bad_until
    detail: str | None = None
    until: float | None = None


class ControlService:
    def __init__(self, cfg, clock, emit: Callable[[str, bytes, str | None], Awaitable[object]],
                 write_point: Callable[[str, str, object], Awaitable[None]] | None = None, *, alerts=None,
                 state_dir: str | None = None, tick: float = 1.0):
        """``alerts``: the AlertEngine (or None: failures are logged and shown in the snapshot only)."""
        self.clock = clock
        self.emit = emit
        self.alerts = alerts
        now = clock.time()
        self.controls: dict[str, Control] = {c.id: build(c, cfg, now, write_point) for c in cfg.site.controls}
        self.by_point: dict[tuple[str, str], list[tuple[Control, str]]] = {}
        for c in self.controls.values():
            self.by_point.setdefault(c.sensor, []).append((c, "sensor"))
            self.by_point.setdefault(c.feedback_point, []).append((c, "feedback"))
        self.counters = {k: 0 for k in COUNTERS}
        self.pending: deque[bytes] = deque()
        self.retry_at = 0.0
        self.on_change: Callable[[], None] | None = None  # the runtime may set it to republish …/state
        self._changed = False
        self._wake = Wakeup(clock, tick)
        self.tick = tick
        self.path = saved.path_in(state_dir, cfg.site.site, cfg.site.gateway) if state_dir else None
        self._dirty = False
        for cid, o in (saved.load(self.path) if self.path else {}).items():
            if cid in self.controls and o.until > now:
                self.controls[cid].state.override = o
                log.info("control %s: manual %s until %.0f restored", cid, "on" if o.on else "off", o.until)

    # ------------------------------------------------------------------ inputs
    def observe(self, readings: list[Reading]) -> None:
        for r in readings:
            for c, role in self.by_point.get((r.device, r.point), ()):
                if role == "sensor":
                    c.observe_sensor(r)
                else:
                    c.observe_feedback(r)
        if readings:
            self._wake.set()

    def override(self, control: str, state, until: float | None = None, by: str | None = None) -> OverrideResult:
        """Hold ``control`` ``on`` or ``off`` until ``until`` (epoch s, at most its max_override away); ``auto`` ends it.

        A refusal changes nothing; it is counted (``overrides_refused``) and says why.
        """
        c = self.controls.get(control)
        state = {True: "on", False: "off"}.get(state, state) if isinstance(state, bool) else state
        now = self.clock.time()
        refusal = self._refusal(c, control, state, until, now)
        if refusal is not None or c is None:
            self.counters["overrides_refused"] += 1
            log.warning("override of %s refused (%s): %s", control, refusal and refusal.reason, refusal and refusal.detail)
            return refusal or OverrideResult(False, "unknown_control")
        if state == "auto":
            old = c.state.override
            if old is not None:
                c.state.override = None
                self._record(c.words.override(now, state="auto", until=old.until, by=by, ended="cancelled"))
                self._overrides_changed(c, now)
            return OverrideResult(True)
        c.state.override = Override(state == "on", float(until), by, now)  # type: ignore[arg-type]
        self.counters["overrides"] += 1
        self._record(c.words.override(now, state=state, until=float(until), by=by))  # type: ignore[arg-type]
        log.info("control %s: manual %s by %s until %.0f", control, state, by, until)
        self._overrides_changed(c, now)
        return OverrideResult(True, until=float(until))  # type: ignore[arg-type]

    def _refusal(self, c: Control | None, control: str, state, until, now: float) -> OverrideResult | None:
        if c is None:
            return OverrideResult(False, "unknown_control", f"no control {control!r} (controls: {', '.join(sorted(self.controls)) or 'none'})")
        if state == "auto":
            return None
        if state not in ("on", "off"):
            return OverrideResult(False, "bad_state", f"state {state!r}: on, off or auto")
        if not isinstance(until, (int, float)) or isinstance(until, bool) or not math.isfinite(until) or until <= now:
            return OverrideResult(False, "bad_until", "until must be a time in the future (epoch seconds)")
        if until - now > c.cfg.max_override:
            return OverrideResult(False, "bad_until", f"at most {c.cfg.max_override:g} s ahead (max_override of {control})")
        return None

    def _overrides_changed(self, c: Control, now: float) -> None:
        self._dirty = True
        self._step(c, now)  # a person's wish takes effect at once
        self._wake.set()

    # ------------------------------------------------------------------ decisions
    def step(self, now: float | None = None) -> None:
        """Decide every control at ``now`` and start the writes that are due."""
        now = self.clock.time() if now is None else now
        for c in self.controls.values():
            self._step(c, now)

    def _step(self, c: Control, now: float) -> None:
        st = c.state
        if st.override is not None and now >= st.override.until:
            self._record(c.words.override(now, state="on" if st.override.on else "off", until=st.override.until,
                                          by=st.override.by, ended="expired"))
            st.override = None
            self._dirty = True
        self._judge_feedback(c, now)
        self._sensor_alert(c, now)
        d = decide(c.spec, st, now)
        if d.on is not None and d.on != st.commanded:
            self._switch(c, d, now)
        if d.mode != st.mode:
            log.info("control %s: mode %s -> %s (%s)", c.id, st.mode, d.mode, d.reason or "-")
            st.mode = d.mode
            self._changed = True
        try:
            c.writer.drive(now, self._wake.set)
        except RuntimeError:  # no running loop (a test deciding by hand): the task writes later
            pass

    def _switch(self, c: Control, d: Decision, now: float) -> None:
        st = c.state
        previous, st.commanded, st.switched_at, st.reason = st.commanded, d.on, now, d.reason
        value = c.value_of(bool(d.on))
        c.writer.want(value)
        c.expect = Expect(bool(d.on), now, now + c.confirm_within)
        o = st.override if d.mode == "override" else None
        self._record(c.words.switched(
            now, on=bool(d.on), previous=previous, value=value, reason=d.reason, mode=d.mode, reading=c.reading,
            setpoint=c.spec.timetable.setpoint(now, c.spec.setpoint), by=o.by if o else None, until=o.until if o else None,
            stale_after=c.spec.stale_after if d.mode == "safe" else None))
        self.counters["switched"] += 1
        self._changed = True
        log.info("control %s: %s -> %s (%s, %s)", c.id, previous, d.on, d.mode, d.reason)

    def _judge_feedback(self, c: Control, now: float) -> None:
        """A switch confirmed or failed; an output found not doing what it was told is written again."""
        seen, exp, st = c.seen, c.expect, c.state
        if exp is not None:
            if seen is not None and seen.ts > exp.since and seen.on == exp.on:
                c.expect, c.confirmed_at, c.judged = None, seen.ts, seen.ts
                self._resolve(c, FAILED, "failed_alert", "confirmed")
            elif now >= exp.deadline:
                c.expect = None
                self._fault(c, now)
            return
        if (st.commanded is None or seen is None or seen.on is None or seen.on == st.commanded
                or seen.ts <= max(c.judged, st.switched_at or 0.0)):
            return
        c.judged = seen.ts
        c.writer.want(c.value_of(st.commanded), again=True)
        c.expect = Expect(st.commanded, now, now + c.confirm_within)
        self._record(c.words.switched(now, on=st.commanded, previous=st.commanded, value=c.value_of(st.commanded),
                                      reason="restore", mode=st.mode, reading=c.reading, setpoint=c.spec.setpoint,
                                      feedback=seen.raw if isinstance(seen.raw, (str, int, float, bool)) else None))
        log.warning("control %s: feedback %s shows %s, commanded %s; writing it again", c.id, c.feedback_point, seen.raw,
                    st.commanded)

    def _fault(self, c: Control, now: float) -> None:
        seen = c.seen
        c.state.fault_until = now + c.spec.retry_after
        c.faults += 1
        self.counters["faults"] += 1
        self._changed = True
        log.error("control %s: output %s/%s not confirmed within %g s (feedback %s); safe state for %g s", c.id,
                  c.cfg.output.device, c.cfg.output.point, c.confirm_within, seen.raw if seen else "none", c.spec.retry_after)
        raw = seen.raw if seen is not None and isinstance(seen.raw, (str, int, float, bool)) else "none"
        self._raise(c, FAILED, "failed_alert", {"expected": bool(c.state.commanded), "value": raw,
                                                "point": c.feedback_point[1], "duration": c.confirm_within})

    def _sensor_alert(self, c: Control, now: float) -> None:
        if stale(c.spec, c.state, now):
            if not c.stale_alert:
                self.counters["stale"] += 1
                since = c.state.value_ts if c.state.value_ts is not None else c.state.started
                self._raise(c, STALE, "stale_alert", {"duration": now - since, "point": c.sensor[1]}, device=c.sensor[0])
        elif c.stale_alert:
            self._resolve(c, STALE, "stale_alert", "sensor back")

    # ------------------------------------------------------------------ alerts
    def _raise(self, c: Control, rule: str, flag: str, facts: dict, device: str | None = None) -> None:
        setattr(c, flag, True)
        if self.alerts is None:
            return
        labels = {f"label:{tag}": c.cfg.label(tag) for tag in ("en", "zh-CN")}
        try:
            self.alerts.raise_alert(rule=rule, subject=c.id, severity="warning", device=device or c.cfg.output.device,
                                    facts={"control": c.id, **labels, **facts}, readings=[c.reading] if c.reading else [])
        except Exception:  # the alert engine must never take a control down
            log.exception("control %s: cannot raise %s", c.id, rule)

    def _resolve(self, c: Control, rule: str, flag: str, by: str) -> None:
        if not getattr(c, flag):
            return
        setattr(c, flag, False)
        if self.alerts is not None:
            try:
                self.alerts.resolve_alert(rule, c.id, by=by)
            except Exception:
                log.exception("control %s: cannot resolve %s", c.id, rule)

    # ------------------------------------------------------------------ records and the task
    def _record(self, body: bytes) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.pending.popleft()
            self.counters["records_dropped"] += 1
        self.pending.append(body)
        self._wake.set()

    async def flush(self) -> None:
        """Commit the records decided so far, in order; a failing commit keeps them for a retry a second later."""
        now = self.clock.time()
        while self.pending and now >= self.retry_at:
            try:
                await self.emit("event", self.pending[0], None)
            except Exception as exc:  # outbox closing or failing: keep it, try again
                self.counters["emit_errors"] += 1
                self.retry_at = now + RETRY
                log.error("cannot commit a control record (%s: %s); kept, retrying", type(exc).__name__, exc)
                return
            self.pending.popleft()

    async def save(self) -> None:
        if not self._dirty or self.path is None:
            self._dirty = False
            return
        self._dirty = False
        body = saved.encode({cid: c.state.override for cid, c in self.controls.items() if c.state.override is not None})
        try:
            await asyncio.to_thread(saved.save, self.path, body)
        except OSError as exc:
            self.counters["state_errors"] += 1
            self._dirty = True
            log.error("cannot write control state %s: %s", self.path, exc)

    async def drain(self) -> None:
        """What is due now: decide, commit records, save overrides, tell the runtime (tests call it directly)."""
        self.step()
        await self.flush()
        await self.save()
        if self._changed:
            self._changed = False
            if self.on_change is not None:
                try:
                    self.on_change()
                except Exception:
                    log.exception("on_change hook failed")

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                await self.drain()
                now = self.clock.time()
                await self._wake.sleep(max(now + RETRY, self.retry_at) if self.pending else now + self.tick)
        except asyncio.CancelledError:
            for c in self.controls.values():
                c.writer.cancel()
            raise

    async def stop(self, timeout: float = 1.0) -> None:
        """Outputs to their safe state (``hold``: as they are), then the overrides to the file."""
        safe = [c for c in self.controls.values() if c.cfg.safe_state != "hold" and c.writer.write_point is not None]
        for c in self.controls.values():
            c.writer.cancel()
        writes = [c.writer.write_point(c.cfg.output.device, c.cfg.output.point, c.value_of(c.cfg.safe_state == "on"))
                  for c in safe]  # type: ignore[misc]
        try:
            done = await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), timeout) if writes else []
        except asyncio.TimeoutError:
            done = [TimeoutError(f"no answer within {timeout:g} s")] * len(safe)
        for c, res in zip(safe, done):
            if isinstance(res, BaseException):
                log.warning("control %s: safe state not written at stop (%s)", c.id, res)
        self._dirty = True
        await self.save()

    def snapshot(self) -> dict:
        out = {}
        now = self.clock.time()
        for c in self.controls.values():
            st, o = c.state, c.state.override
            out[c.id] = {"mode": st.mode, "output": None if st.commanded is None else ("on" if st.commanded else "off"),
                         "since": st.switched_at, "value": st.value, "value_ts": st.value_ts,
                         "setpoint": c.spec.timetable.setpoint(now, c.spec.setpoint),
                         "override": {"state": "on" if o.on else "off", "until": o.until, "by": o.by} if o else None,
                         "confirming": c.expect is not None, "confirmed_at": c.confirmed_at, "faults": c.faults,
                         "fault_until": st.fault_until, "sensor_stale": c.stale_alert, **c.writer.snapshot()}
        return out
