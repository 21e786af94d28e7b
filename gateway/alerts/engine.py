"""The alert engine: rules over readings -> alerts with lifecycle, escalation, acks and local outputs.

Seam used by the runtime:
- ``observe(readings)``: called with every poll's readings (sync, cheap);
- ``run()``: the task for timers (debounce, inactivity, stale, escalation),
  for writing records and the state file, and for driving local outputs;
- ``on_ack(topic, payload)``: signed acks arriving on ``…/alert/ack`` (sync, never raises;
  checked in acks.py, decided and answered in ack_desk.py);
- ``on_delivered(lane, first, last)``: PUBACKs of outbox records (optional hook);
- ``snapshot()``: open alerts and counters for ``…/state``;
- ``raise_alert(...)`` / ``resolve_alert(...)``: alerts from other services
  (the camera's fall detector), with the same lifecycle and escalation.

What each record says and where it goes is in records.py; the queue that
commits records to the outbox (alarms first, retries) in emission.py; when
the state file is written in persistence.py.  Order of work for a new alert:
local outputs are started first (they do not wait for anything), the state
file is written, then the record is committed through ``emit``.  A record
decided but not yet committed stays listed in the state file (``pending``)
and is emitted again after a restart; an alert is never raised twice for one
episode.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Awaitable, Callable

from gateway.alerts import state as statefile
from gateway.alerts.ack_desk import AckDesk
from gateway.alerts.ack_ids import SeenAcks
from gateway.alerts.acks import AckChecker, ack_keys
from gateway.alerts.emission import RecordQueue
from gateway.alerts.lifecycle import Alert, ChainStep, Episode, chains_of, escalation_due, next_escalation, on_new_episode, prune
from gateway.alerts.locations import Locations
from gateway.alerts.messages import render
from gateway.alerts.outputs import Outputs
from gateway.alerts.persistence import SavedState, StateSaver
from gateway.alerts.records import Record, acknowledged_record, alarm_record, groups_reached, is_alarm, resolved_record
from gateway.alerts.rules import Change, InactivityRule, build_rules
from gateway.alerts.wakeup import Wakeup

log = logging.getLogger("canopy.alerts")

COUNTERS = ("raised", "escalated", "acknowledged", "resolved", "folded", "ack_ok", "ack_rejected",
            "emit_errors", "state_errors")


class AlertEngine:
    """Alerts from rules and from other services, with one lifecycle (the seam is in the module docstring)."""

    def __init__(self, cfg, clock, emit: Callable[[str, bytes, str | None], Awaitable[object]], write_point=None,
                 state_dir: str | None = None, *, max_sleep: float = 5.0):
        self.cfg = cfg
        self.clock = clock
        site = cfg.site
        self.rc = site.rules
        self.lang = site.language
        self.site_id, self.gateway_id = site.site, site.gateway
        self.specs = {r.id: r for r in self.rc.rules}
        self.ruleset = build_rules(cfg)
        self.locations = Locations(cfg, self.site_id)
        self.chains: dict[str, list[ChainStep]] = chains_of(self.rc)
        self.alerts: dict[str, Alert] = {}
        self.episodes: dict[str, Episode] = {}
        self.counter = 0
        self.outputs = Outputs(write_point)  # write_point: async (device_id, point, value) -> None
        self.counters = {k: 0 for k in COUNTERS}
        self.path = statefile.file_in(state_dir, self.site_id, self.gateway_id) if state_dir else None
        self.on_change: Callable[[], None] | None = None  # the runtime may set it to republish …/state
        self.records = RecordQueue(emit, self._record, self.counters)
        self.saver = StateSaver(self.path, clock, self._state, self.counters, {"site": self.site_id, "gateway": self.gateway_id})
        self._changed = False
        self._wake = Wakeup(clock, max_sleep)
        self._lock = asyncio.Lock()
        self.seen_acks = SeenAcks()
        checker = AckChecker(self.site_id, self.gateway_id, site.commands, ack_keys(site.commands, cfg.base_dir), self.seen_acks)
        self.acks = AckDesk(checker, self.records, self.counters, self._wake.set)
        self._has_inactivity = any(isinstance(r, InactivityRule) for r in self.ruleset.rules)
        now = clock.time()
        self.ruleset.start(now)
        saved = self.saver.load()
        if saved is not None:
            self._restore(saved, now)

    @property
    def emit(self) -> Callable[[str, bytes, str | None], Awaitable[object]]:
        """The outbox's commit (``emit(lane, body, topic)``); tests may replace it."""
        return self.records.emit

    @emit.setter
    def emit(self, fn) -> None:
        self.records.emit = fn

    # ------------------------------------------------------------------ state file
    def _restore(self, saved: SavedState, now: float) -> None:
        """Open alerts, episodes, rule clocks and outputs as they were; records not yet sent are queued."""
        self.counter = saved.counter
        self.alerts = {a.id: a for a in saved.alerts}
        self.episodes = self.ruleset.restore(saved.episodes, saved.rules)
        self.outputs.load(saved.outputs)
        self.seen_acks.load(saved.acks)
        for a in list(self.alerts.values()):
            self.records.requeue(a)  # decided before the restart, not committed yet
            rule = self.ruleset.by_id.get(a.rule)
            if a.open and a.source == "rule" and (rule is None or a.subject not in rule.subject_ids() or not self.specs[a.rule].alert):
                log.info("alert %s: rule %s or its subject %s is gone from the config; resolving it", a.id, a.rule, a.subject)
                self._resolve(a, now, "rule removed")
                continue
            if a.open and a.acked_at is None and a.outputs:
                self.outputs.hold(a.id, a.outputs)
        opened = [a for a in self.alerts.values() if a.open]
        if opened or len(self.records):
            log.info("alert state restored: %d open alert(s), %d record(s) to send", len(opened), len(self.records))

    def _state(self) -> SavedState:
        return SavedState(self.counter, list(self.alerts.values()), self.episodes, self.ruleset.dump(), self.outputs.dump(),
                          self.seen_acks.dump(self.clock.time()))

    async def _save(self) -> None:
        self.alerts = prune(self.alerts, self.rc.history)
        await self.saver.save()

    def save_now(self) -> None:
        """Synchronous save (shutdown)."""
        self.alerts = prune(self.alerts, self.rc.history)
        self.saver.save_now()

    # ------------------------------------------------------------------ inputs
    def observe(self, readings) -> None:
        for r in readings:
            self.ruleset.observe(r)
        if self._has_inactivity and readings:
            self.saver.mark_lazy()
        now = self.clock.time()
        self.tick(max(now, max((r.ts for r in readings), default=now)))

    def tick(self, now: float | None = None) -> None:
        """Evaluate rules and escalations at ``now``; queue what has to be written."""
        now = self.clock.time() if now is None else now
        for ch in self.ruleset.evaluate(now):
            self._on_change(ch, now)
        self._escalate(now)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self.outputs.drive(now, self._output_done)  # at once: never behind a slow save or a stuck commit
        if self.records.due(now) or self.saver.due(now) or self.outputs.due(now) or self._next_wakeup(now) < self._wake.until:
            self._wake.set()

    def on_ack(self, topic: str, payload: bytes) -> None:
        """A message on …/alert/ack.  Refusals change nothing and are counted and answered, never raised."""
        try:
            if self.acks.handle(bytes(payload), self.clock.time(), self.alerts, self.groups_of, self.apply_ack):
                self.saver.mark()  # its id (replay protection) reaches the state file with what it changed
                self._wake.set()
        except Exception:  # belt and braces: the uplink's handler must never see an exception
            self.counters["ack_rejected"] += 1
            log.exception("ack handling failed")

    def on_delivered(self, lane: str, first: int, last: int) -> None:
        """The broker acknowledged records ``first..last`` of ``lane`` (PUBACK)."""
        now = self.clock.time()
        for aid in self.records.delivered(lane, first, last):
            a = self.alerts.get(aid)
            if a is not None and a.delivered_at is None:
                a.delivered_at = now
                self.saver.mark_lazy()
                self._changed = True

    # ------------------------------------------------------------------ lifecycle
    def _on_change(self, ch: Change, now: float) -> None:
        spec = self.specs[ch.rule]
        if not spec.alert:
            return
        ep = self.episodes.setdefault(f"{ch.rule}|{ch.subject}", Episode())
        if ep.active == ch.active:
            return
        ep.active = ch.active
        self.saver.mark()
        last = self.alerts.get(ep.alert) if ep.alert else None
        if ch.active:
            self._new_episode(spec, ch, ep, last, now)
        elif last is not None and last.open:
            last.condition = False
            last.readings = ch.evidence or last.readings
            if spec.resolve == "auto":
                self._resolve(last, now, "condition")

    def _new_episode(self, spec, ch: Change, ep: Episode, last: Alert | None, now: float) -> None:
        """Raise an alert for the episode, or fold it into the last one (re-raise policy)."""
        if on_new_episode(spec.reraise, spec.dead_time, ep, last is not None and last.open, now) == "raise":
            self._raise(spec, ch, ep, now)
            return
        self._fold(ep, last)
        if last is not None:
            last.condition = True
        log.info("rule %s (%s): new episode folded into alert %s (reraise: %s)", ch.rule, ch.subject, ep.alert, spec.reraise)

    def _fold(self, ep: Episode, last: Alert | None) -> None:
        ep.suppressed += 1
        self.counters["folded"] += 1
        if last is not None:
            last.episodes += 1

    def _raise(self, spec, ch: Change, ep: Episode, now: float) -> None:
        self._new_alert(spec, ch.subject, spec.severity, spec.class_, self.locations.device_of(ch),
                        self.locations.for_change(spec, ch), ch.evidence, ch.facts, spec.outputs, ep, now)

    def _new_alert(self, spec, subject: str, severity: str, cls: str | None, device, location: dict, readings: list,
                   facts: dict, outputs_cfg, ep: Episode, now: float, source: str = "rule") -> Alert:
        self.counter += 1
        aid = f"{self.counter}-{secrets.token_hex(2)}"
        facts = {k: v for k, v in facts.items() if isinstance(v, (str, int, float, bool)) or v is None}
        if device and "device" not in facts:
            facts["device"] = device
        outputs = [{"device": o.device, "point": o.point, "value": o.value, "release": o.release_value} for o in outputs_cfg]
        a = Alert(id=aid, rule=spec.id, subject=subject, severity=severity, cls=cls, raised_at=now,
                  device=device, location=location, readings=list(readings)[:8], facts=facts,
                  message=render(spec, facts, location, severity, self.lang), outputs=outputs, source=source)
        self.alerts[aid] = a
        ep.alert, ep.raised_at, ep.acked, ep.suppressed = aid, now, False, 0
        if outputs:
            self.outputs.hold(aid, outputs)
        self.records.add(a, "raised")
        self._decided()
        self.counters["raised"] += 1
        log.warning("alert %s raised: %s (rule %s, %s)", aid, a.message, spec.id, severity)
        self._wake.set()
        return a

    def _decided(self) -> None:
        """An alert changed: save before its record is committed, and republish …/state."""
        self.saver.mark()
        self._changed = True

    # ------------------------------------------------------------------ other services
    def raise_alert(self, *, rule: str, subject: str, severity: str = "warning", device: str | None = None,
                    location: dict | None = None, facts: dict | None = None, readings: list | None = None,
                    ts: float | None = None, cls: str | None = None) -> str:
        """An alert from another service (``rule`` like ``camera.fall``); returns its alert id.

        Same lifecycle as rule alerts: one open alert per rule and subject (a
        second call while it is open is folded into it), escalation by the
        class given in ``rules.external.<rule>`` (or ``cls``), closed by an ack
        with ``resolve`` or by :meth:`resolve_alert`.
        """
        spec = self.rc.external_spec(rule)
        severity = spec.severity or (severity if severity in ("critical", "warning", "info") else "warning")
        cls = cls if cls in self.chains else spec.class_
        now = self.clock.time()
        ep = self.episodes.setdefault(f"{rule}|{subject}", Episode())
        last = self.alerts.get(ep.alert) if ep.alert else None
        if on_new_episode(spec.reraise, spec.dead_time, ep, last is not None and last.open, now) == "fold":
            self._fold(ep, last)
            self.saver.mark()
            self._wake.set()
            return ep.alert or ""
        readings = [r for r in (readings or []) if isinstance(r, dict)]
        a = self._new_alert(spec, str(subject), severity, cls, device, self.locations.for_external(location, device), readings,
                            dict(facts or {}), spec.outputs, ep, now, source="external")
        a.condition = True
        return a.id

    def resolve_alert(self, rule: str, subject: str, by: str = "condition") -> bool:
        """Close the open alert of an external source (the fall is over); False if there is none."""
        ep = self.episodes.get(f"{rule}|{subject}")
        a = self.alerts.get(ep.alert) if ep is not None and ep.alert else None
        if a is None or not a.open:
            return False
        a.condition = False
        self._resolve(a, self.clock.time(), by)
        self._wake.set()
        return True

    def _resolve(self, a: Alert, now: float, by: str) -> None:
        a.resolved_at = now
        a.resolved_by = by
        self.outputs.release(a.id)
        self.records.add(a, "resolved")
        self._decided()
        self.counters["resolved"] += 1
        log.info("alert %s resolved (%s)", a.id, by)

    def groups_of(self, a: Alert) -> list[str]:
        """The recipient groups the alert has reached so far."""
        return groups_reached(self.chains.get(a.cls or "") or [], a.step)

    def apply_ack(self, a: Alert, by: str, resolve: bool, note: str | None, now: float, *,
                  issuer: str | None = None, ack_id: str | None = None) -> bool:
        """Acknowledge (stops escalation, releases outputs) and optionally resolve; False if nothing changed.

        Only for acks that passed every check (acks.py, ack_desk.py): nothing else may call it.
        """
        changed = False
        if a.acked_at is None:
            a.acked_at, a.acked_by, a.note, a.acked_issuer, a.ack_id = now, by, note, issuer, ack_id
            ep = self.episodes.get(a.key)
            if ep is not None and ep.alert == a.id:
                ep.acked = True
            self.outputs.release(a.id)
            self.records.add(a, "acknowledged")
            self.counters["acknowledged"] += 1
            log.info("alert %s acknowledged by %s", a.id, by)
            changed = True
        if resolve and a.open:
            self._resolve(a, now, f"ack:{by}")
            changed = True
        if changed:
            self._decided()
        return changed

    def _escalate(self, now: float) -> None:
        for a in self.alerts.values():
            chain = self.chains.get(a.cls or "")
            if not chain or not a.open or a.acked_at is not None:
                continue
            for i in escalation_due(a, chain, now):
                a.step = i
                a.escalated[str(i)] = round(now, 3)
                self.records.add(a, f"escalated:{i}")
                self._decided()
                self.counters["escalated"] += 1
                log.warning("alert %s not acknowledged: escalated to %s (step %d)", a.id, chain[i].group, i)

    # ------------------------------------------------------------------ records
    def _record(self, a: Alert, tag: str) -> Record:
        """The record for one of an alert's tags: (lane, body, topic)."""
        now = self.clock.time()
        if is_alarm(tag):
            return alarm_record(a, tag, self.chains.get(a.cls or "") or [], self.lang, now)
        chain = self.chains.get(a.cls or "") or []
        if tag == "acknowledged":
            return acknowledged_record(a, chain, now)
        spec = self.specs.get(a.rule) if a.source == "rule" else self.rc.external_spec(a.rule)
        msg = render(spec, a.facts, a.location, a.severity, self.lang, resolved=True) if spec is not None else a.message
        return resolved_record(a, chain, msg, self.lang, now)

    # ------------------------------------------------------------------ the task
    def _next_wakeup(self, now: float) -> float:
        times = [self.ruleset.deadline(), self.outputs.deadline(), self.records.deadline(), *self.saver.deadlines()]
        for a in self.alerts.values():
            chain = self.chains.get(a.cls or "")
            if chain:
                times.append(next_escalation(a, chain))
        return min((t for t in times if t is not None), default=math.inf)

    def _output_done(self) -> None:
        self.saver.mark()  # what is driven now is worth remembering
        self._wake.set()

    async def drain(self) -> None:
        """Do what is due now: drive outputs, save state, emit records (tests call it directly)."""
        async with self._lock:
            now = self.clock.time()
            self.outputs.drive(now, self._output_done)
            if self.saver.due(now):
                await self._save()
            if self.records.due(now) and await self.records.flush(now, self.alerts):
                self.saver.mark()
            if self.saver.due(now):
                await self._save()
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
                now = self.clock.time()
                self.tick(now)
                self._wake.clear()
                await self.drain()
                await self._wake.sleep(self._next_wakeup(self.clock.time()))
        except asyncio.CancelledError:
            self.outputs.cancel()
            self.save_now()
            raise

    # ------------------------------------------------------------------ views
    def open_alerts(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.open]

    def snapshot(self) -> dict:
        out = [a.summary(self.chains.get(a.cls or "") or []) for a in self.open_alerts()[:50]]
        return {"open": out, "counters": dict(self.counters), "ack_rejections": dict(self.acks.rejected),
                "outputs": self.outputs.snapshot()}

