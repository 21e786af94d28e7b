"""Per-device health: status, counters, and the transitions worth an event.

The poller reports every outcome here; only *changes* (ok -> timeout,
timeout -> ok) become events and loud log lines, so a dead device produces one
alert-worthy record, not one per poll.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from core.backoff import FailureLog

log = logging.getLogger("canopy.devices")


@dataclass
class DeviceStatus:
    id: str
    bus: str
    status: str = "unknown"  # unknown | ok | timeout | unreachable | exception | bad_reply | error
    detail: str = ""
    polls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    overruns: int = 0  # polls skipped because the previous one ran late
    last_ok: float | None = None
    last_latency_ms: float | None = None
    errors_by_status: dict[str, int] = field(default_factory=dict)
    _log: FailureLog | None = None

    def as_dict(self) -> dict:
        d = {
            "bus": self.bus,
            "status": self.status,
            "polls": self.polls,
            "failures": self.failures,
            "last_ok": round(self.last_ok, 3) if self.last_ok else None,
        }
        if self.detail:
            d["detail"] = self.detail
        if self.errors_by_status:
            d["errors"] = dict(self.errors_by_status)
        if self.overruns:
            d["overruns"] = self.overruns
        if self.last_latency_ms is not None:
            d["latency_ms"] = round(self.last_latency_ms, 1)
        return d


class Health:
    """Every device's status; calls ``on_change(status, previous)`` on transitions."""

    def __init__(self, on_change: Callable[[DeviceStatus, str], None] | None = None):
        self.devices: dict[str, DeviceStatus] = {}
        self.on_change = on_change

    def register(self, device: str, bus: str) -> DeviceStatus:
        st = DeviceStatus(device, bus)
        st._log = FailureLog(log, f"device {device}")
        self.devices[device] = st
        return st

    def ok(self, device: str, ts: float, latency_ms: float) -> None:
        st = self.devices[device]
        st.polls += 1
        st.last_ok = ts
        st.last_latency_ms = latency_ms
        st.consecutive_failures = 0
        if st.status != "ok":
            prev, st.status, st.detail = st.status, "ok", ""
            if st._log:
                st._log.recovered()
            self._changed(st, prev)

    def failed(self, device: str, status: str, detail: str) -> None:
        st = self.devices[device]
        st.polls += 1
        st.failures += 1
        st.consecutive_failures += 1
        st.errors_by_status[status] = st.errors_by_status.get(status, 0) + 1
        if st._log:
            st._log.failed(f"{status}: {detail}")
        if st.status != status:
            prev, st.status, st.detail = st.status, status, detail
            self._changed(st, prev)
        else:
            st.detail = detail

    def _changed(self, st: DeviceStatus, prev: str) -> None:
        if self.on_change is not None:
            self.on_change(st, prev)

    def snapshot(self) -> dict:
        return {d: st.as_dict() for d, st in self.devices.items()}
