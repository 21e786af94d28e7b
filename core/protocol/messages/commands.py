"""Records of the commands service: results, audit, valve/lock/program events (docs/commands.md),
and the v2 answers to config and replay envelopes.

Results of every signed envelope go to ``…/cmd/result`` (event lane); audit and actuator
events to ``…/event``.  ``state`` is the device's points as read back, a free object.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from core.protocol.messages.base import Id, Place, Record
from core.protocol.reasons import FAIL_REASONS, PROBLEMS, REJECT_REASONS

Reason = Literal[tuple(REJECT_REASONS) + tuple(FAIL_REASONS)]  # type: ignore[valid-type]
Problem = Literal[tuple(PROBLEMS) + ("unsigned",)]  # type: ignore[valid-type]
PointState = dict[str, Any]


class _Outcome(Record):
    """What a result and its audit record share: the envelope they answer, and why it went as it did."""

    id: str | None = Field(description="the envelope's id; null only for a message too broken to carry one")
    issuer: str | None
    action: str | None
    target: str | None
    on_behalf_of: str | None = Field(None, description="v2: the person a service signed for")
    reason: Reason | None = None
    problem: Problem | None = Field(None, description="v2, with reason `malformed`: what exactly was wrong")
    detail: str | None = None
    state: PointState | None = None
    duration_s: float | None = None
    interlock: str | None = None
    max_run_s: float | None = None
    lockout_until: float | None = None


class CmdResult(_Outcome):
    type: Literal["cmd.result"]
    status: Literal["rejected", "accepted", "queued", "executed", "failed"]
    closes_at: float | None = None
    device_timer: bool | None = None
    relock_at: float | None = None
    relock_by: str | None = None
    programs_paused_until: float | None = None
    confirmed: bool | None = Field(None, description="feedback (a position switch, a lock's bolt sensor) agreed; false: "
                                                     "only the coil was read back, or no feedback is configured")
    manifold: str | None = Field(None, description="queued, or rejected for capacity: the pump/manifold that is full")
    queued_until: float | None = Field(None, description="queued: the opening fails (queue_expired) if no slot frees by then")


class CmdAudit(_Outcome):
    type: Literal["cmd.audit"]
    outcome: Literal["rejected", "executed", "failed"]


class CmdJunk(Record):
    """At most one a minute: the junk refused on ``…/cmd`` since the last one, counted, never stored per message."""

    type: Literal["cmd.junk"]
    since: float
    total: int
    counts: dict[str, dict[str, int]] = Field(description="kind (unparseable, unsigned, unknown_issuer, replayed, "
                                                          "rate_limited, bad_signature, stale) → reason → count")
    issuers: dict[str, int] = Field(description="junk naming each configured issuer")


class ConfigResult(Record):
    """v2: the answer to a config envelope (``…/config``), on ``…/cmd/result``."""

    type: Literal["config.result"]
    id: str | None
    issuer: str | None
    on_behalf_of: str | None = None
    status: Literal["rejected", "accepted", "applied", "failed"]
    reason: str | None = None
    problem: Problem | None = None
    detail: str | None = None
    config: str | None = Field(None, description="the hash of the config now running (the meta version)")
    previous: str | None = Field(None, description="the hash of the config it replaced")


class ReplayResult(Record):
    """v2: the answer to a replay envelope (``…/replay``), on ``…/cmd/result``."""

    type: Literal["replay.result"]
    id: str | None
    issuer: str | None
    on_behalf_of: str | None = None
    status: Literal["rejected", "done", "partial"]
    reason: str | None = None
    problem: Problem | None = None
    detail: str | None = None
    lane: Literal["alarm", "event", "telemetry"] | None = None
    epoch: str | None = None
    first: int | None = Field(None, description="records: the first seq re-sent")
    last: int | None = Field(None, description="records: the last seq re-sent")
    oldest_kept: int | None = Field(None, description="partial: the oldest seq the gateway still holds")
    sent: int | None = Field(None, ge=0, description="records: how many records were sent again")
    pending: int | None = Field(None, ge=0, description="records: seqs of the range not delivered yet (they follow in order)")
    missing: int | None = Field(None, ge=0, description="records: seqs of the range no longer held (unrepairable)")
    missing_runs: list[list[int]] | None = Field(None, max_length=32,
                                                 description="records: the lowest runs [first, last] of missing seqs")


# -- valves and programs ----------------------------------------------------------------------
class _Cycle(Record):
    valve: Id
    source: Literal["remote", "program"] | None = None
    issuer: str | None = None
    command: str | None = None
    program: str | None = None


class ValveOpened(_Cycle):
    type: Literal["valve.opened"]
    duration_s: float
    closes_at: float
    device_timer: bool
    state: PointState | None
    replaced: dict[str, Any] | None = Field(None, description="the cycle this one replaced: source, issuer, program")
    confirmed: bool | None = Field(None, description="the valve's feedback agreed (false: no feedback configured)")


class ValveClosed(_Cycle):
    type: Literal["valve.closed"]
    reason: str = Field(description="duration_elapsed, max_run, target_reached, interlock, link_loss, command, close_all, "
                                    "shutdown or open_failed")
    opened_at: float
    ran_s: float
    planned_s: float | None
    state: PointState | None
    closed_by: str | None = None
    closed_by_command: str | None = None
    interlock: str | None = None
    detail: str | None = None


class ValveInterrupted(_Cycle):
    type: Literal["valve.interrupted"]
    opened_at: float | None
    planned_close_at: float | None
    duration_s: float | None
    device_timer: bool
    closed: bool
    state: PointState | None
    detail: str | None = None


class ValveUnexpectedOpen(Record):
    type: Literal["valve.unexpected_open"]
    valve: Id
    closes_at: float
    detail: str


class ValveCloseFailed(Record):
    """Alarm lane."""

    type: Literal["valve.close_failed"]
    valve: Id
    reason: str
    detail: str | None
    open: bool


class ValveNotConfirmed(_Cycle):
    """Alarm lane: a valve's feedback did not show it open within confirm_within; it is commanded closed again."""

    type: Literal["valve.not_confirmed"]
    expected: Literal["open", "closed"]
    feedback: dict[str, Any] = Field(description="the feedback point (``point`` or ``device.point``) -> the value last read")
    within_s: float
    detail: str


class ValveFlowAlarm(Record):
    """Alarm lane: a rule built in where a flow meter is configured."""

    type: Literal["valve.flow_alarm"]
    meter: str = Field(description="device.point of the flow meter")
    rule: Literal["flow_while_closed", "no_flow"]
    flow: float
    limit: float = Field(description="idle_max: at most this much counts as no flow")
    unit: str | None
    valves: list[Id]
    detail: str


class ValveFlowAlarmCleared(Record):
    type: Literal["valve.flow_alarm_cleared"]
    meter: str
    rule: Literal["flow_while_closed"]
    flow: float
    unit: str | None


class ValveCloseRecovered(Record):
    type: Literal["valve.close_recovered"]
    valve: Id
    attempts: int
    state: PointState | None


class ProgramFailed(Record):
    type: Literal["program.failed"]
    program: Id
    valve: Id
    reason: str
    detail: str | None


# -- locks ------------------------------------------------------------------------------------
class _Lock(Record):
    lock: Id


class LockUnlocked(_Lock):
    type: Literal["lock.unlocked"]
    issuer: str | None
    command: str | None
    relock_after_s: float | None
    relock_by: str | None
    state: PointState | None


class LockLocked(_Lock):
    type: Literal["lock.locked"]
    issuer: str | None
    command: str | None
    locked: bool | None
    state: PointState | None


class LockRelocked(_Lock):
    type: Literal["lock.relocked"]
    by: str
    reason: str
    issuer: str | None
    command: str | None
    locked: bool | None
    state: PointState | None


class LockRelockPending(_Lock):
    type: Literal["lock.relock_pending"]
    detail: str
    state: PointState | None


class LockLockoutEnded(_Lock):
    type: Literal["lock.lockout_ended"]
    by: str
    command: str | None = None
    was_until: float | None


class LockState(_Lock):
    type: Literal["lock.state"]
    locked: bool
    door_open: bool | None
    by_gateway: bool


class LockTamper(_Lock):
    type: Literal["lock.tamper"]
    tamper: bool


class LockBatteryLow(_Lock):
    type: Literal["lock.battery_low"]
    battery: float
    below: float


class LockLockout(_Lock):
    """Alarm lane: repeated rejected unlocks."""

    type: Literal["lock.lockout"]
    severity: Literal["critical"]
    attempts: int
    window_s: float
    until: float
    last_issuer: str | None
    last_reason: str | None
    location: Place | None
    message: str


ACTUATOR_EVENTS = (ValveOpened, ValveClosed, ValveInterrupted, ValveUnexpectedOpen, ValveCloseFailed, ValveCloseRecovered,
                   ValveNotConfirmed, ValveFlowAlarm, ValveFlowAlarmCleared, ProgramFailed, LockUnlocked, LockLocked, LockRelocked, LockRelockPending, LockLockoutEnded, LockState,
                   LockTamper, LockBatteryLow, LockLockout)
