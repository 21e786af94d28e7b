"""The ``controls:`` section: local closed loops, one entry per output (docs/controls.md).

A greenhouse fan on temperature is not an alert: it switches many times a day,
nobody acknowledges it, and an ack must never turn it off.  A control names a
sensor point, an output point, a setpoint with hysteresis and the guards
against short-cycling (minimum on/off times, maximum run), the safe state for a
stale sensor or a failed output, and how its switching is confirmed.  Checks
that need the whole site (points exist, outputs writable and owned once) are in
checks.py.
"""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator, model_validator

from core.protocol.messages.base import Labels
from gateway.alerts.config.fields import Duration, PositiveDuration, RuleId, Scalar, Strict
from gateway.alerts.config.schedules import QuietItem
from gateway.alerts.timeutil import WEEKDAYS, parse_window


def _on_off(v):
    """YAML 1.1 reads an unquoted ``on``/``off`` as true/false: take both spellings."""
    if isinstance(v, bool):
        return "on" if v else "off"
    return v


OnOff = Annotated[Literal["on", "off"], BeforeValidator(_on_off)]
SafeState = Annotated[Literal["on", "off", "hold"], BeforeValidator(_on_off)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class PointRef(Strict):
    device: str
    point: str


class Output(PointRef):
    """The point the control writes; on/off values default to true/false (1/0 on a number point)."""

    on_value: Scalar | None = Field(None, description="written to switch on; default true (bool point) or 1")
    off_value: Scalar | None = Field(None, description="written to switch off; default false (bool point) or 0")


class Feedback(PointRef):
    """A point that shows what the actuator really does: a running contact, a current, a flow."""

    above: float | None = Field(None, description="a number point counts as on while above this; default: non-zero")


class SetpointWindow(Strict):
    """Another setpoint at some local times: ``{from: "20:00", to: "06:00", setpoint: 24}``."""

    from_: str = Field(alias="from")
    to: str
    days: list[Weekday] | None = Field(None, description="the days the window starts on; default every day")
    setpoint: float

    @model_validator(mode="after")
    def _window(self):
        parse_window({"from": self.from_, "to": self.to, "days": self.days})
        return self


class ControlConfig(Strict):
    """One closed loop: a sensor point drives an output point on/off around a setpoint."""

    id: RuleId
    kind: Literal["fan", "heater", "mister", "vent", "pump", "light", "other"] = Field(
        "other", description="what the output drives, for people's words")
    sensor: PointRef = Field(description="the number point it regulates (temperature, humidity)")
    output: Output = Field(description="the writable point it switches")
    on_when: Literal["above", "below"] = Field(
        description="above: on while the value is above the setpoint (fans, vents); below: heaters, misters")
    setpoint: float
    hysteresis: float = Field(1.0, ge=0, description="off only this far back past the setpoint (a band against chatter)")
    setpoints: list[SetpointWindow] = Field(default_factory=list, description="other setpoints at some local times")
    active_hours: list[QuietItem] | None = Field(None, description="runs only in these local windows; outside them the output is off")
    min_on: Duration = Field(0.0, description="once on, stays on at least this long (against short-cycling)")
    min_off: Duration = Field(0.0, description="once off, stays off at least this long; also the rest after max_run")
    max_run: PositiveDuration | None = Field(None, description="switched off after running this long without a break")
    sensor_stale_after: PositiveDuration | None = Field(None, description="no sensor reading this long: safe state and an "
                                                                          "alert; default: 3 poll intervals of the sensor")
    safe_state: SafeState = Field("off", description="where the output goes when the sensor is stale or the output failed")
    feedback: Feedback | None = Field(None, description="confirms the switching; default: the output point read back")
    confirm_within: PositiveDuration | None = Field(None, description="feedback must agree this soon after a switch; "
                                                                      "default: 3 poll intervals of the feedback's device")
    retry_after: PositiveDuration = Field(300.0, description="after an output fault, tries automatic control again after this")
    max_override: PositiveDuration = Field(4 * 3600.0, description="the longest manual override it accepts")
    timezone: str | None = Field(None, description="IANA zone of active_hours and setpoints; default rules.timezone, else the board's")
    labels: Labels = Field(default_factory=dict, description="what people call it, by language: {en: Greenhouse 1 fan, zh-CN: 1号温室风机}")
    description: str = ""

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

    @model_validator(mode="after")
    def _times(self):
        if self.max_run is not None and self.max_run <= self.min_on:
            raise ValueError(f"max_run ({self.max_run:g} s) must be longer than min_on ({self.min_on:g} s)")
        for w in self.active_hours or []:
            parse_window(w)
        return self

    def label(self, tag: str) -> str:
        """The control in words for a language tag: its label, else "fan gh-fan"."""
        for t, text in self.labels.items():
            if t == tag or t.split("-")[0] == tag.split("-")[0]:
                return text
        return f"{KIND_WORDS['zh' if tag.startswith('zh') else 'en'][self.kind]} {self.id}"


KIND_WORDS = {
    "en": {"fan": "fan", "heater": "heater", "mister": "mister", "vent": "vent", "pump": "pump", "light": "light", "other": "output"},
    "zh": {"fan": "风机", "heater": "加热器", "mister": "喷雾", "vent": "通风窗", "pump": "水泵", "light": "补光灯", "other": "输出"},
}

__all__ = ["ControlConfig", "Feedback", "KIND_WORDS", "OnOff", "Output", "PointRef", "SetpointWindow", "WEEKDAYS"]
