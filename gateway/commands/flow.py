"""The flow meter of a group of valves: the flow interlock, and the two rules built in where a meter is configured.

Valves name their meter in ``interlocks.flow``; valves on one meter are judged together:

- some open, each ``settle`` seconds after it opened: at most ``idle_max`` is **no flow**
  (an alarm: a closed main, a dry well, a valve that did not open); below the sum of their
  ``min`` a blocked line, above the sum of their ``max`` a leak.  Each stops those valves
  (``valve.closed``, interlock ``flow``) and keeps the interlock **active**: new openings on
  the meter are refused for ``block_for`` (it survives a restart);
- all closed, ``settle`` seconds after the last change: more than ``idle_max`` is **flow while
  closed** (an alarm: a valve stuck open, a burst pipe), raised once and cleared when the flow
  stops (``valve.flow_alarm`` / ``valve.flow_alarm_cleared``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from core.records import event_body
from core.timefmt import fmt_time
from gateway.commands.interlocks import blocked_words, is_number, with_unit

log = logging.getLogger("canopy.commands")

NO_FLOW, WHILE_CLOSED = "no_flow", "flow_while_closed"


@dataclass
class Meter:
    key: tuple[str, str]
    valves: list = field(default_factory=list)
    unit: str | None = None
    alarm: bool = False  # flow while closed is in force
    blocked_until: float | None = None  # wall clock: openings refused until then
    blocked_why: str | None = None

    @property
    def name(self) -> str:
        return f"{self.key[0]}.{self.key[1]}"

    def flows(self, value) -> str:
        return with_unit(value, self.unit)

    @property
    def idle_max(self) -> float:
        return max(v.cfg.interlocks.flow.idle_max for v in self.valves)

    @property
    def settle(self) -> float:
        return max(v.cfg.interlocks.flow.settle for v in self.valves)


class FlowWatch:
    def __init__(self, valves, readings, units: dict, *, clock, jobs, audit, store, tz=None):
        self.valves = valves
        self.readings = readings
        self.clock = clock
        self.jobs = jobs
        self.audit = audit
        self.store = store
        self.tz = tz
        self.meters: dict[tuple[str, str], Meter] = {}
        for v in valves.by_id.values():
            fl = v.cfg.interlocks.flow if v.cfg.interlocks else None
            if fl is not None:
                key = (fl.device, fl.point)
                self.meters.setdefault(key, Meter(key, unit=units.get(key))).valves.append(v)
        self.by_valve = {v.id: m for m in self.meters.values() for v in m.valves}
        valves.flow_block = self.blocked

    def restore(self, now: float) -> None:
        """At start-up: a flow interlock still active stays active."""
        for m in self.meters.values():
            saved = self.store.get(f"flow_block:{m.name}")
            if isinstance(saved, dict) and isinstance(saved.get("until"), (int, float)) and saved["until"] > now:
                m.blocked_until, m.blocked_why = float(saved["until"]), str(saved.get("why"))

    def blocked(self, v) -> tuple[str, str] | None:
        """The flow interlock of ``v``'s meter, while it is active: ("flow", words for people)."""
        m = self.by_valve.get(v.id)
        if m is None or m.blocked_until is None:
            return None
        if self.clock.time() >= m.blocked_until:
            m.blocked_until = m.blocked_why = None
            self.store.put(f"flow_block:{m.name}", None)
            return None
        return "flow", blocked_words("flow", f"{m.blocked_why}; openings on {m.name} are refused until "
                                             f"{fmt_time(m.blocked_until, self.tz)}")

    def snapshot(self) -> dict:
        now = self.clock.time()
        return {m.name: {"flow_while_closed": m.alarm,
                         **({"blocked_until": round(m.blocked_until, 3)} if m.blocked_until and m.blocked_until > now else {})}
                for m in self.meters.values()}

    # ---------------------------------------------------------------- judging a reading
    def observe(self, keys: set) -> None:
        """A poll's readings: judge each meter that was read."""
        mono = self.clock.monotonic()
        for key, m in self.meters.items():
            if key not in keys:
                continue
            value = self.readings.value(key)
            if not is_number(value) or any(v.busy for v in m.valves):
                continue
            running = [v for v in m.valves if v.cycle is not None and not v.closing]
            if running:
                if all(mono - v.opened_mono >= v.cfg.interlocks.flow.settle for v in running):
                    self._judge_open(m, value, running)
            elif not any(v.cycle is not None or v.closing for v in m.valves):
                if mono - max(v.changed_mono for v in m.valves) >= m.settle:
                    self._judge_closed(m, value)

    def _judge_open(self, m: Meter, value: float, running: list) -> None:
        lo = sum(v.cfg.interlocks.flow.min for v in running)
        hi = sum(v.cfg.interlocks.flow.max for v in running)
        names = ", ".join(v.id for v in running)
        if value <= m.idle_max:
            words = (f"no flow at {m.name} ({m.flows(value)}; at most {m.flows(m.idle_max)} counts as none) with "
                     f"{names} open: a closed main, a dry source or a valve that did not open?")
            self._alarm(m, NO_FLOW, value, m.idle_max, running, words)
        elif value < lo:
            words = f"flow {m.flows(value)} is below {m.flows(f'{lo:g}')} at {m.name} (blocked line?)"
        elif value > hi:
            words = f"flow {m.flows(value)} is above {m.flows(f'{hi:g}')} at {m.name} (leak?)"
        else:
            return
        for v in running:
            v.closing = True
            self.jobs.spawn(self.valves.close_job(v, "interlock", v.cycle["cid"], "flow", words))
        self._block(m, running, words)

    def _judge_closed(self, m: Meter, value: float) -> None:
        if value > m.idle_max and not m.alarm:
            m.alarm = True
            words = (f"flow {m.flows(value)} at {m.name} with every valve on it closed "
                     f"({', '.join(v.id for v in m.valves)}): a valve stuck open, or a leak")
            self._alarm(m, WHILE_CLOSED, value, m.idle_max, m.valves, words)
        elif value <= m.idle_max and m.alarm:
            m.alarm = False
            log.info("flow at %s stopped (%s)", m.name, m.flows(value))
            self.jobs.spawn(self.audit.emit("event", event_body(self.clock.time(), "valve.flow_alarm_cleared", meter=m.name,
                                                                rule=WHILE_CLOSED, flow=value, unit=m.unit)))

    def _alarm(self, m: Meter, rule: str, value: float, limit: float, valves: list, words: str) -> None:
        log.error("valve flow alarm (%s): %s", rule, words)
        self.jobs.spawn(self.audit.emit("alarm", event_body(self.clock.time(), "valve.flow_alarm", meter=m.name, rule=rule,
                                                            flow=value, limit=limit, unit=m.unit,
                                                            valves=[v.id for v in valves], detail=words)))

    def _block(self, m: Meter, running: list, words: str) -> None:
        block_for = max(v.cfg.interlocks.flow.block_for for v in running)
        if block_for <= 0:
            return
        now = self.clock.time()
        m.blocked_until, m.blocked_why = now + block_for, f"{words} at {fmt_time(now, self.tz)}"
        self.store.put(f"flow_block:{m.name}", {"until": m.blocked_until, "why": m.blocked_why})
