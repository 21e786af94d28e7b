"""Per-slave health on an RS-485 line: failure counts, backoff, quarantine and re-probes.

Many slaves share one slow line, so a dead one must not cost a full reply
timeout on every poll.  After a failure (timeout, CRC error, garbled or
truncated reply) a slave's next polls wait out a jittered exponential backoff
and fail at once meanwhile; after ``quarantine_after`` failures in a row it is
quarantined: its polls fail at once with ``DeviceQuarantined`` and cost no
wire time, except one re-probe per ``reprobe_interval`` (waiting only the
floor timeout, but every ``LONG_PROBE_EVERY``-th the ceiling: see
``rtu_timeouts``); the first answer brings it back.  A Modbus exception reply proves the slave is alive.  A
command is always tried: an operator's write must not wait for a re-probe.

Pure bookkeeping (no I/O, no clock of its own): the line passes ``now``.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any

from core.backoff import Backoff
from drivers.errors import DeviceError, DeviceQuarantined, DeviceTimeout, DeviceUnreachable
from drivers.modbus.rtu_timeouts import LONG_PROBE_EVERY, ProbeWait

log = logging.getLogger("canopy.modbus.rtu")


@dataclass(frozen=True)
class SlavePolicy:
    """How quickly a failing slave is backed off and quarantined (the bus's config)."""

    quarantine_after: int = 3
    reprobe_interval: float = 30.0
    backoff_initial: float = 1.0
    backoff_max: float = 10.0


@dataclass
class SlaveState:
    unit: int
    device: str | None = None
    requests: int = 0
    ok: int = 0
    failures: int = 0  # timeouts, CRC errors, garbled or truncated replies
    exceptions: int = 0  # Modbus exception replies (the slave is alive)
    skipped: int = 0  # requests failed fast (backoff or quarantine), no wire time
    consecutive: int = 0
    quarantined: bool = False
    quarantines: int = 0
    probes: int = 0  # re-probes while quarantined
    retry_at: float = 0.0
    next_probe_at: float = 0.0
    last_error: str = ""
    last_error_type: type[DeviceError] = DeviceTimeout
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    backoff: Backoff | None = None

    def probe_wait(self) -> ProbeWait:
        """How long the current re-probe waits: the floor, or every LONG_PROBE_EVERY-th the ceiling."""
        return "ceiling" if self.probes % LONG_PROBE_EVERY == 0 else "floor"

    @property
    def who(self) -> str:
        return f"unit {self.unit}" + (f" ({self.device})" if self.device else "")

    def state(self, now: float) -> str:
        if self.quarantined:
            return "quarantined"
        if self.consecutive and now < self.retry_at:
            return "backoff"
        if self.consecutive:
            return "failing"
        return "ok" if self.ok or self.exceptions else "unknown"

    def latency_ms(self) -> dict | None:
        if not self.latencies:
            return None
        lat = sorted(self.latencies)
        return {
            "last": round(self.latencies[-1] * 1000, 2),
            "avg": round(sum(lat) / len(lat) * 1000, 2),
            "p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000, 2),
        }

    def as_dict(self, now: float) -> dict:
        attempts = self.ok + self.failures + self.exceptions
        d = {
            "device": self.device,
            "state": self.state(now),
            "requests": self.requests,
            "ok": self.ok,
            "failures": self.failures,
            "exceptions": self.exceptions,
            "skipped": self.skipped,
            "success_rate": round((self.ok + self.exceptions) / attempts, 4) if attempts else None,
            "consecutive_failures": self.consecutive,
            "quarantines": self.quarantines,
            "latency_ms": self.latency_ms(),
        }
        if self.quarantined:
            d["next_probe_in_s"] = round(max(0.0, self.next_probe_at - now), 2)
        if self.last_error:
            d["last_error"] = self.last_error
        return d


class Slaves:
    """The slaves of one line by unit, and what their record decides for the next request."""

    def __init__(self, policy: SlavePolicy, line_name: str):
        self.policy = policy
        self.line_name = line_name
        self.by_unit: dict[int, SlaveState] = {}

    def get(self, unit: int, device: str | None = None) -> SlaveState:
        slave = self.by_unit.get(unit)  # not setdefault: that would build a SlaveState on every request
        if slave is None:
            slave = self.by_unit[unit] = SlaveState(unit)
        if device:
            slave.device = device
        return slave

    def admit(self, slave: SlaveState, now: float, *, command: bool) -> bool:
        """May this request go on the wire?  Raises the fail-fast error if not; True if it is a re-probe."""
        if command:
            return False
        if slave.quarantined:
            if now < slave.next_probe_at:
                slave.skipped += 1
                raise DeviceQuarantined(f"unit {slave.unit} quarantined ({slave.last_error}); "
                                        f"next re-probe in {slave.next_probe_at - now:.1f}s")
            slave.next_probe_at = now + self.policy.reprobe_interval  # this request is the probe
            slave.probes += 1
            return True
        if slave.consecutive and now < slave.retry_at:
            slave.skipped += 1
            raise slave.last_error_type(f"{slave.last_error} (backing off, next try in {slave.retry_at - now:.2f}s)")
        return False

    def succeeded(self, slave: SlaveState, latency: float, reply: Any) -> None:
        if getattr(reply, "isError", None) is not None and reply.isError():
            slave.exceptions += 1
        else:
            slave.ok += 1
        slave.latencies.append(latency)
        if slave.quarantined:
            log.info("%s: %s answers again; back from quarantine", self.line_name, slave.who)
        slave.quarantined = False
        slave.probes = 0
        slave.consecutive = 0
        slave.retry_at = 0.0
        slave.last_error = ""
        if slave.backoff is not None:
            slave.backoff.reset()

    def failed(self, slave: SlaveState, exc: DeviceError, now: float) -> None:
        """Count a failure; raises DeviceQuarantined instead of ``exc`` once the slave is quarantined."""
        if isinstance(exc, (DeviceUnreachable, DeviceQuarantined)):
            return  # the port's fault, not the slave's
        p = self.policy
        slave.failures += 1
        slave.consecutive += 1
        slave.last_error = f"{exc.status}: {exc}"
        slave.last_error_type = type(exc)
        if slave.quarantined:
            slave.next_probe_at = now + p.reprobe_interval
            raise DeviceQuarantined(f"{slave.who} still not answering at re-probe ({exc}); "
                                    f"next in {p.reprobe_interval:g}s") from None
        if slave.consecutive >= p.quarantine_after:
            slave.quarantined = True
            slave.quarantines += 1
            slave.next_probe_at = now + p.reprobe_interval
            log.warning("%s: %s quarantined after %d consecutive failures (%s); re-probing every %gs",
                        self.line_name, slave.who, slave.consecutive, exc, p.reprobe_interval)
            raise DeviceQuarantined(f"{slave.who} quarantined after {slave.consecutive} consecutive failures "
                                    f"(last: {exc}); re-probe every {p.reprobe_interval:g}s") from None
        if slave.backoff is None:
            slave.backoff = Backoff(p.backoff_initial, p.backoff_max)
        slave.retry_at = now + slave.backoff.next()

    def as_dict(self, now: float) -> dict:
        return {str(u): s.as_dict(now) for u, s in sorted(self.by_unit.items())}
