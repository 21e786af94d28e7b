"""Recipient groups and alert classes: who hears of an alert, and when the next group does."""

from __future__ import annotations

from pydantic import Field, field_validator

from core.protocol.messages.base import Labels
from gateway.alerts.config.fields import Duration, Name, Strict


class Group(Strict):
    recipients: list[str] = Field(min_length=1, description="who is in the group (names, ids, numbers: the centre resolves them)")
    description: str = ""
    labels: Labels = Field(default_factory=dict, description="the group's name for people, by language tag: {en: Volunteers, zh-CN: 志愿者}")

    def label(self, tag: str, name: str) -> str:
        """The group in words for a language tag (``en``, ``zh-CN``): its label, else its description, else its name."""
        base = tag.split("-")[0]
        for t, text in self.labels.items():
            if t == tag or t.split("-")[0] == base:
                return text
        return self.description or name


class Step(Strict):
    group: Name
    after: Duration = Field(0.0, description="time since the alert was raised")


class AlertClass(Strict):
    escalation: list[Step] = Field(min_length=1, description="recipient groups in order, each with its delay")
    description: str = ""

    @field_validator("escalation")
    @classmethod
    def _increasing(cls, v: list[Step]) -> list[Step]:
        if v and v[0].after != 0:
            raise ValueError(f"the first step goes out when the alert is raised: its 'after' must be 0, not {v[0].after:g}")
        for a, b in zip(v, v[1:]):
            if b.after <= a.after:
                raise ValueError(f"step '{b.group}' (after {b.after:g} s) must come later than step '{a.group}' (after {a.after:g} s)")
        return v
