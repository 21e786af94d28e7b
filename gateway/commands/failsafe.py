"""Valves at start-up and shutdown: driven closed before anything else, and what a crash cut short reported.

At start-up every valve is written closed and read back, device by device in
parallel (a dead device costs one timeout, not one per valve), before the
broker connection is opened; a valve with feedback is then judged in the
background (start-up does not wait ``confirm_within``), and one that does not
confirm is retried like any failing close.  A cycle the store still holds was
cut short by a crash: ``valve.interrupted``, once.  At shutdown each valve is
closed and judged by its coil (there are 1.2 s); an open cycle ends with
``valve.closed``, reason ``shutdown``.
"""

from __future__ import annotations

import asyncio
import logging

from core.records import event_body
from gateway.commands.audit import describe
from gateway.commands.feedback import feedback_key

log = logging.getLogger("canopy.commands")

INTERRUPTED_DETAIL = "the gateway stopped during this cycle (crash or power loss); the valve was driven closed at start-up"


class FailSafe:
    def __init__(self, valves):
        self.valves = valves
        self.jobs = valves.jobs
        self.audit = valves.audit
        self.store = valves.store
        self.clock = valves.clock

    async def close_all_at_start(self) -> dict[str, dict | None]:
        """Every valve driven closed, device by device in parallel: {valve id: state read back, or None}."""
        closed: dict[str, dict | None] = {}
        by_device: dict[str, list] = {}
        for v in self.valves.by_id.values():
            by_device.setdefault(v.cfg.device, []).append(v)
        await asyncio.gather(*(self._close_device_at_start(valves, closed) for valves in by_device.values()))
        return closed

    async def _close_device_at_start(self, valves: list, closed: dict) -> None:
        """One device's valves, one after the other; a dead device costs one timeout, not one per valve."""
        error = None
        for v in valves:
            if v.device is None:
                closed[v.id] = None
                continue
            if error is None:
                try:
                    state = await self.valves.write_and_read(v, False)
                    if state.get(v.cfg.point) is False:
                        closed[v.id] = state
                        if v.cfg.feedback is not None:  # start-up does not wait: the feedback is judged meanwhile
                            self.jobs.spawn(self._verify_closed(v, "startup", state))
                        continue
                    error = f"{v.cfg.point} still reads open"
                except Exception as exc:
                    error = describe(exc)
            log.error("valve %s: cannot close at start-up (%s); retrying in the background", v.id, error)
            closed[v.id] = None
            v.busy = True
            v.close_failing = True
            self.jobs.spawn(self.valves.retry_close(v, "startup", error))

    async def _verify_closed(self, v, reason: str, state: dict) -> None:
        async with v.lock:
            conf = await self.valves.feedback.wait_for(v, False, state.get(feedback_key(v)))
            if conf.confirmed or self.jobs.stopping:
                return
            v.busy = True
            await self.valves.drive_closed(v, reason, first_error=conf.words(v, False))
            v.busy = False
            self.valves.on_slot_free()

    async def report_interrupted(self, interrupted: dict[str, dict], closed: dict, now: float) -> None:
        """A cycle the store still holds was cut short by a crash: say so, and forget it once the valve is closed."""
        for valve_id, cycle in interrupted.items():
            await self.audit.emit("event", event_body(
                now, "valve.interrupted", valve=valve_id, source=cycle.get("source"), issuer=cycle.get("issuer"),
                command=cycle.get("command"), program=cycle.get("program"), opened_at=cycle.get("opened_at"),
                planned_close_at=cycle.get("ends_at"), duration_s=cycle.get("duration"),
                device_timer=cycle.get("device_timer", False), closed=closed.get(valve_id) is not None,
                state=closed.get(valve_id), detail=INTERRUPTED_DETAIL))
            if closed.get(valve_id) is not None or valve_id not in self.valves.by_id:
                self.store.clear_cycle(valve_id)

    async def stop_valve(self, v) -> bytes | None:
        """Clean shutdown: closed, and the ``valve.closed`` record of a running cycle (emitted by the caller)."""
        if v.device is None:
            return None
        cycle = v.cycle
        state = await self.valves.write_and_read(v, False)
        if state.get(v.cfg.point) is not False:
            log.error("valve %s: still reads open at shutdown; reported as interrupted at the next start", v.id)
            return None
        v.cycle = None
        if cycle is None:  # an open cut short by the shutdown itself is on disk only
            cycle = self.store.cycles().get(v.id)
        if cycle is not None:
            self.store.clear_cycle(v.id)
            return self.valves.closed_body(v, cycle, "shutdown", state)
        return None
