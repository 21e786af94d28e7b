"""Typed config for remote commands: issuers and what they may do, valves, manifolds, programs, locks.

The site YAML's ``commands:`` section (docs/commands.md).  Durations are
seconds or text such as ``90s``, ``15m``, ``2h``, ``1h30m``.  Everything is
checked at load: pydantic for shapes here, checks.py for what needs the whole
site (devices, points, keys, time zones, control ids).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from core.model import Strict
# re-exported: the config loader, the alert acks and the remote config import these from here
from gateway.commands.checks import validate_commands as validate_commands
from gateway.commands.targets import resolve_key_text as resolve_key_text

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PointName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]

Action = Literal["irrigate", "close", "close_all", "resume_programs", "unlock", "lock", "reset_lockout", "override"]

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
    configure: bool = Field(False, description="may push a whole site config on …/config (`canopy remote configure`); "
                                               "docs/operations.md#remote-configuration")
    replay: bool = Field(False, description="may ask for records again on …/replay (the centre's gap repair); "
                                            "docs/protocol.md#replay")
    description: str = ""
    enabled: bool = True

    @model_validator(mode="after")
    def _one_key(self) -> "IssuerConfig":
        if (self.public_key is None) == (self.public_key_file is None):
            raise ValueError("give public_key or public_key_file (exactly one)")
        if not self.actions and not self.ack and not self.configure and not self.replay:
            raise ValueError("give actions (commands this issuer may send), ack (alerts it may acknowledge), "
                             "configure: true (site configs it may push) or replay: true, or several")
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
    settle: Duration = Field(60.0, ge=0, le=3600, description="seconds after opening (or closing) before flow is judged")
    idle_max: float = Field(0.0, ge=0, description="at most this much counts as no flow: more with every valve on the meter "
                                                   "closed is 'flow while closed', at most this with one open is 'no flow' "
                                                   "(each an alarm)")
    block_for: Duration = Field(1800.0, ge=0, le=7 * 86400, description="after this interlock stopped valves, openings on "
                                                                        "the meter are refused this long (0: not at all)")

    @model_validator(mode="after")
    def _range(self) -> "FlowInterlock":
        if self.max <= self.min:
            raise ValueError("max must be above min")
        if self.idle_max >= self.max:
            raise ValueError("idle_max must be below max")
        return self


class Interlocks(Strict):
    moisture: MoistureInterlock | None = None
    rain: RainInterlock | None = None
    tank: TankInterlock | None = None
    flow: FlowInterlock | None = None
    stale_after: Duration = Field(300.0, gt=0, le=86400, description="a reading older than this is unknown")
    if_unknown: Literal["block", "allow"] = Field("block", description="open or not when an interlock's reading is unknown")


class ValveFeedback(Strict):
    """A point that shows what the valve really does: a position switch, a current sense (never the coil itself)."""

    device: Id
    point: PointName
    above: float | None = Field(None, description="a number point reads open while above this; default: non-zero")
    inverted: bool = Field(False, description="true while the valve is closed (a closed-position switch)")


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
    feedback: ValveFeedback | None = Field(None, description="where the valve's real position is read; without it results "
                                                             "say confirmed: false")
    confirm_within: Duration = Field(10.0, gt=0, le=600, description="feedback must agree this soon after a write, else "
                                                                     "the command fails and an alarm is raised")


class ManifoldConfig(Strict):
    """A pump or manifold that can feed only so many zones at once."""

    id: Id
    valves: list[Id] = Field(min_length=1, description="the valves it feeds")
    max_open: int = Field(ge=1, le=999, description="zones it can feed at once")
    when_full: Literal["queue", "refuse"] = Field("queue", description="another opening waits for a free slot (queued), "
                                                                       "or is refused")
    max_wait: Duration = Field(1800.0, gt=0, le=86400, description="a queued opening fails if no slot frees this soon")


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
    manifolds: list[ManifoldConfig] = Field(default_factory=list, description="pumps/manifolds with a limit of open zones")
    programs: list[ProgramConfig] = Field(default_factory=list)
    locks: list[LockConfig] = Field(default_factory=list)
    timezone: str | None = Field(None, description="IANA zone for program windows and days (default: the board's local time)")
    close_all_hold: Duration = Field(6 * 3600.0, ge=0, le=7 * 86400, description="automatic programs pause this long after a close_all")
    max_payload: int = Field(8192, ge=512, le=65536, description="largest accepted command message (bytes)")
    queue: int = Field(64, ge=1, le=10000, description="commands waiting to be handled; more are dropped and counted")

    @field_validator("issuers", "valves", "manifolds", "programs", "locks", mode="before")
    @classmethod
    def _none(cls, v, info):  # "valves:" with nothing under it means none
        if v is None:
            return {} if info.field_name == "issuers" else []
        return v
