"""Typed config for remote commands: issuers and what they may do, valves, programs, locks.

The site YAML's ``commands:`` section (docs/commands.md).  Durations are
seconds or text such as ``90s``, ``15m``, ``2h``, ``1h30m``.  Everything is
checked at load: pydantic for shapes, :func:`validate_commands` for what needs
the whole site (devices, points, keys, time zones).
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from core.model import Strict

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PointName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]

ACTIONS = ("irrigate", "close", "close_all", "resume_programs", "unlock", "lock", "reset_lockout")
Action = Literal["irrigate", "close", "close_all", "resume_programs", "unlock", "lock", "reset_lockout"]
VALVE_ACTIONS = frozenset({"irrigate", "close"})
LOCK_ACTIONS = frozenset({"unlock", "lock", "reset_lockout"})
SITE_ACTIONS = frozenset({"close_all", "resume_programs"})  # target "*"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*([smhd])\s*)+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_WINDOW = re.compile(r"^\s*([01]?\d|2[0-4]):([0-5]\d)\s*-\s*([01]?\d|2[0-4]):([0-5]\d)\s*$")


def parse_duration(value) -> float:
    """Seconds from a number or text like ``90s``, ``15m``, ``1h30m``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 90s, 15m or 2h (got {value!r})")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return float(text)
        except ValueError:
            pass
        if _DURATION.match(text):
            return float(sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))
    raise ValueError(f"expected a duration such as 90s, 15m or 2h (got {value!r})")


Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_window(text: str) -> tuple[int, int]:
    """``"05:00-09:30"`` -> minutes of the day (start, end); end may be before start (over midnight)."""
    m = _WINDOW.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"expected a time window like 05:00-09:00 (got {text!r})")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start > 24 * 60 or end > 24 * 60 or start == end:
        raise ValueError(f"{text!r} is not a time window (start and end must differ, 00:00-24:00)")
    return start, end



ACK_ALL = "*"  # what ``ack: all`` is stored as
_ACK_SCOPE = re.compile(r"^(group:)?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _ack_scope_item(value) -> str:
    if not isinstance(value, str) or not (value == ACK_ALL or _ACK_SCOPE.match(value)):
        raise ValueError(f"{value!r} is not an alert class or group:<recipient group> (e.g. fire, group:property-office)")
    return value


def _ack_scopes(value):
    """``all`` -> ["*"]; ``null`` -> []; a list stays a list (its entries are checked one by one)."""
    if value == "all":
        return [ACK_ALL]
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("expected `all`, or a list of alert classes and group:<recipient group> entries")
    return value


AckScope = Annotated[str, BeforeValidator(_ack_scope_item)]


class IssuerConfig(Strict):
    """Someone who may sign commands or acks, and what they may do."""

    public_key: str | None = Field(None, description="Ed25519 public key: base64 of the raw 32 bytes (as `canopy keys gen` prints), or PEM text")
    public_key_file: str | None = Field(None, description="file holding the public key (.pub from `canopy keys gen`, or PEM); relative to the config file")
    actions: list[Action] = Field(default_factory=list, description="actions this issuer may ask for")
    targets: list[str] = Field(default_factory=list, description="valve/lock ids this issuer may command; globs allowed ('zone-*', '*')")
    buildings: list[str] = Field(default_factory=list, description="also any valve/lock whose device location has one of these buildings")
    ack: Annotated[list[AckScope], BeforeValidator(_ack_scopes)] = Field(
        default_factory=list, description="alerts this issuer may acknowledge and resolve: `all`, or alert classes and "
                                          "`group:<name>` (alerts that have reached that recipient group); docs/alerts.md")
    description: str = ""
    enabled: bool = True

    @model_validator(mode="after")
    def _one_key(self) -> "IssuerConfig":
        if (self.public_key is None) == (self.public_key_file is None):
            raise ValueError("give public_key or public_key_file (exactly one)")
        if not self.actions and not self.ack:
            raise ValueError("give actions (commands this issuer may send) or ack (alerts it may acknowledge), or both")
        return self

    def may_ack(self, cls: str | None, groups) -> bool:
        """Whether this issuer may acknowledge an alert of class ``cls`` that has reached ``groups``."""
        return ACK_ALL in self.ack or (cls is not None and cls in self.ack) or any(f"group:{g}" in self.ack for g in groups)


class Sensor(Strict):
    device: Id
    point: PointName


class MoistureInterlock(Strict):
    device: Id
    point: PointName = "moisture"
    above: float = Field(description="do not open, and stop, while the moisture is above this")


class RainInterlock(Strict):
    device: Id
    point: PointName = "rain_detected"


class TankInterlock(Strict):
    device: Id
    point: PointName = "level"
    below: float = Field(description="do not open, and stop, while the tank level is below this")


class FlowInterlock(Strict):
    device: Id
    point: PointName = "flow_rate"
    min: float = Field(0.0, ge=0, description="less flow than this while open: blocked line, stop")
    max: float = Field(description="more flow than this while open: leak, stop")
    settle: Duration = Field(60.0, ge=0, le=3600, description="seconds after opening before flow is judged")

    @model_validator(mode="after")
    def _range(self) -> "FlowInterlock":
        if self.max <= self.min:
            raise ValueError("max must be above min")
        return self


class Interlocks(Strict):
    moisture: MoistureInterlock | None = None
    rain: RainInterlock | None = None
    tank: TankInterlock | None = None
    flow: FlowInterlock | None = None
    stale_after: Duration = Field(300.0, gt=0, le=86400, description="a reading older than this is unknown")
    if_unknown: Literal["block", "allow"] = Field("block", description="open or not when an interlock's reading is unknown")


class ValveConfig(Strict):
    id: Id
    zone: int | None = Field(None, ge=1, le=999, description="zone number (`canopy remote irrigate --zone N` targets zone-N)")
    device: Id
    point: PointName = Field(description="the coil (or register) that opens the valve")
    pulse_point: PointName | None = Field(None, description="device-side delay-off register (seconds), if the module has one")
    max_run: Duration = Field(gt=0, le=86400, description="longest the valve may stay open, whoever asked")
    on_link_loss: Literal["keep", "close"] = Field("keep", description="keep the running timed cycle, or close after link_loss_after without the broker")
    link_loss_after: Duration = Field(300.0, ge=0, le=86400)
    interlocks: Interlocks | None = None


class ProgramConfig(Strict):
    """Automatic irrigation by moisture, inside time windows."""

    id: Id
    valve: Id
    sensor: Sensor
    start_below: float = Field(description="start when the reading is below this")
    stop_at: float = Field(description="stop when the reading reaches this")
    windows: list[str] = Field(default_factory=lambda: ["00:00-24:00"], min_length=1, description="local times a cycle may start, e.g. 05:00-09:00")
    max_run: Duration = Field(gt=0, le=86400, description="longest one automatic cycle")
    max_per_day: int = Field(ge=1, le=1000, description="at most this many cycles per local day")
    rest: Duration = Field(0.0, ge=0, le=86400, description="at least this long between the end of a cycle and the next start")
    stale_after: Duration = Field(300.0, gt=0, le=86400, description="a sensor reading older than this starts nothing")
    enabled: bool = True

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        for w in v:
            parse_window(w)
        return v

    @model_validator(mode="after")
    def _targets(self) -> "ProgramConfig":
        if self.stop_at <= self.start_below:
            raise ValueError("stop_at must be above start_below")
        return self


class LockConfig(Strict):
    id: Id
    device: Id
    point: PointName = Field("unlock", description="coil that unlocks (true) and locks (false)")
    state_point: PointName = Field("locked", description="read-back: true when locked")
    door_point: PointName | None = "door_open"
    tamper_point: PointName | None = "tamper"
    battery_point: PointName | None = "battery"
    battery_low: float = Field(20.0, ge=0, le=100, description="battery (%) below which a lock.battery_low event is sent")
    relock_after: Duration = Field(10.0, ge=1, le=3600, description="seconds after an unlock before it locks again")
    relock: Literal["auto", "device", "gateway"] = Field("auto", description="who relocks: the device (relock_point), the gateway, or auto (device if it can)")
    relock_point: PointName | None = Field(None, description="device-side auto-relock register (seconds); auto uses 'relock_time' if the profile has it")
    lockout_after: int = Field(5, ge=1, le=100, description="rejected unlock attempts within lockout_window that lock the lock out")
    lockout_window: Duration = Field(600.0, gt=0, le=86400)
    lockout_for: Duration = Field(900.0, gt=0, le=7 * 86400, description="how long unlocks are refused after a lockout")


class CommandsConfig(Strict):
    clock_skew: Duration = Field(30.0, ge=0, le=3600, description="how far issued_at may be ahead of the gateway's clock")
    max_validity: Duration = Field(3600.0, gt=0, le=7 * 86400, description="longest allowed expires_at - issued_at")
    issuers: dict[Id, IssuerConfig] = Field(default_factory=dict)
    valves: list[ValveConfig] = Field(default_factory=list)
    programs: list[ProgramConfig] = Field(default_factory=list)
    locks: list[LockConfig] = Field(default_factory=list)
    timezone: str | None = Field(None, description="IANA zone for program windows and days (default: the board's local time)")
    close_all_hold: Duration = Field(6 * 3600.0, ge=0, le=7 * 86400, description="automatic programs pause this long after a close_all")
    max_payload: int = Field(8192, ge=512, le=65536, description="largest accepted command message (bytes)")
    queue: int = Field(64, ge=1, le=10000, description="commands waiting to be handled; more are dropped and counted")

    @field_validator("issuers", "valves", "programs", "locks", mode="before")
    @classmethod
    def _none(cls, v, info):  # "valves:" with nothing under it means none
        if v is None:
            return {} if info.field_name == "issuers" else []
        return v


# -- cross-checks -----------------------------------------------------------------------------
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


def device_locations(site) -> dict[str, dict]:
    out = {}
    for bus in site.buses:
        for dev in bus.devices:
            loc = getattr(dev, "location", None)
            out[dev.id] = loc.model_dump(exclude_none=True) if loc is not None else {}
    return out


def resolve_key_text(issuer: IssuerConfig, base_dir: str) -> str:
    if issuer.public_key is not None:
        return issuer.public_key
    path = issuer.public_key_file if os.path.isabs(issuer.public_key_file) else os.path.join(base_dir, issuer.public_key_file)
    with open(path, encoding="utf-8") as f:
        return f.read()


def target_allowed(issuer: IssuerConfig, target_id: str, location: dict) -> bool:
    if any(fnmatch.fnmatchcase(target_id, pattern) for pattern in issuer.targets):
        return True
    building = location.get("building")
    return building is not None and str(building) in {str(b) for b in issuer.buildings}


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
    cc: CommandsConfig = site.commands
    ck = _Checks(site, profiles, src)
    valves = _check_valves(ck, cc)
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


def _check_valves(ck: _Checks, cc: CommandsConfig) -> dict[str, ValveConfig]:
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
    return valves


def _check_locks(ck: _Checks, cc: CommandsConfig) -> None:
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


def _check_programs(ck: _Checks, cc: CommandsConfig, valves: dict[str, ValveConfig]) -> None:
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


def _check_issuers(ck: _Checks, cc: CommandsConfig, site, base_dir: str) -> None:
    from core.protocol.envelope import KeyError_, load_public_key

    locations = device_locations(site)
    buildings = {str(locations.get(t.device, {}).get("building")) for t in list(cc.valves) + list(cc.locks)}
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
            if pattern != "*" and not any(fnmatch.fnmatchcase(t, pattern) for t in ck.targets):
                ck.problem(path + ("targets", j), f"'{pattern}' matches no valve or lock (have: {', '.join(ck.targets) or 'none'})")
        for j, b in enumerate(issuer.buildings):
            if str(b) not in buildings:
                ck.problem(path + ("buildings", j), f"no valve or lock is in building {b!r} (set location.building on the device)")
        wants_targets = set(issuer.actions) - SITE_ACTIONS
        if wants_targets and not issuer.targets and not issuer.buildings:
            ck.problem(path + ("actions",), f"{sorted(wants_targets)} need targets or buildings: on which valves/locks?")
