"""What flows through the gateway: readings from drivers, records in the outbox.

A Reading is one decoded value of one point.  A Record is what the outbox
stores: a lane (its delivery class) and a pre-encoded JSON body, so the hot
path encodes each value exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import math

import orjson

Lane = Literal["alarm", "event", "telemetry"]
# Delivery priority: alarms overtake events, events overtake telemetry.
LANES: tuple[Lane, ...] = ("alarm", "event", "telemetry")

Value = int | float | str | bool


@dataclass(frozen=True, slots=True)
class Reading:
    ts: float  # wall-clock epoch seconds when the value was read
    device: str
    point: str
    value: Value
    unit: str = ""


def reading_body(r: Reading) -> bytes:
    value = r.value
    body = {"ts": round(r.ts, 3), "device": r.device, "point": r.point, "value": value}
    if isinstance(value, float) and not math.isfinite(value):
        # "sensor not ready" patterns: say so instead of a bare JSON null
        body["value"] = None
        body["invalid"] = "nan" if value != value else ("inf" if value > 0 else "-inf")
    if r.unit:
        body["unit"] = r.unit
    return orjson.dumps(body)


def event_body(ts: float, type_: str, **fields) -> bytes:
    return orjson.dumps({"ts": round(ts, 3), "type": type_, **fields})
