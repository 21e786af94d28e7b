"""Supervision by systemd: READY once the gateway is up, keep-alives only while it really works, a STATUS line.

``WatchdogSec=`` restarts a daemon whose keep-alives stop.  They are sent from a
task on the event loop, so a loop that is blocked sends none; on top of that each
keep-alive is withheld when the loop was late by more than ``max_lag`` since the
previous one (a loop that is only *mostly* blocked is not healthy either), or when
the outbox writer is dead or has had work without finishing a commit attempt for
``writer_stall`` seconds.  Deliberately *not* "the backlog shrinks": during a
broker outage or a full disk nothing drains, and a restart loop then would lose
what waits in memory.  A failed commit attempt (full disk) is progress: the writer
is alive and retrying, and alarms go out from memory meanwhile.

The runtime's side is three calls::

    sup = Supervisor(loop, gateway.state, WriterProgress.of(gateway.outbox))
    sup.start()            # before the gateway starts: keep-alives cover start-up
    ...; sup.ready()       # polling and the outbox are up
    await sup.stop()       # at shutdown: STOPPING=1
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.ops.sd_notify import Notifier, watchdog_interval

log = logging.getLogger("canopy.ops")


def status_line(state: dict) -> str:
    """What ``systemctl status`` shows: ``12 devices ok, 1 unreachable, outbox 0, broker connected``."""
    devices = state.get("devices") or {}
    counts = Counter(str(d.get("status", "unknown")) for d in devices.values() if isinstance(d, dict))
    parts = [f"{counts.pop('ok', 0)} device{'s' if len(devices) != 1 else ''} ok"]
    parts += [f"{n} {status}" for status, n in sorted(counts.items())]
    outbox = state.get("outbox") or {}
    pending = sum(c.get("pending", 0) for c in outbox.values() if isinstance(c, dict))
    parts.append(f"outbox {pending}" + (" (degraded)" if outbox.get("degraded") else ""))
    uplink = state.get("uplink") or {}
    parts.append("broker connected" if uplink.get("connected") else "broker disconnected")
    return ", ".join(parts)


class WriterStats(Protocol):
    """What the outbox shows of its writer (``gateway.outbox.store.Outbox``)."""

    commits: int
    commit_errors: int

    @property
    def writer_running(self) -> bool: ...

    def has_work(self) -> bool: ...


class WriterProgress:
    """True while the outbox writer runs and, whenever it has work, finishes a commit attempt within ``stall`` s."""

    def __init__(self, running: Callable[[], bool], has_work: Callable[[], bool], attempts: Callable[[], int],
                 stall: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.running, self.has_work, self.attempts = running, has_work, attempts
        self.stall = stall
        self.clock = clock
        self._attempts = -1
        self._since = clock()
        self.reason = ""  # why the last call said False

    @classmethod
    def of(cls, outbox: WriterStats, stall: float = 30.0) -> WriterProgress:
        return cls(lambda: outbox.writer_running, outbox.has_work, lambda: outbox.commits + outbox.commit_errors, stall)

    def __call__(self) -> bool:
        now = self.clock()
        if not self.running():
            self.reason = "the outbox writer has stopped"
            return False
        n = self.attempts()
        if n != self._attempts or not self.has_work():
            self._attempts, self._since = n, now
            return True
        if now - self._since < self.stall:
            return True
        self.reason = f"the outbox writer has had work for {now - self._since:.0f} s without finishing a commit"
        return False


@dataclass(frozen=True)
class WatchdogTiming:
    """Keep-alive every ``WatchdogSec/2``; the loop is probed every ``tick`` and judged by its worst lag."""

    keepalive: float
    tick: float
    max_lag: float

    @classmethod
    def for_watchdog(cls, watchdog_sec: float) -> WatchdogTiming:
        keepalive = watchdog_sec / 2
        return cls(keepalive=keepalive, tick=min(1.0, keepalive / 4), max_lag=keepalive / 2)


class Supervisor:
    """READY / WATCHDOG / STATUS / STOPPING for the daemon; silent outside systemd."""

    def __init__(self, loop: asyncio.AbstractEventLoop, health_fn: Callable[[], dict], writer_alive_fn: Callable[[], bool],
                 *, notifier: Notifier | None = None, watchdog_sec: float | None = None, status_every: float = 10.0):
        self.loop = loop
        self.health_fn = health_fn
        self.writer_alive_fn = writer_alive_fn
        self.notifier = notifier or Notifier()
        sec = watchdog_interval() if watchdog_sec is None else watchdog_sec
        self.timing = WatchdogTiming.for_watchdog(sec) if sec else None
        self.status_every = status_every
        self.is_ready = False
        self.keepalives = 0
        self.withheld = 0  # keep-alives not sent because something was wrong
        self.last_withheld_reason = ""
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the keep-alive task (only when systemd asked for keep-alives or listens at all)."""
        if self.notifier.enabled and self._task is None:
            self._task = self.loop.create_task(self._run(), name="supervisor")

    def ready(self) -> None:
        """Polling and the outbox are up: systemd may consider the start done."""
        self.is_ready = True
        self.notifier.notify("READY=1", f"STATUS={self._status()}")

    async def stop(self) -> None:
        self.notifier.notify("STOPPING=1", "STATUS=stopping")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.notifier.close()

    def _status(self) -> str:
        try:
            return status_line(self.health_fn())
        except Exception as exc:  # a status line is a courtesy: never let it stop the keep-alives
            return f"status unavailable ({exc.__class__.__name__})"

    def verdict(self, worst_lag: float) -> str:
        """Why a keep-alive must be withheld now, or "" when the gateway is healthy."""
        if self.timing is not None and worst_lag > self.timing.max_lag:
            return f"the event loop was blocked for {worst_lag:.1f} s"
        if self.is_ready and not self.writer_alive_fn():
            return getattr(self.writer_alive_fn, "reason", "") or "the outbox writer is not committing"
        return ""

    async def _run(self) -> None:
        tick = self.timing.tick if self.timing else self.status_every
        period = self.timing.keepalive if self.timing else self.status_every
        worst_lag, due = 0.0, self.loop.time()
        while True:
            now = self.loop.time()
            if now >= due:
                self._beat(worst_lag)
                worst_lag, due = 0.0, now + period
            expected = self.loop.time() + tick
            await asyncio.sleep(tick)
            worst_lag = max(worst_lag, self.loop.time() - expected)

    def _beat(self, worst_lag: float) -> None:
        status = f"STATUS={self._status()}"
        if self.timing is None:
            self.notifier.notify(status)
            return
        why = self.verdict(worst_lag)
        if why:
            self.withheld += 1
            if why != self.last_withheld_reason:
                log.error("watchdog keep-alive withheld: %s (systemd restarts the daemon if this lasts)", why)
            self.last_withheld_reason = why
            self.notifier.notify(f"STATUS=unhealthy: {why}")
            return
        self.last_withheld_reason = ""
        if self.notifier.notify("WATCHDOG=1", status):
            self.keepalives += 1
