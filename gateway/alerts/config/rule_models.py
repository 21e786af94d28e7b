"""The rule models of the ``rules:`` section: one ``type``-tagged model per rule type.

Shared parts come first (re-raise policy, the common keys, device rules,
debounce delays); each rule type then adds its own keys and the checks that
need only its own values.  Checks that need the whole site are in checks.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from gateway.alerts.config.fields import Duration, Name, PositiveDuration, RuleId, Scalar, Severity, Strict
from gateway.alerts.config.schedules import QuietItem

RULE_TYPES = ("threshold", "rate", "state", "inactivity", "flow", "stale", "all", "any")


class Output(Strict):
    """A local output (a sounder relay) driven while the alert is open and not acknowledged."""

    device: str
    point: str
    value: Scalar = Field(True, description="written when the alert is raised")
    release: Scalar | None = Field(None, description="written on ack or resolve; default: false (or 0)")

    @property
    def release_value(self):
        if self.release is not None:
            return self.release
        return False if isinstance(self.value, bool) else 0


class Messages(Strict):
    en: str | None = None
    zh: str | None = None


class ReraisePolicy(Strict):
    """When a new episode of a condition raises a new alert."""

    reraise: Literal["each_episode", "once", "dead_time"] = "each_episode"
    dead_time: PositiveDuration | None = None

    @model_validator(mode="after")
    def _dead_time(self):
        if self.reraise == "dead_time" and self.dead_time is None:
            raise ValueError("reraise: dead_time needs a dead_time (e.g. dead_time: 30m)")
        if self.reraise != "dead_time" and self.dead_time is not None:
            raise ValueError("dead_time only applies with reraise: dead_time")
        return self


class RuleBase(ReraisePolicy):
    id: RuleId
    severity: Severity = "warning"
    class_: Name | None = Field(None, alias="class", description="alert class: its escalation chain")
    alert: bool = Field(True, description="false: a condition only, for use in all/any rules")
    resolve: Literal["auto", "ack"] = Field("auto", description="auto: when the condition clears; ack: only by an ack with resolve")
    outputs: list[Output] = Field(default_factory=list)
    message: Messages | None = None
    incident: Name | None = Field(None, description="rules with the same incident and subject raise one alert together")
    description: str = ""


class DeviceRule(RuleBase):
    device: str | None = None
    devices: list[str] | None = Field(None, min_length=1)
    point: str

    @model_validator(mode="after")
    def _one_device_key(self):
        if (self.device is None) == (self.devices is None):
            raise ValueError("give device (one) or devices (a list), not both and not neither")
        return self

    @property
    def device_ids(self) -> list[str]:
        return [self.device] if self.device is not None else list(self.devices or [])


class Debounced(Strict):
    delay_on: Duration = Field(0.0, description="the condition must hold this long before it counts")
    delay_off: Duration = Field(0.0, description="and be clear this long before it is over")


class ThresholdRule(DeviceRule, Debounced):
    type: Literal["threshold"]
    above: float | None = None
    below: float | None = None
    hysteresis: float = Field(0.0, ge=0, description="clears only this far back on the safe side")

    @model_validator(mode="after")
    def _one_limit(self):
        if (self.above is None) == (self.below is None):
            raise ValueError("give above or below (one of them)")
        return self


class RateRule(DeviceRule, Debounced):
    type: Literal["rate"]
    rise: float | None = Field(None, gt=0)
    fall: float | None = Field(None, gt=0)
    window: PositiveDuration

    @model_validator(mode="after")
    def _one_direction(self):
        if (self.rise is None) == (self.fall is None):
            raise ValueError("give rise or fall (one of them)")
        return self


class StateRule(DeviceRule, Debounced):
    type: Literal["state"]
    to: Scalar = Field(description="the value the point changes to")
    from_: Scalar | None = Field(None, alias="from", description="only a change from this value counts")


class FlowRule(DeviceRule):
    type: Literal["flow"]
    on: Literal["above", "increase"] = Field("above", description="above: a rate point over 'above'; increase: a counter advancing")
    above: float = 0.0
    for_: PositiveDuration = Field(alias="for")
    max_pause: Duration = Field(0.0, description="gaps this short do not end a run")


class StaleRule(RuleBase):
    type: Literal["stale"]
    devices: list[str] | None = Field(None, min_length=1, description="default: every enabled device")
    intervals: float = Field(3, ge=1, le=100000, description="poll intervals without a valid reading")


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class Source(Strict):
    device: str
    point: str
    on: Literal["change", "increase", "above"] | None = Field(None, description="default: change (above if 'above' is given)")
    above: float | None = None
    change_by: float | str | None = Field(None, description="deadband: a change (or increase) counts only when it is at "
                                                             "least this much (a number, or a percentage like '5%') "
                                                             "away from the value at the last activity")

    @field_validator("change_by")
    @classmethod
    def _deadband(cls, v):
        if v is None:
            return v
        if isinstance(v, bool):
            raise ValueError("change_by is a number (e.g. 20) or a percentage (e.g. '5%')")
        if isinstance(v, str):
            try:
                v = float(v)  # a quoted number
            except ValueError:
                pass
        if isinstance(v, str):
            m = _PERCENT.match(v)
            if m is None:
                raise ValueError(f"change_by {v!r} is neither a number nor a percentage like '5%'")
            if float(m.group(1)) <= 0:
                raise ValueError("change_by must be more than 0%")
            return v.strip()
        if v <= 0:
            raise ValueError(f"change_by must be more than 0 (got {v:g})")
        return float(v)

    @model_validator(mode="after")
    def _mode(self):
        if self.on == "above" and self.above is None:
            raise ValueError("on: above needs 'above' (e.g. above: 0)")
        if self.above is not None and self.on not in (None, "above"):
            raise ValueError("'above' only applies with on: above")
        if self.change_by is not None and self.mode == "above":
            raise ValueError("change_by applies to on: change or on: increase, not to on: above (which has its own level)")
        return self

    @property
    def mode(self) -> str:
        return self.on or ("above" if self.above is not None else "change")

    @property
    def deadband(self) -> tuple[float, bool] | None:
        """(amount, relative): ``change_by: 20`` -> (20.0, False); ``change_by: '5%'`` -> (0.05, True)."""
        if self.change_by is None:
            return None
        if isinstance(self.change_by, str):
            return float(_PERCENT.match(self.change_by).group(1)) / 100.0, True  # type: ignore[union-attr]
        return float(self.change_by), False


class InactivityRule(RuleBase):
    type: Literal["inactivity"]
    sources: list[Source] = Field(min_length=1)
    per: Literal["household", "all"] = Field("household", description="one alert per household, or one for all sources")
    for_: PositiveDuration = Field(alias="for")
    schedule: Name | None = None
    quiet_hours: list[QuietItem] | None = None
    quiet: Literal["pause", "hold"] = Field("pause", description="pause: quiet time does not count; hold: it counts, alerts wait for its end")

    @model_validator(mode="after")
    def _one_schedule(self):
        if self.schedule is not None and self.quiet_hours is not None:
            raise ValueError("give schedule or quiet_hours, not both")
        return self


class CompositeRule(RuleBase, Debounced):
    of: list[RuleId] = Field(min_length=1, description="ids of other rules")
    same_device: bool = Field(False, description="true: per device, all components on the same device")


class AllRule(CompositeRule):
    type: Literal["all"]


class AnyRule(CompositeRule):
    type: Literal["any"]


Rule = Annotated[
    Union[ThresholdRule, RateRule, StateRule, InactivityRule, FlowRule, StaleRule, AllRule, AnyRule],
    Field(discriminator="type"),
]


class ExternalSource(ReraisePolicy):
    """Alerts raised by other parts of the gateway (``camera.fall``): their class, outputs and text."""

    class_: Name | None = Field(None, alias="class", description="alert class: its escalation chain")
    severity: Severity | None = Field(None, description="overrides the severity the source gives")
    outputs: list[Output] = Field(default_factory=list)
    message: Messages | None = None
