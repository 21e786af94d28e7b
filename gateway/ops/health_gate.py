"""The health gate: a restarted gateway must be READY, connected to its broker and polling devices within T.

Three signals, each from the source that knows: READY from systemd (a
``Type=notify`` unit is *active* only after the daemon sent ``READY=1``; tests
use a fake notify socket), broker and devices from the daemon's status file,
which must have been written after the restart (an old file proves nothing).
All three must hold together for ``settle`` seconds, so a version that comes up
and falls over a moment later is not committed.  Only devices that polled ok
before the restart are demanded: a probe that was already dead must not make
every update roll back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str  # why not, in an operator's words ("" when ok)
    waited: float


def read_status(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def devices_ok(status: dict | None) -> int:
    devices = (status or {}).get("devices") or {}
    return sum(1 for d in devices.values() if isinstance(d, dict) and d.get("status") == "ok")


def problem(status: dict | None, since: float, need_devices_ok: int, after_boot: int | None = None) -> str:
    """Why the status file does not show a healthy gateway restarted at ``since`` (wall clock), or "".

    ``after_boot``: the outbox boot number before the restart; the old process may still
    write a snapshot while it stops, so only a higher boot number is the new process.
    """
    if status is None:
        return "no status file yet"
    if float(status.get("ts") or 0) < since or (after_boot is not None and int(status.get("boot") or 0) <= after_boot):
        return "no status written since the restart"
    uplink = status.get("uplink") or {}
    if not uplink.get("connected"):
        return "broker not connected" + (f" ({uplink['last_error']})" if uplink.get("last_error") else "")
    devices = status.get("devices") or {}
    if devices and need_devices_ok and devices_ok(status) < min(need_devices_ok, len(devices)):
        return f"{devices_ok(status)} of {len(devices)} devices polling ok (were {need_devices_ok} before)"
    return ""


class HealthGate:
    def __init__(self, ready: Callable[[], bool], status_path: Path, *, timeout: float, settle: float = 5.0,
                 need_devices_ok: int = 1, after_boot: int | None = None, interval: float = 0.25, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.ready = ready
        self.status_path = status_path
        self.timeout, self.settle, self.interval = timeout, settle, interval
        self.need_devices_ok = need_devices_ok
        self.after_boot = after_boot
        self.clock, self.sleep = clock, sleep

    def check(self, since: float) -> str:
        if not self.ready():
            return "not READY"
        return problem(read_status(self.status_path), since, self.need_devices_ok, self.after_boot)

    def wait(self, since: float) -> GateResult:
        """Block (the applier is a one-shot process, not the daemon) until healthy for ``settle`` s or ``timeout``."""
        start = self.clock()
        healthy_since: float | None = None
        reason = "not checked"
        while True:
            now = self.clock()
            reason = self.check(since)
            healthy_since = (now if healthy_since is None else healthy_since) if not reason else None
            if healthy_since is not None and now - healthy_since >= self.settle:
                return GateResult(True, "", now - start)
            if now - start >= self.timeout:
                why = reason or f"healthy for less than {self.settle:g} s"
                return GateResult(False, f"not healthy within {self.timeout:g} s: {why}", now - start)
            self.sleep(self.interval)
