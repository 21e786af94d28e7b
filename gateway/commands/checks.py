"""Cross-checks of the ``commands:`` section that need the whole site: devices, points, keys, zones, control ids.

Shapes are pydantic's (config.py); what can only be judged against the buses,
the profiles and the rest of the site is here, one function per section, each
problem with the file, the line and the key (docs/commands.md#configuration-commands).
"""

from __future__ import annotations

import fnmatch
import os

from gateway.commands.targets import SITE_ACTIONS, device_locations, resolve_key_text

def _device_points(site, profiles) -> dict[str, dict[str, object]]:
    """device id -> {point name: Point or LinePoint} for every configured device."""
    out: dict[str, dict[str, object]] = {}
    for bus in site.buses:
        for dev in bus.devices:
            if getattr(dev, "profile", None) is not None:
                prof = profiles.get(dev.profile)
                out[dev.id] = {p.name: p for p in prof.points} if prof else {}
            else:
                out[dev.id] = {p.name: p for p in getattr(dev, "points", [])}
    return out


class _Checks:
    """What the cross-checks share: the problems found, the site's points, the ids and outputs claimed so far."""

    def __init__(self, site, profiles, src):
        self.src = src
        self.problems: list = []
        self.points = _device_points(site, profiles)
        self.targets: dict[str, tuple] = {}
        self.zones: dict[int, tuple] = {}
        self.outputs: dict[tuple[str, str], tuple] = {}

    def problem(self, path, message: str) -> None:
        self.problems.append(self.src.problem(path, message))

    def point_of(self, path, device, point, *, writable=False, what="point"):
        if device not in self.points:
            self.problem(path + ("device",), f"unknown device '{device}' (not on any bus)")
            return None
        p = self.points[device].get(point)
        if p is None:
            have = ", ".join(sorted(self.points[device])) or "none"
            self.problem(path + (what,), f"device '{device}' has no point '{point}' (it has: {have})")
            return None
        if writable and not getattr(p, "writable", False):
            self.problem(path + (what,), f"point '{point}' of '{device}' is not writable (profile says writable: false)")
            return None
        return p

    def claim(self, path, tid) -> None:
        if tid == "*":
            self.problem(path + ("id",), "'*' is reserved (close_all)")
        elif tid in self.targets:
            self.problem(path + ("id",), f"duplicate target id '{tid}' (first at line {self.src.line_of(self.targets[tid])})")
        self.targets.setdefault(tid, path + ("id",))

    def claim_output(self, path, device, point) -> None:
        if (device, point) in self.outputs:
            self.problem(path + ("point",), f"{device}.{point} is already driven by line {self.src.line_of(self.outputs[(device, point)])}")
        self.outputs.setdefault((device, point), path + ("point",))


_BASE = ("commands",)


def validate_commands(site, profiles, src) -> list:
    """Cross-checks needing the whole site (unknown devices/points, keys); returns Problems."""
    cc = site.commands
    ck = _Checks(site, profiles, src)
    valves = _check_valves(ck, cc)
    _check_manifolds(ck, cc, valves)
    _check_locks(ck, cc)
    _check_programs(ck, cc, valves)
    if cc.timezone is not None:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(cc.timezone)
        except Exception:
            ck.problem(_BASE + ("timezone",), f"unknown time zone {cc.timezone!r} (use an IANA name such as Asia/Shanghai)")
    _check_issuers(ck, cc, site, os.path.dirname(os.path.abspath(src.file)))
    return ck.problems


def _check_valves(ck: _Checks, cc) -> dict:
    valves = {}
    for i, v in enumerate(cc.valves):
        path = _BASE + ("valves", i)
        ck.claim(path, v.id)
        valves[v.id] = v
        if v.zone is not None:
            if v.zone in ck.zones:
                ck.problem(path + ("zone",), f"zone {v.zone} is already valve at line {ck.src.line_of(ck.zones[v.zone])}")
            ck.zones.setdefault(v.zone, path + ("zone",))
        p = ck.point_of(path, v.device, v.point, writable=True)
        if p is not None:
            ck.claim_output(path, v.device, v.point)
            if getattr(p, "table", None) not in ("coil", "holding"):
                ck.problem(path + ("point",), f"point '{v.point}' is not a coil or holding register")
        if v.pulse_point is not None:
            pp = ck.point_of(path, v.device, v.pulse_point, writable=True, what="pulse_point")
            if pp is not None and getattr(pp, "table", None) != "holding":
                ck.problem(path + ("pulse_point",), "a pulse register must be a holding register (seconds)")
        if v.interlocks is not None:
            for name in ("moisture", "rain", "tank", "flow"):
                il = getattr(v.interlocks, name)
                if il is not None:
                    ck.point_of(path + ("interlocks", name), il.device, il.point)
            if v.interlocks.flow is not None and v.interlocks.flow.max > 0 and v.interlocks.flow.settle > v.max_run:
                ck.problem(path + ("interlocks", "flow", "settle"), "settle is longer than max_run: flow would never be judged")
        if v.feedback is not None:
            _check_feedback(ck, path + ("feedback",), v)
    return valves


def _check_feedback(ck: _Checks, path: tuple, v) -> None:
    fb = v.feedback
    p = ck.point_of(path, fb.device, fb.point)
    if p is None:
        return
    if (fb.device, fb.point) == (v.device, v.point) or (fb.device, fb.point) == (v.device, v.pulse_point):
        ck.problem(path + ("point",), f"'{fb.point}' is what the gateway writes: reading it back only says what was "
                                      "written; name the position switch or current sense")
    elif fb.above is not None and getattr(p, "type", None) == "bool":
        ck.problem(path + ("above",), f"'{fb.point}' is a bit (on/off): above applies to a number point (a current, a position)")


def _check_manifolds(ck: _Checks, cc, valves: dict) -> None:
    owner: dict[str, tuple] = {}
    ids: dict[str, tuple] = {}
    for i, m in enumerate(cc.manifolds):
        path = _BASE + ("manifolds", i)
        if m.id in ids:
            ck.problem(path + ("id",), f"duplicate manifold id '{m.id}' (first at line {ck.src.line_of(ids[m.id])})")
        ids.setdefault(m.id, path + ("id",))
        for j, vid in enumerate(m.valves):
            vpath = path + ("valves", j)
            if vid not in valves:
                ck.problem(vpath, f"unknown valve '{vid}' (commands.valves has: {', '.join(valves) or 'none'})")
            elif vid in owner:
                ck.problem(vpath, f"valve '{vid}' is already fed by the manifold at line {ck.src.line_of(owner[vid])}")
            owner.setdefault(vid, vpath)


def _check_locks(ck: _Checks, cc) -> None:
    for i, lk in enumerate(cc.locks):
        path = _BASE + ("locks", i)
        ck.claim(path, lk.id)
        if ck.point_of(path, lk.device, lk.point, writable=True) is not None:
            ck.claim_output(path, lk.device, lk.point)
        ck.point_of(path, lk.device, lk.state_point, what="state_point")
        for key in ("door_point", "tamper_point", "battery_point"):
            name = getattr(lk, key)
            if name is not None:
                ck.point_of(path, lk.device, name, what=key)
        if lk.relock_point is not None:
            ck.point_of(path, lk.device, lk.relock_point, writable=True, what="relock_point")
        elif lk.relock == "device":
            rp = ck.points.get(lk.device, {}).get("relock_time")
            if rp is None or not getattr(rp, "writable", False):
                ck.problem(path + ("relock",), "relock: device needs relock_point (the device's auto-relock register); "
                                               "this profile has no writable 'relock_time'")


def _check_programs(ck: _Checks, cc, valves: dict) -> None:
    for i, pr in enumerate(cc.programs):
        path = _BASE + ("programs", i)
        if pr.valve not in valves:
            ck.problem(path + ("valve",), f"unknown valve '{pr.valve}' (commands.valves has: {', '.join(valves) or 'none'})")
        elif pr.max_run > valves[pr.valve].max_run:
            ck.problem(path + ("max_run",), f"longer than the valve's max_run ({valves[pr.valve].max_run:g} s)")
        ck.point_of(path + ("sensor",), pr.sensor.device, pr.sensor.point)
    prog_ids = [p.id for p in cc.programs]
    for i, pid in enumerate(prog_ids):
        if pid in prog_ids[:i]:
            ck.problem(_BASE + ("programs", i, "id"), f"duplicate program id '{pid}'")


def _check_issuers(ck: _Checks, cc, site, base_dir: str) -> None:
    from core.protocol.envelope import KeyError_, load_public_key

    locations = device_locations(site)
    controls = {c.id: c.output.device for c in getattr(site, "controls", None) or []}
    devices = [t.device for t in list(cc.valves) + list(cc.locks)] + list(controls.values())
    buildings = {str(locations.get(d, {}).get("building")) for d in devices}
    names = list(ck.targets) + [c for c in controls if c not in ck.targets]
    for name, issuer in cc.issuers.items():
        path = _BASE + ("issuers", name)
        key_path = path + ("public_key" if issuer.public_key is not None else "public_key_file",)
        try:
            load_public_key(resolve_key_text(issuer, base_dir))
        except FileNotFoundError:
            ck.problem(key_path, f"file not found: {issuer.public_key_file}")
        except (OSError, UnicodeDecodeError) as exc:
            ck.problem(key_path, f"cannot read: {getattr(exc, 'strerror', None) or exc}")
        except KeyError_ as exc:
            ck.problem(key_path, str(exc))
        for j, pattern in enumerate(issuer.targets):
            if pattern != "*" and not any(fnmatch.fnmatchcase(t, pattern) for t in names):
                ck.problem(path + ("targets", j), f"'{pattern}' matches no valve or lock{' or control' if controls else ''} "
                                                  f"(have: {', '.join(names) or 'none'})")
        for j, b in enumerate(issuer.buildings):
            if str(b) not in buildings:
                ck.problem(path + ("buildings", j), f"no valve or lock is in building {b!r} (set location.building on the device)")
        wants_targets = set(issuer.actions) - SITE_ACTIONS
        if wants_targets and not issuer.targets and not issuer.buildings:
            ck.problem(path + ("actions",), f"{sorted(wants_targets)} need targets or buildings: on which valves/locks/controls?")
        if "override" in issuer.actions and not controls:
            ck.problem(path + ("actions",), "override needs a control to act on: this site has no `controls:`")
