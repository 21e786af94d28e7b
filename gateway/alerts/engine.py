"""The alert engine: rules over readings -> alerts with lifecycle, escalation, acks and local outputs.

Seam used by the runtime:
- ``observe(readings)``: called with every poll's readings (sync, cheap);
- ``run()``: the task for timers (debounce, inactivity, stale, escalation),
  for writing records and the state file, and for driving local outputs;
- ``on_ack(topic, payload)``: signed acks arriving on ``…/alert/ack`` (sync, never raises;
  checked in acks.py, decided and answered in ack_desk.py);
- ``on_delivered(lane, first, last)``: PUBACKs of outbox records (optional hook);
- ``epoch`` (constructor): the outbox's epoch, ``() -> str``, so the copies of a
  raise name its ``(epoch, lane, seq)`` (records.py; without it they carry no ``copy_of``);
- ``snapshot()``: open alerts and counters for ``…/state``;
- ``raise_alert(...)`` / ``resolve_alert(...)``: alerts from other services
  (the camera's fall detector, the control loops' failures), with the same
  lifecycle and escalation.

Rules that share an ``incident`` raise ONE alert per subject: the first rule
on raises it, the others join it and may raise its severity (incidents.py).

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
from collections.abc import Awaitable, Callable

from gateway.alerts import state as statefile
from gateway.alerts.ack_desk import AckDesk
from gateway.alerts.ack_ids import SeenAcks
from gateway.alerts.acks import AckChecker, ack_keys
from gateway.alerts.decisions import Decisions
from gateway.alerts.emission import Committed, RecordQueue
from gateway.alerts.lifecycle import Alert, ChainStep, Episode, chains_of, next_escalation, prune
from gateway.alerts.locations import Locations
from gateway.alerts.outputs import Outputs
from gateway.alerts.persistence import SavedState, StateSaver
from gateway.alerts.records import raise_spent
from gateway.alerts.rules import InactivityRule, build_rules
from gateway.alerts.texts import Wording
from gateway.alerts.wakeup import Wakeup

log = logging.getLogger("canopy.alerts")

COUNTERS = ("raised", "escalated", "updated", "acknowledged", "resolved", "folded", "ack_ok", "ack_rejected",
            "emit_errors", "state_errors")


class AlertEngine(Decisions):
    """Alerts from rules and from other services, with one lifecycle (the seam is in the module docstring)."""

    def __init__(self, cfg, clock, emit: Callable[[str, bytes, str | None], Awaitable[object]], write_point=None,
                 state_dir: str | None = None, *, max_sleep: float = 5.0, epoch: Callable[[], str] | None = None,
                 committed: Committed | None = None):
        self.cfg = cfg
        self.clock = clock
        site = cfg.site
        self.rc = site.rules
        self.lang = site.language
        self.site_id, self.gateway_id = site.site, site.gateway
        self.specs = {r.id: r for r in self.rc.rules}
        self.ruleset = build_rules(cfg)
        self.locations = Locations(cfg, self.site_id)
        self.wording = Wording(self.rc, self.specs, self.locations.labels)
        self.chains: dict[str, list[ChainStep]] = chains_of(self.rc)
        self.alerts: dict[str, Alert] = {}
        self.episodes: dict[str, Episode] = {}
        self.counter = 0
        self.outputs = Outputs(write_point)  # write_point: async (device_id, point, value) -> None
        self.counters = {k: 0 for k in COUNTERS}
        self.path = statefile.file_in(state_dir, self.site_id, self.gateway_id) if state_dir else None
        self.on_change: Callable[[], None] | None = None  # the runtime may set it to republish …/state
        self.records = RecordQueue(emit, self._record, self.counters, epoch, committed)
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

    def _compact(self) -> None:
        """Before a save: only the last ``history`` closed alerts, and no raise kept that no copy can need."""
        self.alerts = prune(self.alerts, self.rc.history)
        for a in self.alerts.values():
            if a.raised_body is not None and raise_spent(a):
                a.raised_body = None

    async def _save(self) -> None:
        self._compact()
        await self.saver.save()

    def save_now(self) -> None:
        """Synchronous save (shutdown)."""
        self._compact()
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


