"""One control at run time, built from its validated config: what the decisions need, what it waits for.

The pure decisions (loop.py) get a :class:`LoopSpec` of plain numbers; this adds
what only the running gateway knows: the device points it reads (sensor and
feedback), the values it writes, its writer, its words, and the switch it is
waiting to see confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from core.records import Reading
from gateway.alerts.rules.base import as_number, evidence_of
from gateway.alerts.timeutil import parse_window
from gateway.controls.config import ControlConfig
from gateway.controls.loop import LoopSpec, LoopState, Timetable
from gateway.controls.outputs import OutputWriter, WritePoint, same
from gateway.controls.records import ControlWords

STALE_POLLS = 3  # default sensor_stale_after and confirm_within: this many poll intervals of the device


@dataclass(frozen=True)
class Seen:
    """The latest feedback: on/off (None: it says neither), its raw value, when it was read."""

    on: bool | None
    raw: object
    ts: float


@dataclass(frozen=True)
class Expect:
    """A switch waiting for its feedback: the state, when it was commanded, until when it may take."""

    on: bool
    since: float
    deadline: float


def point_of(cfg, device_id: str, point: str):
    """The profile point (or serial-line point) ``point`` of ``device_id``, or None."""
    dev = next((d for _, d in cfg.devices() if d.id == device_id), None)
    if dev is None:
        return None
    prof = cfg.profiles.get(dev.profile) if getattr(dev, "profile", None) else None
    if prof is not None:
        return next((p for p in prof.points if p.name == point), None)
    return next((p for p in getattr(dev, "points", []) if p.name == point), None)


def is_bool(pt) -> bool:
    return pt is not None and pt.type == "bool"


class Control:
    def __init__(self, cfg: ControlConfig, spec: LoopSpec, *, confirm_within: float, on_value, off_value,
                 writer: OutputWriter, words: ControlWords, started: float):
        self.cfg = cfg
        self.id = cfg.id
        self.spec = spec
        self.confirm_within = confirm_within
        self.on_value, self.off_value = on_value, off_value
        self.writer = writer
        self.words = words
        self.state = LoopState(started=started)
        self.sensor = (cfg.sensor.device, cfg.sensor.point)
        fb = cfg.feedback or cfg.output
        self.feedback_point = (fb.device, fb.point)
        self.reading: dict | None = None  # the sensor reading decided on (evidence)
        self.seen: Seen | None = None
        self.expect: Expect | None = None
        self.judged = float("-inf")  # the feedback reading last judged without a switch pending
        self.failed_alert = self.stale_alert = False
        self.faults = 0
        self.confirmed_at: float | None = None

    def value_of(self, on: bool):
        return self.on_value if on else self.off_value

    def observe_sensor(self, r: Reading) -> bool:
        v = as_number(r.value)
        if v is None or (self.state.value_ts is not None and r.ts < self.state.value_ts):
            return False
        self.state.value, self.state.value_ts = v, r.ts
        self.reading = evidence_of(r)
        return True

    def observe_feedback(self, r: Reading) -> None:
        self.seen = Seen(self.feedback_on(r.value), r.value, r.ts)

    def feedback_on(self, value) -> bool | None:
        """What a feedback value says: on, off, or nothing it can tell."""
        fb = self.cfg.feedback
        if fb is None:  # the output point read back
            return True if same(value, self.on_value) else False if same(value, self.off_value) else None
        if isinstance(value, bool):
            return value
        n = as_number(value)
        if n is None:
            return None
        return n > fb.above if fb.above is not None else n != 0


def build(c: ControlConfig, cfg, now: float, write_point: WritePoint | None) -> Control:
    """A Control from its validated config (``cfg``: the LoadedConfig, for devices, profiles and time zone)."""
    intervals = {dev.id: dev.poll_interval for _, dev in cfg.devices()}
    locations = {dev.id: dev.location.model_dump(exclude_none=True) if dev.location else {} for _, dev in cfg.devices()}
    rules = cfg.site.rules
    tz_name = c.timezone or (rules.timezone if rules is not None else None)
    tz = ZoneInfo(tz_name) if tz_name else None
    timetable = Timetable([parse_window(w) for w in c.active_hours or []],
                          [(parse_window({"from": s.from_, "to": s.to, "days": s.days}), s.setpoint) for s in c.setpoints], tz)
    spec = LoopSpec(on_when=c.on_when, setpoint=c.setpoint, hysteresis=c.hysteresis, min_on=c.min_on, min_off=c.min_off,
                    max_run=c.max_run, stale_after=c.sensor_stale_after or STALE_POLLS * intervals[c.sensor.device],
                    safe_state=c.safe_state, retry_after=c.retry_after, timetable=timetable)
    out_pt = point_of(cfg, c.output.device, c.output.point)
    on_value = c.output.on_value if c.output.on_value is not None else (True if is_bool(out_pt) else 1)
    off_value = c.output.off_value if c.output.off_value is not None else (False if is_bool(out_pt) else 0)
    fb = c.feedback or c.output
    sensor_pt = point_of(cfg, c.sensor.device, c.sensor.point)
    words = ControlWords(c, getattr(sensor_pt, "unit", "") or "", {"site": cfg.site.site, **locations.get(c.output.device, {})}, tz)
    return Control(c, spec, confirm_within=c.confirm_within or STALE_POLLS * intervals[fb.device], on_value=on_value,
                   off_value=off_value, writer=OutputWriter(c.output.device, c.output.point, write_point), words=words,
                   started=now)
