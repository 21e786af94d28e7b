"""The alert engine: rules over readings -> alerts with lifecycle, escalation and local outputs.

Seam used by the runtime:
- ``observe(readings)``: called with every poll's readings (sync, cheap);
- ``run()``: the task for timers (debounce, inactivity, stale, escalation),
  for writing records and the state file, and for driving local outputs;
- ``on_ack(topic, payload)``: acks arriving on ``…/alert/ack`` (sync, never raises);
- ``on_delivered(lane, first, last)``: PUBACKs of outbox records (optional hook);
- ``snapshot()``: open alerts and counters for ``…/state``;
- ``raise_alert(...)`` / ``resolve_alert(...)``: alerts from other services
  (the camera's fall detector), with the same lifecycle and escalation.

Records (docs/alerts.md): ``alert.raised`` and ``alert.escalated`` go to the
``alarm`` lane (every severity: an alert is for people) on the recipient
group's topic ``…/alert/{group}`` (``…/event`` when the alert has no class);
``alert.acknowledged``, ``alert.resolved`` and ``alert.ack_rejected`` go to
the ``event`` lane on ``…/event``.

Order of work for a new alert: local outputs are started first (they do not
wait for anything), the state file is written, then the record is committed
through ``emit``.  A record decided but not yet committed stays listed in the
state file (``pending``) and is emitted again after a restart; an alert is
never raised twice for one episode.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import orjson

from core.backoff import RateLimitedLog
from core.records import event_body
from gateway.alerts import state as statefile
from gateway.alerts.lifecycle import Alert, ChainStep, Episode, escalation_due, next_escalation, on_new_episode
from gateway.alerts.messages import render
from gateway.alerts.outputs import Outputs
from gateway.alerts.rules import ALL, Change, InactivityRule, build_rules

log = logging.getLogger("canopy.alerts")

LAZY_SAVE = 60.0  # seconds between saves of inactivity clocks and delivery marks
MAX_SEQ_MAP = 4096
ACK_FIELD_MAX = 64
NOTE_MAX = 500
REJECTIONS_PER_MINUTE = 10



class AlertEngine:
    def __init__(self, cfg, clock, emit: Callable[[str, bytes], Awaitable[object]], write_point=None,
                 state_dir: str | None = None, *, max_sleep: float = 5.0):
        self.cfg = cfg
        self.clock = clock
        self.emit = emit
        self.write_point = write_point  # async (device_id, point, value) -> None, for local outputs
        self.max_sleep = max_sleep
        site = cfg.site
        self.rc = site.rules
        self.lang = site.language
        self.site_id, self.gateway_id = site.site, site.gateway
        self.specs = {r.id: r for r in self.rc.rules}
        self.ruleset = build_rules(cfg)
        self.dev_locations: dict[str, dict] = {
            dev.id: {k: v for k, v in (dev.location.model_dump() if dev.location else {}).items() if v is not None}
            for _, dev in cfg.devices()
        }
        self.chains: dict[str, list[ChainStep]] = {
            name: [ChainStep(s.group, s.after, tuple(self.rc.groups[s.group].recipients)) for s in cls.escalation]
            for name, cls in self.rc.classes.items()
        }
        self.alerts: dict[str, Alert] = {}
        self.episodes: dict[str, Episode] = {}
        self.counter = 0
        self.outputs = Outputs(write_point)
        self.counters = {k: 0 for k in ("raised", "escalated", "acknowledged", "resolved", "folded", "ack_ok",
                                        "ack_malformed", "ack_unknown", "ack_duplicate", "emit_errors", "state_errors")}
        self.path = statefile.file_in(state_dir, self.site_id, self.gateway_id) if state_dir else None
        self.on_change: Callable[[], None] | None = None  # the runtime may set it to republish …/state
        self._queue: list[tuple[str | None, str, bytes | None]] = []  # (alert id, tag, body for non-alert records)
        self._dirty = False  # must be saved before the next emit
        self._lazy_dirty = False  # worth saving within LAZY_SAVE
        self._changed = False
        self._last_save = -math.inf
        self._emit_retry_at = 0.0
        self._save_retry_at = 0.0
        self._save_failures = 0
        self._wake = asyncio.Event()
        self._sleep_until = math.inf
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._seq_alert: dict[tuple[str, int], str] = {}
        self._rejections: list[float] = []
        self._ratelog = RateLimitedLog(log)
        self._has_inactivity = any(isinstance(r, InactivityRule) for r in self.ruleset.rules)
        now = clock.time()
        self.ruleset.start(now)
        self._load(now)

    # ------------------------------------------------------------------ state file
    def _load(self, now: float) -> None:
        data = statefile.load(self.path) if self.path else None
        if not data:
            return
        self.counter = int(data.get("counter", 0))
        for d in data.get("alerts", []):
            try:
                a = Alert.from_dict(d)
            except TypeError:
                continue
            self.alerts[a.id] = a
        for key, d in (data.get("episodes") or {}).items():
            rule_id, _, subject = key.partition("|")
            rule = self.ruleset.by_id.get(rule_id)
            if rule is None and "." in rule_id:  # an external source's episode (camera.fall|cam-1)
                self.episodes[key] = Episode.from_dict(d)
                continue
            if rule is None or subject not in rule.subject_ids():
                continue
            ep = Episode.from_dict(d)
            self.episodes[key] = ep
            if ep.active:
                rule.restore(subject, True)
        for rid, d in (data.get("rules") or {}).items():
            if rid in self.ruleset.by_id and isinstance(d, dict):
                self.ruleset.by_id[rid].load(d)
        self.outputs.load(data.get("outputs") or {})
        for a in list(self.alerts.values()):
            for tag in a.pending:  # decided before the restart, not committed yet
                self._queue.append((a.id, tag, None))
            rule = self.ruleset.by_id.get(a.rule)
            if a.open and a.source == "rule" and (rule is None or a.subject not in rule.subject_ids() or not self.specs[a.rule].alert):
                log.info("alert %s: rule %s or its subject %s is gone from the config; resolving it", a.id, a.rule, a.subject)
                self._resolve(a, now, "rule removed")
                continue
            if a.open and a.acked_at is None and a.outputs:
                self.outputs.hold(a.id, a.outputs)
        opened = [a for a in self.alerts.values() if a.open]
        if opened or self._queue:
            log.info("alert state restored: %d open alert(s), %d record(s) to send", len(opened), len(self._queue))

    def _prune(self) -> None:
        """Keep open alerts, alerts with records to send, and the last ``history`` closed ones."""
        keep = [a for a in self.alerts.values() if a.open or a.pending]
        closed = sorted((a for a in self.alerts.values() if not a.open and not a.pending), key=lambda a: a.resolved_at or 0)
        keep += closed[-self.rc.history:] if self.rc.history else []
        if len(keep) < len(self.alerts):
            self.alerts = {a.id: a for a in sorted(keep, key=lambda a: a.raised_at)}

    def _state(self) -> dict:
        self._prune()
        return {
            "site": self.site_id,
            "gateway": self.gateway_id,
            "saved_at": round(self.clock.time(), 3),
            "counter": self.counter,
            "alerts": [a.to_dict() for a in self.alerts.values()],
            "episodes": {k: e.to_dict() for k, e in self.episodes.items()},
            "rules": {r.id: d for r in self.ruleset.rules if (d := r.dump())},
            "outputs": self.outputs.dump(),
        }

    async def _save(self) -> None:
        if self.path is None:
            self._prune()
            self._dirty = self._lazy_dirty = False
            self._last_save = self.clock.time()
            return
        body = statefile.encode(self._state())
        self._dirty = self._lazy_dirty = False
        self._last_save = self.clock.time()
        try:
            await asyncio.to_thread(statefile.save, self.path, body)
            self._last_save = self.clock.time()
            self._save_failures = 0
        except OSError as exc:
            self.counters["state_errors"] += 1
            self._dirty = True
            self._save_failures += 1
            delay = min(30.0, 2.0 ** (self._save_failures - 1))
            self._save_retry_at = self.clock.time() + delay
            self._ratelog("state", "cannot write alert state %s: %s (alerts still go out; retrying in %.0f s)",
                          self.path, exc, delay)

    def save_now(self) -> None:
        """Synchronous save (shutdown)."""
        if self.path is None:
            return
        try:
            statefile.save(self.path, statefile.encode(self._state()))
        except OSError as exc:
            self.counters["state_errors"] += 1
            log.error("cannot write alert state %s: %s", self.path, exc)

    # ------------------------------------------------------------------ inputs
    def observe(self, readings) -> None:
        for r in readings:
            self.ruleset.observe(r)
        if self._has_inactivity and readings:
            self._lazy_dirty = True
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
            self._drive_outputs(now)  # at once: never behind a slow save or a stuck commit
        if (self._queue and now >= self._emit_retry_at) or (self._dirty and now >= self._save_retry_at) \
                or self.outputs.due(now) or self._next_wakeup(now) < self._sleep_until:
            self._wake.set()

    def on_ack(self, topic: str, payload: bytes) -> None:
        """An ack from …/alert/ack.  Bad input is counted and logged, never raised."""
        try:
            self._on_ack(payload)
        except Exception:  # belt and braces: the uplink's handler must never see an exception
            self.counters["ack_malformed"] += 1
            log.exception("ack handling failed")

    def _on_ack(self, payload: bytes) -> None:
        now = self.clock.time()
        try:
            msg = orjson.loads(payload)
        except (orjson.JSONDecodeError, TypeError):
            self.counters["ack_malformed"] += 1
            self._ratelog("malformed", "ack rejected: not JSON (%d bytes)", len(payload or b""))
            return
        problem = _ack_problem(msg)
        if problem:
            self.counters["ack_malformed"] += 1
            self._ratelog("malformed", "ack rejected: %s", problem)
            return
        aid, by, resolve, note = msg["alert"], msg["by"].strip(), bool(msg.get("resolve", False)), msg.get("note")
        a = self.alerts.get(aid)
        if a is None:
            self.counters["ack_unknown"] += 1
            self._ratelog("unknown", "ack from %s for unknown alert %r ignored", by, aid)
            self._reject(now, aid, by, "unknown alert")
            return
        if self.apply_ack(a, by, resolve, note, now):
            self.counters["ack_ok"] += 1
        else:
            self.counters["ack_duplicate"] += 1
            log.info("ack from %s for alert %s changed nothing (already %s)", by, aid, a.status)
            self._reject(now, aid, by, f"already {a.status}")
        self._wake.set()

    def on_delivered(self, lane: str, first: int, last: int) -> None:
        """The broker acknowledged records ``first..last`` of ``lane`` (PUBACK)."""
        if not self._seq_alert:
            return
        now = self.clock.time()
        for (ln, seq) in [k for k in self._seq_alert if k[0] == lane and first <= k[1] <= last]:
            a = self.alerts.get(self._seq_alert.pop((ln, seq)))
            if a is not None and a.delivered_at is None:
                a.delivered_at = now
                self._lazy_dirty = True
                self._changed = True

    # ------------------------------------------------------------------ lifecycle
    def _on_change(self, ch: Change, now: float) -> None:
        spec = self.specs[ch.rule]
        if not spec.alert:
            return
        key = f"{ch.rule}|{ch.subject}"
        ep = self.episodes.setdefault(key, Episode())
        last = self.alerts.get(ep.alert) if ep.alert else None
        if ch.active:
            if ep.active:
                return
            ep.active = True
            self._dirty = True
            decision = on_new_episode(spec.reraise, spec.dead_time, ep, last is not None and last.open, now)
            if decision == "raise":
                self._raise(spec, ch, ep, now)
            else:
                ep.suppressed += 1
                self.counters["folded"] += 1
                if last is not None:
                    last.episodes += 1
                    last.condition = True
                log.info("rule %s (%s): new episode folded into alert %s (reraise: %s)", ch.rule, ch.subject, ep.alert, spec.reraise)
        else:
            if not ep.active:
                return
            ep.active = False
            self._dirty = True
            if last is not None and last.open:
                last.condition = False
                last.readings = ch.evidence or last.readings
                if spec.resolve == "auto":
                    self._resolve(last, now, "condition")

    def _location(self, spec, ch: Change) -> dict:
        loc: dict = {}
        if ch.subject in self.dev_locations:
            loc = dict(self.dev_locations[ch.subject])
        elif getattr(spec, "type", "") == "inactivity" and ch.subject != ALL:
            for src in spec.sources:
                dl = self.dev_locations.get(src.device, {})
                if dl.get("household") == ch.subject:
                    loc = {k: v for k, v in dl.items() if k != "zone"}
                    break
        else:
            dev = ch.facts.get("device") or next((e.get("device") for e in ch.evidence if e.get("device")), None)
            loc = dict(self.dev_locations.get(dev, {}))
        return {"site": self.site_id, **loc}

    def _raise(self, spec, ch: Change, ep: Episode, now: float) -> None:
        location = self._location(spec, ch)
        device = ch.facts.get("device") or (ch.subject if ch.subject in self.dev_locations else None) \
            or next((e.get("device") for e in ch.evidence if e.get("device")), None)
        self._new_alert(spec, ch.subject, spec.severity, spec.class_, device, location, ch.evidence, ch.facts,
                        spec.outputs, ep, now)

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
                  message=render(spec, facts, location, severity, self.lang), pending=["raised"], outputs=outputs,
                  source=source)
        self.alerts[aid] = a
        ep.alert, ep.raised_at, ep.acked, ep.suppressed = aid, now, False, 0
        if outputs:
            self.outputs.hold(aid, outputs)
        self._queue.append((aid, "raised", None))
        self._dirty = self._changed = True
        self.counters["raised"] += 1
        log.warning("alert %s raised: %s (rule %s, %s)", aid, a.message, spec.id, severity)
        self._wake.set()
        return a

    # ------------------------------------------------------------------ other services
    def _external_spec(self, rule: str):
        ext = self.rc.external.get(rule)
        return SimpleNamespace(id=rule, type="external", message=ext.message if ext else None,
                               reraise=ext.reraise if ext else "each_episode", dead_time=ext.dead_time if ext else None,
                               class_=ext.class_ if ext else None, severity=ext.severity if ext else None,
                               outputs=ext.outputs if ext else [])

    def raise_alert(self, *, rule: str, subject: str, severity: str = "warning", device: str | None = None,
                    location: dict | None = None, facts: dict | None = None, readings: list | None = None,
                    ts: float | None = None, cls: str | None = None) -> str:
        """An alert from another service (``rule`` like ``camera.fall``); returns its alert id.

        Same lifecycle as rule alerts: one open alert per rule and subject (a
        second call while it is open is folded into it), escalation by the
        class given in ``rules.external.<rule>`` (or ``cls``), closed by an ack
        with ``resolve`` or by :meth:`resolve_alert`.
        """
        spec = self._external_spec(rule)
        severity = spec.severity or (severity if severity in ("critical", "warning", "info") else "warning")
        cls = cls if cls in self.chains else spec.class_
        now = self.clock.time()
        key = f"{rule}|{subject}"
        ep = self.episodes.setdefault(key, Episode())
        last = self.alerts.get(ep.alert) if ep.alert else None
        if on_new_episode(spec.reraise, spec.dead_time, ep, last is not None and last.open, now) == "fold":
            ep.suppressed += 1
            self.counters["folded"] += 1
            if last is not None:
                last.episodes += 1
            self._dirty = True
            self._wake.set()
            return ep.alert or ""
        loc = {"site": self.site_id, **{k: v for k, v in (location or {}).items() if v is not None and k != "site"}}
        if device in self.dev_locations and len(loc) == 1:
            loc.update(self.dev_locations[device])
        readings = [r for r in (readings or []) if isinstance(r, dict)]
        a = self._new_alert(spec, str(subject), severity, cls, device, loc, readings, dict(facts or {}), spec.outputs,
                            ep, now, source="external")
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
        a.pending.append("resolved")
        self._queue.append((a.id, "resolved", None))
        self._dirty = self._changed = True
        self.counters["resolved"] += 1
        log.info("alert %s resolved (%s)", a.id, by)

    def apply_ack(self, a: Alert, by: str, resolve: bool, note: str | None, now: float) -> bool:
        """Acknowledge (stops escalation, releases outputs) and optionally resolve; False if nothing changed."""
        changed = False
        if a.acked_at is None:
            a.acked_at, a.acked_by, a.note = now, by, note
            ep = self.episodes.get(a.key)
            if ep is not None and ep.alert == a.id:
                ep.acked = True
            self.outputs.release(a.id)
            a.pending.append("acknowledged")
            self._queue.append((a.id, "acknowledged", None))
            self.counters["acknowledged"] += 1
            log.info("alert %s acknowledged by %s", a.id, by)
            changed = True
        if resolve and a.open:
            self._resolve(a, now, f"ack:{by}")
            changed = True
        if changed:
            self._dirty = self._changed = True
        return changed

    def _escalate(self, now: float) -> None:
        for a in self.alerts.values():
            chain = self.chains.get(a.cls or "")
            if not chain or not a.open or a.acked_at is not None:
                continue
            for i in escalation_due(a, chain, now):
                a.step = i
                a.escalated[str(i)] = round(now, 3)
                tag = f"escalated:{i}"
                a.pending.append(tag)
                self._queue.append((a.id, tag, None))
                self._dirty = self._changed = True
                self.counters["escalated"] += 1
                log.warning("alert %s not acknowledged: escalated to %s (step %d)", a.id, chain[i].group, i)

    def _reject(self, now: float, aid, by, reason: str) -> None:
        self._rejections = [t for t in self._rejections if now - t < 60]
        if len(self._rejections) >= REJECTIONS_PER_MINUTE:
            return
        self._rejections.append(now)
        body = event_body(now, "alert.ack_rejected", alert=str(aid)[:ACK_FIELD_MAX], by=str(by)[:ACK_FIELD_MAX], reason=reason)
        self._queue.append((None, "event", body))
        self._wake.set()

    # ------------------------------------------------------------------ records
    def _record(self, a: Alert, tag: str) -> tuple[str, bytes, str | None]:
        chain = self.chains.get(a.cls or "") or []
        common = {"alert": a.id, "rule": a.rule, "class": a.cls, "severity": a.severity, "subject": a.subject,
                  "device": a.device, "location": a.location, "raised_at": round(a.raised_at, 3)}
        if tag == "raised" or tag.startswith("escalated:"):
            step = 0 if tag == "raised" else int(tag.split(":")[1])
            grp = chain[step] if step < len(chain) else None
            nxt = a.raised_at + chain[step + 1].after if step + 1 < len(chain) else None
            ts = a.raised_at if tag == "raised" else a.escalated.get(str(step), self.clock.time())
            return "alarm", event_body(
                ts, "alert.raised" if tag == "raised" else "alert.escalated", **common,
                status="raised" if tag == "raised" else "escalated", step=step,
                group=grp.group if grp else None, recipients=list(grp.recipients) if grp else [],
                next_escalation_at=round(nxt, 3) if nxt is not None else None,
                readings=a.readings, message=a.message, lang=self.lang,
            ), (f"alert/{grp.group}" if grp else None)
        if tag == "acknowledged":
            return "event", event_body(a.acked_at or self.clock.time(), "alert.acknowledged", **common, status="acknowledged",
                                       by=a.acked_by, note=a.note, step=a.step), None
        spec = self.specs.get(a.rule) if a.source == "rule" else self._external_spec(a.rule)
        msg = render(spec, a.facts, a.location, a.severity, self.lang, resolved=True) if spec is not None else a.message
        return "event", event_body(a.resolved_at or self.clock.time(), "alert.resolved", **common, status="resolved",
                                   resolved_by=a.resolved_by, acked_by=a.acked_by,
                                   duration=round((a.resolved_at or a.raised_at) - a.raised_at, 3),
                                   readings=a.readings, message=msg, lang=self.lang), None

    # ------------------------------------------------------------------ the task
    def _next_wakeup(self, now: float) -> float:
        times = [self.ruleset.deadline(), self.outputs.deadline()]
        for a in self.alerts.values():
            chain = self.chains.get(a.cls or "")
            if chain:
                times.append(next_escalation(a, chain))
        if self._queue:
            times.append(self._emit_retry_at)
        if self._dirty:
            times.append(self._save_retry_at)
        if self._lazy_dirty:
            times.append(self._last_save + LAZY_SAVE)
        return min((t for t in times if t is not None), default=math.inf)

    def _drive_outputs(self, now: float) -> None:
        for k, value in self.outputs.due(now):
            self.outputs.busy.add(k)
            task = asyncio.create_task(self.outputs.write(k, value, now), name=f"alert-output-{k[0]}-{k[1]}")
            self._tasks.add(task)
            task.add_done_callback(self._output_done)

    def _output_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._dirty = True  # what is driven now is worth remembering
        self._wake.set()

    async def drain(self) -> None:
        """Do what is due now: drive outputs, save state, emit records (tests call it directly)."""
        async with self._lock:
            now = self.clock.time()
            self._drive_outputs(now)
            if self._lazy_dirty and now - self._last_save >= LAZY_SAVE:
                self._dirty = True
            if self._dirty and now >= self._save_retry_at:
                await self._save()
            if self._queue and now >= self._emit_retry_at:
                await self._emit_queue(now)
            if self._dirty and now >= self._save_retry_at:
                await self._save()
            if self._changed:
                self._changed = False
                if self.on_change is not None:
                    try:
                        self.on_change()
                    except Exception:
                        log.exception("on_change hook failed")

    @staticmethod
    def _lane_of(tag: str) -> str:
        return "alarm" if tag == "raised" or tag.startswith("escalated:") else "event"

    async def _emit_queue(self, now: float) -> None:
        """Commit queued records: alarms first, in order within each lane; a lane that fails waits, the other goes on."""
        failed: set[str] = set()
        for want in ("alarm", "event"):
            for item in list(self._queue):
                aid, tag, body = item
                lane = self._lane_of(tag) if aid is not None else tag
                if lane != want or lane in failed:
                    continue
                a = self.alerts.get(aid) if aid is not None else None
                if aid is not None and a is None:
                    self._queue.remove(item)
                    continue
                lane, payload, topic = self._record(a, tag) if a is not None else (tag, body, None)
                try:
                    result = await self.emit(lane, payload, topic)
                except Exception as exc:  # outbox closing or failing: keep it, try again
                    self.counters["emit_errors"] += 1
                    self._emit_retry_at = now + 1.0
                    failed.add(lane)
                    log.error("cannot commit %s record (%s: %s); kept, retrying", lane, type(exc).__name__, exc)
                    continue
                self._queue.remove(item)
                if a is not None:
                    if tag in a.pending:
                        a.pending.remove(tag)
                    self._dirty = True
                    if tag == "raised":
                        for seq in _seqs(result):
                            self._seq_alert[(lane, seq)] = a.id
                        while len(self._seq_alert) > MAX_SEQ_MAP:
                            self._seq_alert.pop(next(iter(self._seq_alert)))

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                now = self.clock.time()
                self.tick(now)
                self._wake.clear()
                await self.drain()
                now = self.clock.time()
                wake_at = min(self._next_wakeup(now), now + self.max_sleep)
                self._sleep_until = wake_at
                await self._sleep_or_wake(max(0.0, wake_at - now))
                self._sleep_until = math.inf
        except asyncio.CancelledError:
            for t in list(self._tasks):
                t.cancel()
            self.save_now()
            raise

    async def _sleep_or_wake(self, delay: float) -> None:
        if self._wake.is_set():
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (sleeper, waker):
                if not f.done():
                    f.cancel()

    # ------------------------------------------------------------------ views
    def open_alerts(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.open]

    def snapshot(self) -> dict:
        chains = self.chains
        out = []
        for a in self.open_alerts()[:50]:
            chain = chains.get(a.cls or "") or []
            out.append({"id": a.id, "rule": a.rule, "severity": a.severity, "status": a.status, "raised_at": round(a.raised_at, 3),
                        "device": a.device, "location": a.location, "message": a.message, "step": a.step,
                        "group": chain[a.step].group if a.step < len(chain) else None, "acked_by": a.acked_by,
                        "condition": a.condition, "episodes": a.episodes})
        return {"open": out, "counters": dict(self.counters), "outputs": self.outputs.snapshot()}


def _seqs(result) -> list[int]:
    if isinstance(result, bool) or result is None:
        return []
    if isinstance(result, int):
        return [result]
    if isinstance(result, (list, tuple)):
        return [x for x in result if isinstance(x, int) and not isinstance(x, bool)]
    return []


def _ack_problem(msg) -> str | None:
    if not isinstance(msg, dict):
        return "not a JSON object"
    if msg.get("v", 1) != 1:
        return f"unsupported version {msg.get('v')!r}"
    aid = msg.get("alert")
    if not isinstance(aid, str) or not aid or len(aid) > ACK_FIELD_MAX:
        return "'alert' (the alert id, text) is missing or invalid"
    by = msg.get("by")
    if not isinstance(by, str) or not by.strip() or len(by) > ACK_FIELD_MAX:
        return "'by' (who acknowledges, text up to 64 characters) is missing or invalid"
    if "resolve" in msg and not isinstance(msg["resolve"], bool):
        return "'resolve' must be true or false"
    note = msg.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX):
        return f"'note' must be text up to {NOTE_MAX} characters"
    return None
