"""Feedback: what a valve's position switch (or current sense) says, and waiting until it agrees.

Reading the coil back only says what the gateway wrote; a valve whose motor is
dead, whose stem is jammed or whose diaphragm is stuck reads back "open" all the
same.  A valve with ``feedback:`` counts as opened (or closed) only when that
point agrees within ``confirm_within``; the wait reads the feedback device every
``POLL`` seconds and is ``park``\\ ed, so it never holds up the command queue or
``drain`` (valves.py decides what a disagreement means).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.commands.audit import describe
from gateway.commands.interlocks import is_number

POLL = 0.5  # seconds between feedback reads while waiting


def feedback_open(fb, value) -> bool | None:
    """True if ``value`` of feedback ``fb`` (a ValveFeedback) says open, False closed, None if it cannot say."""
    if isinstance(value, bool):
        on = value
    elif is_number(value):
        on = value > (fb.above if fb.above is not None else 0)
    else:
        return None
    return (not on) if fb.inverted else on


def feedback_key(v) -> str:
    """How the feedback appears in a result's ``state``: its point, or ``device.point`` on another device."""
    fb = v.cfg.feedback
    return fb.point if fb.device == v.cfg.device else f"{fb.device}.{fb.point}"


@dataclass(frozen=True, slots=True)
class Confirmation:
    confirmed: bool
    value: object = None  # the last feedback value read (None: none could be read)
    error: str | None = None  # why the last read failed

    def words(self, v, want_open: bool) -> str:
        """For people: what the feedback showed when it did not confirm."""
        seen = f"reads {self.value!r}" if self.value is not None else f"could not be read ({self.error or 'no value'})"
        return (f"{feedback_key(v)} {seen} {v.cfg.confirm_within:g} s after {'opening' if want_open else 'closing'} "
                f"{v.id}: the valve did not {'open' if want_open else 'close'}")


class FeedbackReader:
    def __init__(self, devices: dict, clock, jobs):
        self.devices = devices
        self.clock = clock
        self.jobs = jobs

    async def read(self, v) -> tuple[object, str | None]:
        """The feedback value now, or (None, why not)."""
        fb = v.cfg.feedback
        dev = self.devices.get(fb.device)
        if dev is None:
            return None, f"device {fb.device} is not running"
        try:
            values = {p.name: val for p, val in await dev.read_all()}
        except Exception as exc:
            return None, describe(exc)
        return values.get(fb.point), None

    async def wait_for(self, v, want_open: bool, first: object = None) -> Confirmation:
        """Read until the feedback shows ``want_open`` or ``confirm_within`` has passed.

        ``first``: a value already read together with the coil (same device), judged before any new read.
        """
        fb = v.cfg.feedback
        deadline = self.clock.monotonic() + v.cfg.confirm_within
        value, error = first, None
        if feedback_open(fb, value) is want_open:
            return Confirmation(True, value)
        while True:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return Confirmation(False, value, error)
            await self.jobs.park(min(POLL, left))
            value, error = await self.read(v)
            if feedback_open(fb, value) is want_open:
                return Confirmation(True, value)
