"""What each lifecycle record says to people: ready lines in both languages, beside a key and parameters.

A duty desk, a volunteer's phone and a grid leader's app may each read another
language, so every lifecycle record carries ``texts`` -- one ready line per
language tag (``en``, ``zh-CN``) that says what happened in words ("Escalated
to Volunteers (not acknowledged after 2 min): …") -- and ``message_key`` +
``params`` for a screen that words it itself.  Rule ids stay in the details
(``rule``, ``rules``), never in the words of an incident with its own message.
Times shown to people carry the date and the time zone (:func:`fmt_time`).
"""

from __future__ import annotations

from core.timefmt import fmt_time  # re-exported: controls and tests import it from here
from gateway.alerts.config import Messages
from gateway.alerts.incidents import RANK
from gateway.alerts.lifecycle import Alert, ChainStep
from gateway.alerts.messages import SEVERITY, TAGS, render, template_key
from gateway.alerts.timeutil import fmt_duration

LANGS = (("en", "en"), ("zh-CN", "zh"))  # language tag -> message language

LINES = {
    "en": {"escalated": "Escalated to {group} (not acknowledged after {after}): {message}",
           "updated": "Now {severity} (was {previous}): {message}",
           "acknowledged": "Acknowledged by {by} at {time}: {message}",
           "resolved": "{message} ({time})"},
    "zh": {"escalated": "已升级至{group}（{after}内无人确认）：{message}",
           "updated": "已升级为{severity}（原为{previous}）：{message}",
           "acknowledged": "{by} 已于 {time} 确认：{message}",
           "resolved": "{message}（{time}）"},
}


def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool)) or v is None}


class Wording:
    """Texts, keys and parameters of one site's alerts (its rules, incidents, groups, device labels, time zone)."""

    def __init__(self, rc, specs: dict, labels: dict[str, dict]):
        """``specs``: rule id -> rule config; ``labels``: device id -> {language tag: what people call it}."""
        self.rc = rc
        self.specs = specs
        self.labels = labels
        self.tz = rc.tz()

    def spec_of(self, a: Alert):
        """The spec whose text the alert uses: its rule's (an incident: its most severe member's, with the
        incident's own message where it gives one), or its external source's."""
        if a.source != "rule":
            return self.rc.external_spec(a.rule)
        spec = self.specs.get(a.rule)
        if not a.incident or spec is None:
            return spec
        members = [self.specs[r] for r in a.members if r in self.specs] or [spec]
        top = max(members, key=lambda s: RANK.get(s.severity, 0))  # the first of the most severe
        inc = self.rc.incident(a.incident)
        if inc.message is None:
            return top
        own = top.message or Messages()
        return top.model_copy(update={"message": Messages(en=inc.message.en or own.en, zh=inc.message.zh or own.zh)})

    def key(self, a: Alert) -> str:
        """``incident:{name}``, ``rule:{id}`` (a custom text of a rule or an external source) or a default template
        (``threshold.above``, ``camera.fall``)."""
        if a.incident and self.rc.incident(a.incident).message is not None:
            return f"incident:{a.incident}"
        spec = self.spec_of(a)
        if spec is None:
            return "external"
        return f"rule:{spec.id}" if spec.message is not None else template_key(spec)

    def message(self, a: Alert, lang: str, *, resolved: bool = False, severity: str | None = None) -> str:
        spec = self.spec_of(a)
        if spec is None:
            return a.message
        return render(spec, a.facts, a.location, severity or a.severity, lang, resolved=resolved,
                      labels=self.labels.get(a.device or ""))

    def params(self, a: Alert) -> dict:
        return {**_scalars(a.facts), **{k: v for k, v in a.location.items() if isinstance(v, str)}, "severity": a.severity}

    def words(self, a: Alert, kind: str, chain: list[ChainStep], *, step: int = 0, previous: str | None = None,
              severity: str | None = None) -> dict:
        """The fields every lifecycle record adds for people: incident, rules, message_key, params, texts."""
        texts = {tag: self._line(a, kind, lang, chain, step, previous, severity) for tag, lang in LANGS}
        return {"incident": a.incident, "rules": a.rules, "message_key": self.key(a), "params": self.params(a), "texts": texts}

    def _line(self, a: Alert, kind: str, lang: str, chain, step: int, previous: str | None, severity: str | None) -> str:
        message = self.message(a, lang, resolved=kind == "resolved", severity=severity)
        if kind == "raised":
            return message
        line = LINES[lang][kind]
        if kind == "escalated":
            name = chain[step].group if step < len(chain) else ""
            group = self.rc.groups[name].label(TAGS[lang], name) if name in self.rc.groups else name
            return line.format(group=group, after=fmt_duration(chain[step].after if step < len(chain) else 0, lang), message=message)
        if kind == "updated":
            return line.format(severity=SEVERITY[lang][severity or a.severity], previous=SEVERITY[lang].get(previous or "", previous),
                               message=message)
        when = a.acked_at if kind == "acknowledged" else a.resolved_at
        return line.format(by=a.acked_by or "", time=fmt_time(when if when is not None else a.raised_at, self.tz, lang), message=message)
