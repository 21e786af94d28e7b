"""Cross-checks of the ``controls:`` section that need the whole site; every problem names file:line:key.

Points exist and fit (a number to regulate, a writable output whose on/off
values have its type, a readable feedback), each output has ONE owner (a
control, an alert rule's outputs, a valve or a lock: two owners would fight over
a relay), and the times fit the devices' poll intervals (a sensor cannot be
judged stale sooner than it is polled, nor a switch confirmed sooner than its
feedback is read).
"""

from __future__ import annotations

from typing import Any

from gateway.controls.config import ControlConfig
from gateway.controls.control import STALE_POLLS

BASE = ("controls",)


def _kind(pt) -> str:
    if pt.type == "bool":
        return "bool"
    return "text" if pt.type in ("string", "str") else "number"


def _value_kind(v) -> str:
    return "bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) else "text"


class _Site:
    """The devices of a site and their points; problems gathered with file:line."""

    def __init__(self, site, profiles, src):
        self.src = src
        self.devices: dict[str, Any] = {dev.id: dev for bus in site.buses for dev in bus.devices}
        self.profiles = profiles
        self.problems: list = []

    def problem(self, path: tuple, msg: str) -> None:
        self.problems.append(self.src.problem(BASE + path, msg))

    def point(self, path: tuple, device: str, point: str):
        dev = self.devices.get(device)
        if dev is None:
            self.problem(path + ("device",), f"unknown device '{device}' (devices: {', '.join(sorted(self.devices)) or 'none'})")
            return None
        if not getattr(dev, "enabled", True):
            self.problem(path + ("device",), f"device '{device}' is disabled (enabled: false): nothing would read or write it")
            return None
        prof = self.profiles.get(dev.profile) if getattr(dev, "profile", None) else None
        points = prof.points if prof is not None else getattr(dev, "points", [])
        pt = next((p for p in points if p.name == point), None)
        if pt is None:
            self.problem(path + ("point",), f"device '{device}' has no point '{point}' (points: {', '.join(p.name for p in points)})")
        return pt


def owners(site) -> dict[tuple[str, str], str]:
    """Outputs already driven by something else: (device, point) -> who (a rule's outputs, a valve, a lock)."""
    out: dict[tuple[str, str], str] = {}
    rc = getattr(site, "rules", None)
    for rule in (rc.rules if rc is not None else []):
        for o in rule.outputs:
            out.setdefault((o.device, o.point), f"the outputs of rule '{rule.id}'")
    for name, ext in (rc.external.items() if rc is not None else []):
        for o in ext.outputs:
            out.setdefault((o.device, o.point), f"the outputs of rules.external.{name}")
    cmds = getattr(site, "commands", None)
    for v in (cmds.valves if cmds is not None else []):
        out.setdefault((v.device, v.point), f"valve '{v.id}'")
    for lk in (cmds.locks if cmds is not None else []):
        out.setdefault((lk.device, lk.point), f"lock '{lk.id}'")
    return out


def validate_controls(site, profiles, src) -> list:
    """Problems of ``site.controls`` (a list of ControlConfig), each naming file:line:key."""
    ck = _Site(site, profiles, src)
    taken = owners(site)
    ids: dict[str, int] = {}
    for i, c in enumerate(getattr(site, "controls", None) or []):
        path = (i,)
        if c.id in ids:
            ck.problem(path + ("id",), f"duplicate control id '{c.id}' (first at line {src.line_of(BASE + (ids[c.id], 'id'))})")
        ids.setdefault(c.id, i)
        _check_points(ck, path, c)
        key = (c.output.device, c.output.point)
        if key in taken:
            ck.problem(path + ("output",), f"{c.output.device}/{c.output.point} is already driven by {taken[key]}: "
                                           f"one output has one owner")
        taken.setdefault(key, f"control '{c.id}'")
        _check_times(ck, path, c)
    return list(dict.fromkeys(ck.problems))


def _check_points(ck: _Site, path: tuple, c: ControlConfig) -> None:
    sensor = ck.point(path + ("sensor",), c.sensor.device, c.sensor.point)
    if sensor is not None and _kind(sensor) != "number":
        ck.problem(path + ("sensor", "point"), f"'{c.sensor.point}' is a {_kind(sensor)} point; a control regulates a number")
    out = ck.point(path + ("output",), c.output.device, c.output.point)
    if out is not None:
        if not getattr(out, "writable", False):
            ck.problem(path + ("output", "point"), f"point '{c.output.point}' of '{c.output.device}' is not writable")
        for key in ("on_value", "off_value"):
            v = getattr(c.output, key)
            if v is not None and _value_kind(v) != _kind(out):
                ck.problem(path + ("output", key), f"'{c.output.point}' is a {_kind(out)} point; {key} {v!r} does not fit")
        if c.output.on_value is not None and c.output.on_value == c.output.off_value:
            ck.problem(path + ("output", "off_value"), "on_value and off_value are the same: the control could not switch")
    if c.feedback is not None:
        fb = ck.point(path + ("feedback",), c.feedback.device, c.feedback.point)
        if fb is not None and c.feedback.above is not None and _kind(fb) != "number":
            ck.problem(path + ("feedback", "above"), f"'{c.feedback.point}' is a {_kind(fb)} point; above needs a number")


def _check_times(ck: _Site, path: tuple, c: ControlConfig) -> None:
    sensor = ck.devices.get(c.sensor.device)
    if sensor is not None and c.sensor_stale_after is not None and c.sensor_stale_after < 2 * sensor.poll_interval:
        ck.problem(path + ("sensor_stale_after",), f"sensor_stale_after {c.sensor_stale_after:g} s is shorter than two polls "
                                                   f"of '{c.sensor.device}' (poll_interval {sensor.poll_interval:g} s)")
    fb = c.feedback or c.output
    fb_dev = ck.devices.get(fb.device)
    if fb_dev is not None and c.confirm_within is not None and c.confirm_within < fb_dev.poll_interval:
        ck.problem(path + ("confirm_within",), f"confirm_within {c.confirm_within:g} s is shorter than the poll interval of "
                                               f"'{fb.device}' ({fb_dev.poll_interval:g} s): no feedback could ever confirm")
    if fb_dev is not None and c.confirm_within is None and STALE_POLLS * fb_dev.poll_interval > c.retry_after:
        ck.problem(path + ("retry_after",), f"retry_after {c.retry_after:g} s is shorter than the default confirm_within "
                                            f"({STALE_POLLS} polls of '{fb.device}')")
