"""Quiet hours: named schedules and per-household overrides for inactivity rules."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from gateway.alerts.config.fields import Name, Strict
from gateway.alerts.timeutil import WEEKDAYS, parse_window


def _window_item(v):
    """A quiet window: ``"22:00-07:00"`` or ``{from: "22:00", to: "07:00", days: [sat, sun]}``."""
    if isinstance(v, str):
        parse_window(v)
        return v
    if isinstance(v, dict):
        extra = sorted(set(v) - {"from", "to", "days"})
        if extra:
            raise ValueError(f"unknown key(s) {', '.join(extra)} in a window (keys: from, to, days)")
        for k in ("from", "to"):
            if isinstance(v.get(k), int):  # YAML 1.1 reads an unquoted 22:00 as the number 1320
                raise ValueError(f"put the time in quotes: {k}: \"HH:MM\"")
        days = v.get("days")
        if days is not None:
            if not isinstance(days, list) or any(d not in WEEKDAYS for d in days):
                raise ValueError(f"days is a list of {', '.join(WEEKDAYS)}")
        parse_window(v)
        return v
    raise ValueError("a quiet-hours window is text like '22:00-07:00' or {from: '22:00', to: '07:00', days: [sat, sun]}")


QuietItem = Annotated[Any, BeforeValidator(_window_item)]


class ScheduleModel(Strict):
    quiet_hours: list[QuietItem] = Field(default_factory=list)
    description: str = ""


class Household(Strict):
    schedule: Name | None = None
    quiet_hours: list[QuietItem] | None = None

    @model_validator(mode="after")
    def _one(self) -> "Household":
        if self.schedule is not None and self.quiet_hours is not None:
            raise ValueError("give schedule or quiet_hours, not both")
        return self
