"""The latest readings, and the interlocks judged on them (pure functions over what was seen).

Soil already wet, rain, tank low refuse an opening and stop a running cycle;
abnormal flow stops the valves running on that meter.  A reading older than
``stale_after`` is unknown: an opening is refused (``if_unknown: block``) or
allowed, a running cycle is left alone.
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


def _checks(il) -> list:
    checks = []
    if il.moisture is not None:
        checks.append(("moisture", il.moisture, lambda x, c=il.moisture: x > c.above,
                       lambda x, c=il.moisture: f"soil moisture {x} is above {c.above} ({c.device}.{c.point})"))
    if il.rain is not None:
        checks.append(("rain", il.rain, lambda x: bool(x), lambda x, c=il.rain: f"rain detected ({c.device}.{c.point})"))
    if il.tank is not None:
        checks.append(("tank", il.tank, lambda x, c=il.tank: x < c.below,
                       lambda x, c=il.tank: f"tank level {x} is below {c.below} ({c.device}.{c.point})"))
    return checks


def tripped(il, readings: Readings, opening: bool) -> tuple[str, str] | None:
    """The first interlock of ``il`` (a valve's ``interlocks:``) that trips: (name, detail), or None."""
    if il is None:
        return None
    for name, c, trips, say in _checks(il):
        value = readings.fresh(c.device, c.point, il.stale_after)
        if value is UNKNOWN:
            if opening and il.if_unknown == "block":
                return name, f"no reading of {c.device}.{c.point} in the last {il.stale_after:g} s ({name} interlock cannot be checked)"
            continue
        try:
            if trips(value):
                return name, say(value)
        except TypeError:
            continue
    return None


def flow_trips(valves: Iterable, readings: Readings, keys: set, mono: float) -> list[tuple[object, str]]:
    """Running valves whose shared flow meter reads outside the sum of their ranges: [(valve, detail)]."""
    groups: dict[tuple[str, str], list] = {}
    for v in valves:
        fl = v.cfg.interlocks.flow if v.cfg.interlocks else None
        if fl is not None:
            groups.setdefault((fl.device, fl.point), []).append(v)
    out = []
    for key, group in groups.items():
        if key not in keys:
            continue
        running = [v for v in group if v.cycle is not None and not v.closing]
        if not running or any(mono - v.opened_mono < v.cfg.interlocks.flow.settle for v in running):
            continue
        value = readings.value(key)
        if not is_number(value):
            continue
        lo = sum(v.cfg.interlocks.flow.min for v in running)
        hi = sum(v.cfg.interlocks.flow.max for v in running)
        if value < lo:
            detail = f"flow {value} is below {lo:g} at {key[0]}.{key[1]} (blocked line?)"
        elif value > hi:
            detail = f"flow {value} is above {hi:g} at {key[0]}.{key[1]} (leak?)"
        else:
            continue
        out.extend((v, detail) for v in running)
    return out
