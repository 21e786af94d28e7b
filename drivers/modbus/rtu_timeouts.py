"""Adaptive reply timeouts: each slave's timeout learns how fast it answers, per function code.

With one fixed timeout (0.5 s), a dead slave costs half a second of a line
where a live one answers in 12 ms.  Here each (slave, function code) keeps
TCP's retransmission-timer estimate (RFC 6298: SRTT and RTTVAR, gains 1/8 and
1/4) of its *response delay*: from the end of the request on the wire to the
end of the reply, minus the reply's own wire time, so that short and long
reads teach the same thing, and writes (often slower: EEPROM) their own.
A request then waits::

    reply wire time + clamp(2 x SRTT + 4 x RTTVAR, floor, ceiling)

``2 x SRTT`` rather than RFC 6298's ``1 x``: a slave that always answers in
exactly 12 ms has RTTVAR near 0, and its first answer late by a few
milliseconds must not be cut off.  The floor is the least turnaround a slave
and its adapter get (t3.5 plus an FTDI's latency timer, say); the ceiling is
the bus's ``timeout`` (or a device's own).  Each timeout doubles the next one
(Karn/RFC 6298), up to the ceiling, until an answer is measured again.

No history (a slave dead from boot, or not yet heard): a read waits twice the
slowest read estimate of the line's other slaves (they share the adapter and
the wiring), or the ceiling while nobody has answered yet; a write with no
history waits the ceiling (an operator's command is not cut short).
Re-probes of a quarantined slave wait only the floor, but every
``LONG_PROBE_EVERY``-th waits the ceiling, so a slave slower than the floor
still comes back.

Pure bookkeeping: no clock, no I/O; the wire passes measured delays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ALPHA = 1 / 8  # SRTT gain (RFC 6298)
BETA = 1 / 4  # RTTVAR gain
K = 4  # RTTVAR multiplier
MAX_DOUBLINGS = 6  # 2**6 x: any estimate reaches the ceiling
READS = frozenset((1, 2, 3, 4, 23))  # function codes whose reply carries data the slave only reads
LONG_PROBE_EVERY = 4

ProbeWait = Literal["floor", "ceiling"]


@dataclass
class DelayEstimate:
    """Smoothed response delay of one slave for one function code, in seconds."""

    srtt: float = 0.0
    rttvar: float = 0.0
    samples: int = 0
    doublings: int = 0  # timeouts since the last measured answer

    def observe(self, delay: float) -> None:
        delay = max(0.0, delay)
        if self.samples == 0:
            self.srtt, self.rttvar = delay, delay / 2
        else:
            self.rttvar += BETA * (abs(self.srtt - delay) - self.rttvar)
            self.srtt += ALPHA * (delay - self.srtt)
        self.samples += 1
        self.doublings = 0

    def timed_out(self) -> None:
        self.doublings = min(self.doublings + 1, MAX_DOUBLINGS)

    def allowance(self) -> float:
        """The wait beyond the reply's wire time this estimate asks for (before bounds and doubling)."""
        return 2 * self.srtt + K * self.rttvar


@dataclass(frozen=True)
class TimeoutBounds:
    """The bus's limits (seconds beyond the reply's own wire time)."""

    ceiling: float = 0.5
    floor: float = 0.04


class ReplyTimeouts:
    """The estimates of one line by (unit, function code), and the timeout each request gets."""

    def __init__(self, bounds: TimeoutBounds):
        self.bounds = bounds
        self.by_key: dict[tuple[int, int], DelayEstimate] = {}  # <= 247 units x the function codes used

    def timeout(self, unit: int, fc: int, reply_wire: float, *, ceiling: float | None = None,
                probe: ProbeWait | None = None) -> float:
        """Seconds to wait after the request's last byte for the reply's last byte."""
        top = self.bounds.ceiling if ceiling is None else ceiling
        est = self.by_key.get((unit, fc))
        if probe == "floor":
            wait = self.bounds.floor
        elif probe == "ceiling":
            wait = top
        else:
            base = est.allowance() if est is not None and est.samples else self.first_guess(fc, top)
            wait = base * 2 ** (est.doublings if est is not None else 0)
        return reply_wire + min(top, max(self.bounds.floor, wait))

    def first_guess(self, fc: int, ceiling: float) -> float:
        """The wait for a (unit, fc) never heard: twice the slowest read of the line, or the ceiling."""
        if fc not in READS:
            return ceiling
        known = [e.allowance() for (_, f), e in self.by_key.items() if f in READS and e.samples]
        return 2 * max(known) if known else ceiling

    def observe(self, unit: int, fc: int, delay: float) -> None:
        self._get(unit, fc & 0x7F).observe(delay)

    def timed_out(self, unit: int, fc: int) -> None:
        self._get(unit, fc & 0x7F).timed_out()

    def _get(self, unit: int, fc: int) -> DelayEstimate:
        est = self.by_key.get((unit, fc))
        if est is None:
            est = self.by_key[(unit, fc)] = DelayEstimate()
        return est

    def as_dict(self) -> dict[int, dict]:
        """``{unit: {fc: {"delay_ms", "timeout_ms", "samples"}}}`` for ``canopy bus`` (timeout past the reply's wire time)."""
        out: dict[int, dict] = {}
        for (unit, fc), est in sorted(self.by_key.items()):
            out.setdefault(unit, {})[str(fc)] = {
                "delay_ms": round(est.srtt * 1000, 2) if est.samples else None,
                "timeout_ms": round(self.timeout(unit, fc, 0.0) * 1000, 2),
                "samples": est.samples}
        return out
