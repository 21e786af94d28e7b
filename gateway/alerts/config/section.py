"""The ``rules:`` section of a site config: people, classes, schedules, households, rules."""

from __future__ import annotations

from types import SimpleNamespace
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from gateway.alerts.config.fields import Name, Strict
from gateway.alerts.config.incidents import DEFAULT as DEFAULT_INCIDENT
from gateway.alerts.config.incidents import Incident
from gateway.alerts.config.people import AlertClass, Group
from gateway.alerts.config.rule_models import ExternalSource, InactivityRule, Rule
from gateway.alerts.config.schedules import Household, ScheduleModel
from gateway.alerts.timeutil import Schedule, parse_window


class RulesConfig(Strict):
    timezone: str | None = Field(None, description="IANA zone for quiet hours, e.g. Asia/Shanghai; default: the board's")
    history: int = Field(100, ge=0, le=10000, description="closed alerts kept in the local state file")
    groups: dict[Name, Group] = Field(default_factory=dict)
    classes: dict[Name, AlertClass] = Field(default_factory=dict)
    schedules: dict[Name, ScheduleModel] = Field(default_factory=dict)
    households: dict[str, Household] = Field(default_factory=dict)
    external: dict[Name, ExternalSource] = Field(default_factory=dict, description="alerts from cameras and other services")
    incidents: dict[Name, Incident] = Field(default_factory=dict, description="rules grouped into one alert per subject")
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v):
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Asia/Shanghai or UTC)") from None
        return v

    @field_validator("groups", "classes", "schedules", "households", "external", "incidents", "rules", mode="before")
    @classmethod
    def _null_is_empty(cls, v, info):
        if v is None:
            return [] if info.field_name == "rules" else {}
        return v

    # ---- helpers used by the engine
    def tz(self):
        return ZoneInfo(self.timezone) if self.timezone else None

    def schedule_for(self, rule: InactivityRule, household: str | None) -> Schedule:
        """Quiet hours for one household under one rule: the household's own, else the rule's."""
        tz = self.tz()
        hh = self.households.get(household) if household is not None else None
        if hh is not None and hh.quiet_hours is not None:
            return Schedule([parse_window(w) for w in hh.quiet_hours], tz)
        if hh is not None and hh.schedule is not None:
            return Schedule([parse_window(w) for w in self.schedules[hh.schedule].quiet_hours], tz)
        if rule.quiet_hours is not None:
            return Schedule([parse_window(w) for w in rule.quiet_hours], tz)
        if rule.schedule is not None:
            return Schedule([parse_window(w) for w in self.schedules[rule.schedule].quiet_hours], tz)
        return Schedule([], tz)

    def incident(self, name: str) -> Incident:
        """The incident's settings (the defaults when it is not declared)."""
        return self.incidents.get(name, DEFAULT_INCIDENT)

    def external_spec(self, rule: str) -> SimpleNamespace:
        """A rule-like spec for alerts from another service (``camera.fall``): ``rules.external`` or defaults."""
        ext = self.external.get(rule)
        return SimpleNamespace(id=rule, type="external", message=ext.message if ext else None,
                               reraise=ext.reraise if ext else "each_episode", dead_time=ext.dead_time if ext else None,
                               class_=ext.class_ if ext else None, severity=ext.severity if ext else None,
                               outputs=ext.outputs if ext else [])
