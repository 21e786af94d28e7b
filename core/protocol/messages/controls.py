"""Records of the local control loops (docs/controls.md#records): switching and manual overrides.

A control loop switching a fan is news, not an alarm: both records travel in the
``event`` lane on ``…/event``.  A control's own failure (output not confirmed, sensor
stale) is an alert (``alert.raised`` with ``rule`` ``control.failed`` or
``control.sensor_stale``), not one of these.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from core.protocol.messages.base import Id, Labels, Place, Record, Value

OnOff = Literal["on", "off"]
Mode = Literal["auto", "override", "safe", "idle", "fault"]
SwitchReason = Literal["start", "setpoint", "hysteresis", "max_run", "outside_hours", "sensor_stale", "sensor_back",
                       "output_fault", "fault_retry", "override", "override_ended", "restore"]


class _ControlRecord(Record):
    control: Id = Field(description="the control's id in the site config (`controls[].id`)")
    kind: str = Field(description="what it drives, in words: fan, heater, mister, vent, pump, other")
    location: Place
    message_key: str = Field(description="what the text says (`control.switched.setpoint`, `control.override.set`, …)")
    params: dict[str, Value] = Field({}, description="the text's parameters")
    texts: Labels = Field(description="the ready line for people, by language tag (`en`, `zh-CN`)")


class ControlSwitched(_ControlRecord):
    """Event lane: the control wrote its output (on or off), and why."""

    type: Literal["control.switched"]
    device: Id
    point: str
    state: OnOff
    previous: OnOff | None = Field(description="what it had commanded before; null after a start")
    value: Value = Field(description="the value written to the output point")
    reason: SwitchReason
    mode: Mode = Field(description="auto, override (a person), safe (sensor stale), idle (outside its hours), fault (output failed)")
    reading: dict[str, Any] | None = Field(description="the sensor reading it decided on (device, point, value, unit, ts)")
    setpoint: float | None
    hysteresis: float | None
    by: str | None = Field(None, description="mode override: the person who set it")
    until: float | None = Field(None, description="mode override: when it returns to auto")


class ControlOverride(_ControlRecord):
    """Event lane: a manual override was set, or ended (expired, cancelled, replaced)."""

    type: Literal["control.override"]
    state: Literal["on", "off", "auto"] = Field(description="what the person asked for; auto ends an override")
    until: float | None = Field(description="when the control returns to auto by itself")
    by: str | None
    ended: Literal["expired", "cancelled", "replaced"] | None = Field(None, description="set when this record ends an override")


CONTROL_EVENTS = (ControlSwitched, ControlOverride)
