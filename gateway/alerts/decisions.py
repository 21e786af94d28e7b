"""What happens to alerts: raised, folded, joined (incidents), escalated, acknowledged, resolved.

The decisions of the alert engine, apart from its plumbing (engine.py: inputs,
the task, the state file).  Every method runs on the loop and only changes
memory; what must reach the outbox is queued as an alert's *tag* in
``self.records`` (records.py says what each tag's record holds), and
``_decided()`` asks for the state file to be written before it is committed.

The engine provides what these methods use: ``alerts``, ``episodes``, ``specs``,
``rc``, ``chains``, ``locations``, ``wording``, ``records``, ``outputs``,
``counters``, ``saver``, ``lang``, ``counter``, ``clock``, ``_wake``, ``_changed``.
"""

from __future__ import annotations

import logging
import secrets

import orjson

from gateway.alerts.incidents import join, leave, on_rise, status_of
from gateway.alerts.lifecycle import Alert, Episode, escalation_due, incident_key, on_new_episode
from gateway.alerts.records import (Record, acknowledged_record, alarm_record, copies_for_step, copy_record, groups_reached,
                                    parse_updated, resolved_record, updated_record, updated_tag)
from gateway.alerts.rules import Change

log = logging.getLogger("canopy.alerts")


class Decisions:
    """The alert lifecycle's decisions (mixed into :class:`gateway.alerts.engine.AlertEngine`)."""

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
        if spec.incident is not None:
            self._incident_change(spec, ch, now)
            return
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

    def _raise(self, spec, ch: Change, ep: Episode, now: float, incident: str | None = None, cls: str | None = None) -> Alert:
        return self._new_alert(spec, ch.subject, spec.severity, cls or spec.class_, self.locations.device_of(ch),
                               self.locations.for_change(spec, ch), ch.evidence, ch.facts, spec.outputs, ep, now,
                               incident=incident)

    def _new_alert(self, spec, subject: str, severity: str, cls: str | None, device, location: dict, readings: list,
                   facts: dict, outputs_cfg, ep: Episode, now: float, source: str = "rule", incident: str | None = None) -> Alert:
        self.counter += 1
        aid = f"{self.counter}-{secrets.token_hex(2)}"
        outputs = _outputs(outputs_cfg)
        a = Alert(id=aid, rule=spec.id, subject=subject, severity=severity, cls=cls, raised_at=now,
                  device=device, location=location, readings=list(readings)[:8], facts=_facts(facts, device),
                  outputs=outputs, source=source, incident=incident)
        if incident:
            join(a, spec.id, severity, now)
        a.message = self.wording.message(a, self.lang)
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

    # ------------------------------------------------------------------ incidents
    def _incident_change(self, spec, ch: Change, now: float) -> None:
        """A rule of an incident came on or went off: raise the incident's alert, join it, or leave it."""
        ep = self.episodes.setdefault(incident_key(spec.incident, ch.subject), Episode())
        last = self.alerts.get(ep.alert) if ep.alert else None
        if not ch.active:
            if last is not None and last.open and leave(last, spec.id):
                ep.active = False
                last.readings = ch.evidence or last.readings
                if all(self.specs[r].resolve == "auto" for r in last.members if r in self.specs):
                    self._resolve(last, now, "condition")
            return
        if last is not None and last.open:
            self._join(last, spec, ch, now)
            return
        ep.active = True
        inc = self.rc.incident(spec.incident)
        if on_new_episode(inc.reraise, inc.dead_time, ep, False, now) == "fold":
            self._fold(ep, last)
            return
        self._raise(spec, ch, ep, now, incident=spec.incident, cls=inc.class_)

    def _join(self, a: Alert, spec, ch: Change, now: float) -> None:
        """Another rule of the incident came on: it joins the alert, and a higher severity updates it."""
        previous = join(a, spec.id, spec.severity, now)
        a.readings = (list(ch.evidence) + a.readings)[:8]
        added = [o for o in _outputs(spec.outputs) if o not in a.outputs]
        a.outputs += added
        if previous is not None:
            a.facts = _facts(ch.facts, self.locations.device_of(ch) or a.device)
            if on_rise(a, self.chains.get(a.cls or "") or [], self.rc.incident(a.incident or "").on_rise, now):
                self.episodes[a.key].acked = False  # re-armed: the new danger needs a new ack
                log.warning("alert %s re-armed by its severity rise: its ack no longer holds", a.id)
            a.message = self.wording.message(a, self.lang)
            self.records.add(a, updated_tag(previous, a.severity, status_of(a), now))
            self.counters["updated"] += 1
            log.warning("alert %s: rule %s joined, severity %s -> %s", a.id, spec.id, previous, a.severity)
        if a.acked_at is None and a.outputs:
            self.outputs.hold(a.id, a.outputs)
        self._decided()
        self._wake.set()

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
            a.resolve_ack = ack_id
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
                for tag in copies_for_step(chain, i):  # a newly paged group gets the raise first
                    self.records.add(a, tag)
                self.records.add(a, f"escalated:{i}")
                self._decided()
                self.counters["escalated"] += 1
                log.warning("alert %s not acknowledged: escalated to %s (step %d)", a.id, chain[i].group, i)

    # ------------------------------------------------------------------ records
    def _record(self, a: Alert, tag: str) -> Record:
        """The record for one of an alert's tags: (lane, body, topic), with its words for people."""
        now = self.clock.time()
        chain = self.chains.get(a.cls or "") or []
        kind = tag.split(":")[0]
        if kind == "copy":
            return copy_record(a, tag, a.raised_body or self._raised_body(a, chain, now))
        previous, severity = parse_updated(tag)[:2] if kind == "updated" else (None, None)
        step = int(tag.split(":")[1]) if kind == "escalated" else a.step
        words = self.wording.words(a, kind, chain, step=step, previous=previous, severity=severity)
        if kind in ("raised", "escalated"):
            return alarm_record(a, tag, chain, self.lang, now, words)
        if kind == "updated":
            return updated_record(a, tag, chain, self.lang, words)
        if kind == "acknowledged":
            return acknowledged_record(a, chain, now, words)
        return resolved_record(a, chain, self.wording.message(a, self.lang, resolved=True), self.lang, now, words)

    def _raised_body(self, a: Alert, chain, now: float) -> dict:
        """The raise rebuilt from the alert (one saved before raises were kept for their copies)."""
        return orjson.loads(alarm_record(a, "raised", chain, self.lang, now, self.wording.words(a, "raised", chain))[1])


def _facts(facts: dict, device: str | None) -> dict:
    """What an alert's text may use: plain values only, and the device."""
    out = {k: v for k, v in facts.items() if isinstance(v, (str, int, float, bool)) or v is None}
    if device and "device" not in out:
        out["device"] = device
    return out


def _outputs(outputs_cfg) -> list[dict]:
    return [{"device": o.device, "point": o.point, "value": o.value, "release": o.release_value} for o in outputs_cfg]
