"""One control's decisions: a dataclass state and pure functions of (spec, state, now).  No clock, no I/O.

``decide`` says which mode the control is in and whether its output must switch:

1. ``override`` -- a person's manual state, until its time is up;
2. ``safe`` -- the sensor is stale: the safe state (``hold``: leave it);
3. ``fault`` -- the output did not confirm a switch: the safe state until ``retry_after``;
4. ``idle`` -- outside ``active_hours``: off;
5. ``auto`` -- on/off with hysteresis around the setpoint of the moment
   (``on_when: above``: on above the setpoint, off below setpoint - hysteresis;
   ``below`` the mirror image), never sooner than ``min_on``/``min_off`` after the
   last switch, and off after ``max_run`` (then at least ``min_off`` of rest).

Minimum times hold automatic switching only: a person, a stale sensor or a
failed output act at once, and the first command after a start (when the
output's real state was unknown) holds nothing back.  ``confirm`` judges the feedback of a switch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.alerts.timeutil import Schedule, Window

# the reason of the first automatic switch after another mode
BACK_FROM = {"override": "override_ended", "safe": "sensor_back", "fault": "fault_retry", "idle": "setpoint"}


class Timetable:
    """Active hours and setpoint windows in one time zone (``None``: the board's)."""

    def __init__(self, hours: list[Window] | None = None, setpoints: list[tuple[Window, float]] | None = None, tz=None):
        self.hours = Schedule(hours, tz) if hours else None
        self.setpoints = [(Schedule([w], tz), sp) for w, sp in (setpoints or [])]

    def active(self, t: float) -> bool:
        return self.hours is None or self.hours.is_quiet(t)  # "quiet" is "inside a window" of a Schedule

    def setpoint(self, t: float, default: float) -> float:
        return next((sp for sched, sp in self.setpoints if sched.is_quiet(t)), default)


@dataclass(frozen=True)
class LoopSpec:
    """What the decisions need of a control's config, as plain numbers."""

    on_when: str  # "above" | "below"
    setpoint: float
    hysteresis: float = 0.0
    min_on: float = 0.0
    min_off: float = 0.0
    max_run: float | None = None
    stale_after: float = 60.0
    safe_state: str = "off"  # "on" | "off" | "hold"
    retry_after: float = 300.0
    timetable: Timetable = field(default_factory=Timetable)


@dataclass(frozen=True)
class Override:
    on: bool
    until: float
    by: str | None = None
    since: float = 0.0


@dataclass
class LoopState:
    """What one control remembers between decisions."""

    started: float = 0.0
    commanded: bool | None = None  # what it last decided for the output (None: nothing yet since start)
    switched_at: float | None = None  # when
    reason: str = ""  # why (the first command after a start holds nothing back: the output's state was unknown)
    mode: str = "auto"
    value: float | None = None  # the latest sensor value, and its reading's time
    value_ts: float | None = None
    override: Override | None = None
    fault_until: float | None = None  # after an output fault: the safe state until then


@dataclass(frozen=True)
class Decision:
    mode: str
    on: bool | None  # the output's state now; None: leave it as it is
    reason: str = ""


def stale(spec: LoopSpec, st: LoopState, now: float) -> bool:
    """No sensor reading for ``stale_after`` (counted from the start when none came yet)."""
    since = st.value_ts if st.value_ts is not None else st.started
    return now - since >= spec.stale_after


def _safe(spec: LoopSpec, st: LoopState) -> bool | None:
    return st.commanded if spec.safe_state == "hold" else spec.safe_state == "on"


def decide(spec: LoopSpec, st: LoopState, now: float) -> Decision:
    """The mode and the output state for ``now`` (see the module docstring for the order)."""
    if st.override is not None and now < st.override.until:
        return Decision("override", st.override.on, "override")
    if stale(spec, st, now):
        return Decision("safe", _safe(spec, st), "sensor_stale")
    if st.fault_until is not None and now < st.fault_until:
        return Decision("fault", _safe(spec, st), "output_fault")
    if not spec.timetable.active(now):
        return Decision("idle", False, "outside_hours")
    return _auto(spec, st, now)


def _auto(spec: LoopSpec, st: LoopState, now: float) -> Decision:
    if st.value is None:
        return Decision("auto", None)  # no reading yet: nothing to decide on (stale_after brings the safe state)
    sp, v = spec.timetable.setpoint(now, spec.setpoint), st.value
    if spec.on_when == "above":
        want_on, want_off = v > sp, v < sp - spec.hysteresis
    else:
        want_on, want_off = v < sp, v > sp + spec.hysteresis
    on = st.commanded
    if on is None:  # nothing commanded since start: the output's state is unknown, say it now
        return Decision("auto", want_on, "start")
    ran = now - st.switched_at if st.switched_at is not None else 0.0
    if on and spec.max_run is not None and ran >= spec.max_run:
        return Decision("auto", False, "max_run")
    if not on and want_on:
        target, reason = True, "setpoint"
    elif on and want_off:
        target, reason = False, "hysteresis"
    else:  # inside the band, or already where it should be: keep it (that is the hysteresis)
        return Decision("auto", None)
    held = spec.min_off if target else spec.min_on
    if st.switched_at is not None and ran < held and st.reason != "start":
        return Decision("auto", None)  # short-cycling guard: ask again when the minimum time is over
    return Decision("auto", target, BACK_FROM.get(st.mode, reason) if st.mode != "auto" else reason)


def confirm(expected: bool, feedback_on: bool | None) -> str:
    """``confirmed`` when the feedback agrees, ``pending`` while it does not (yet) or says nothing."""
    return "confirmed" if feedback_on is not None and feedback_on == expected else "pending"
