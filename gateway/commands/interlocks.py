"""The latest readings, and the interlocks judged on them (pure functions over what was seen).

Soil already wet, rain, tank low refuse an opening and stop a running cycle;
the words say which interlock and give the reading with its unit ("blocked by
interlock moisture: soil moisture 40.0 % is above 35.0 % (soil-2.moisture)").
A reading older than ``stale_after`` is unknown: an opening is refused
(``if_unknown: block``) or allowed, a running cycle is left alone.  The flow
interlock is judged per meter (flow.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

UNKNOWN = object()


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class Readings:
    """(device, point) -> (value, monotonic time seen), from every poll."""

    def __init__(self, clock):
        self.clock = clock
        self.latest: dict[tuple[str, str], tuple[object, float]] = {}

    def update(self, readings: Iterable) -> tuple[set, dict[str, dict]]:
        """Take a poll's readings; returns the keys seen and ``{device: {point: (value, ts)}}``."""
        mono = self.clock.monotonic()
        keys = set()
        by_device: dict[str, dict] = {}
        for r in readings:
            value = r.value
            if isinstance(value, float) and not math.isfinite(value):
                continue
            self.latest[(r.device, r.point)] = (value, mono)
            keys.add((r.device, r.point))
            by_device.setdefault(r.device, {})[r.point] = (value, r.ts)
        return keys, by_device

    def fresh(self, device: str, point: str, stale_after: float):
        """The value, or UNKNOWN if never seen or older than ``stale_after``."""
        rec = self.latest.get((device, point))
        if rec is None or self.clock.monotonic() - rec[1] > stale_after:
            return UNKNOWN
        return rec[0]

    def value(self, key: tuple[str, str]):
        return self.latest[key][0]


def with_unit(value, unit: str | None) -> str:
    """``40.0 %``, ``0.3 m``; a value without a unit as it is."""
    return f"{value} {unit}" if unit else f"{value}"


def _checks(il, units: dict) -> list:
    """(name, config, trips(value), words(value)) for each interlock configured; words name the unit."""
    def u(c):
        return units.get((c.device, c.point))

    checks = []
    if il.moisture is not None:
        checks.append(("moisture", il.moisture, lambda x, c=il.moisture: x > c.above,
                       lambda x, c=il.moisture: f"soil moisture {with_unit(x, u(c))} is above {with_unit(c.above, u(c))} "
                                                f"({c.device}.{c.point})"))
    if il.rain is not None:
        checks.append(("rain", il.rain, lambda x: bool(x), lambda x, c=il.rain: f"it is raining ({c.device}.{c.point})"))
    if il.tank is not None:
        checks.append(("tank", il.tank, lambda x, c=il.tank: x < c.below,
                       lambda x, c=il.tank: f"tank level {with_unit(x, u(c))} is below {with_unit(c.below, u(c))} "
                                            f"({c.device}.{c.point})"))
    return checks


def tripped(il, readings: Readings, opening: bool, units: dict | None = None) -> tuple[str, str] | None:
    """The first interlock of ``il`` (a valve's ``interlocks:``) that trips: (name, words with units), or None."""
    if il is None:
        return None
    for name, c, trips, say in _checks(il, units or {}):
        value = readings.fresh(c.device, c.point, il.stale_after)
        if value is UNKNOWN:
            if opening and il.if_unknown == "block":
                return name, (f"no reading of {c.device}.{c.point} in the last {il.stale_after:g} s, so it cannot be "
                              f"checked (if_unknown: block)")
            continue
        try:
            if trips(value):
                return name, say(value)
        except TypeError:
            continue
    return None


def blocked_words(name: str, words: str) -> str:
    """A refused opening, for people: ``blocked by interlock rain: it is raining (weather.rain_detected)``."""
    return f"blocked by interlock {name}: {words}"
