"""``override``: a signed command that holds a local control on or off for a while, then back to auto.

The greenhouse fan is a local loop (gateway/controls/); somebody working in the
greenhouse, or the centre on a person's behalf, may hold it ``on`` or ``off``
for ``duration_s`` seconds (at most the control's ``max_override``), or end a
hold with ``auto``.  The target is the control's id; authorisation is the
issuer's ``actions`` (``override``) and ``targets``/``buildings`` (the building
of the control's output device), like any other command.  The work is the
controls' own ``override(control, state, until, by)`` API: this module only
checks the parameters, calls it and answers.  ``controls`` is duck-typed, so
the command service does not import gateway.controls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.timefmt import fmt_time
from gateway.commands.intake import unknown_params
from gateway.commands.lockout import requester

STATES = ("on", "off", "auto")
_REFUSALS = {"unknown_control": "unknown_target", "bad_state": "invalid_params", "bad_until": "invalid_params"}


@dataclass(frozen=True, slots=True)
class ControlTarget:
    """A control as a command's target (resolved and authorised like a valve or a lock)."""

    id: str
    device_id: str  # its output device: ``buildings`` authorisation looks at its location
    kind: str = "control"
    alias: str | None = None


def control_targets(site) -> dict[str, ControlTarget]:
    return {c.id: ControlTarget(c.id, c.output.device) for c in getattr(site, "controls", None) or []}


def _state(value):
    """``on``/``off``/``auto``; YAML-ish true/false are on/off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


class Overrides:
    def __init__(self, controls, *, clock, audit, tz=None):
        self.controls = controls  # ControlService, or None when the site has none (or it is not wired)
        self.clock = clock
        self.audit = audit
        self.tz = tz

    async def cmd_override(self, env, info, target: ControlTarget) -> None:
        if (problem := unknown_params(env, {"state", "duration_s"})) is not None:
            return await self.audit.reject(info, "invalid_params", problem)
        state = _state(env.params.get("state"))
        if state not in STATES:
            return await self.audit.reject(info, "invalid_params", f"state must be one of on, off, auto (got {state!r})")
        d = env.params.get("duration_s")
        if state != "auto" and (isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d <= 0):
            return await self.audit.reject(info, "invalid_params", f"override {state} needs duration_s, a positive number "
                                                                   f"of seconds (got {d!r})")
        if self.controls is None:
            return await self.audit.reject(info, "unknown_target", f"the controls of this gateway are not running; "
                                                                   f"{target.id} cannot be overridden")
        until = None if state == "auto" else self.clock.time() + float(d)
        res = self.controls.override(target.id, state, until, by=requester(env.issuer, env.on_behalf_of))
        if not res.ok:
            return await self.audit.reject(info, _REFUSALS.get(res.reason, "invalid_params"), res.detail or str(res.reason))
        await self.audit.accepted(info)
        shown = (self.controls.snapshot() or {}).get(target.id, {})
        words = (f"{target.id} back to automatic" if state == "auto" else
                 f"{target.id} held {state} until {fmt_time(res.until, self.tz)}, then back to automatic")
        await self.audit.finish(info, "executed", detail=words,
                                state={"mode": shown.get("mode"), "output": shown.get("output"), "override": state,
                                       "until": round(res.until, 3) if res.until else None})
