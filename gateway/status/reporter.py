"""When the gateway's health goes out: ``…/state`` on the broker, the status file and the metrics on the board.

- at start, at once: `canopy status` works from the first second;
- about 1 s after a change (a device's status, alerts, commands, cameras;
  bursts coalesce) and every ``state_interval`` otherwise: broker and board;
- when the broker link comes or goes: the board only (the uplink publishes
  its own state on every connect);
- on the board only, whenever the outbox backlog moved by more than
  ``max(backlog_step, backlog_ratio x the backlog on file)`` records, checked
  every second: a drain of 3,000 rows is not shown as 900 for 30 s;
- at a clean stop, once more, with ``daemon.state: stopped``.

So a running daemon rewrites its file at least every ``state_interval``; it
says so in ``daemon.stale_after_s`` (twice that, plus slack), and `canopy
status` calls an older file stale.  Encoding happens on the event loop (the
services own what the snapshot reads); only the file writes go to a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from core.backoff import FailureLog
from core.clock import Clock
from gateway.status.status_file import RUNNING, STOPPED, atomic_write, daemon_record, encode

if TYPE_CHECKING:  # prometheus_client is imported only where metrics are asked for
    from gateway.status.metrics import MetricsExport

log = logging.getLogger("canopy.status")


@dataclass(frozen=True)
class ReportPolicy:
    interval: float  # uplink.state_interval: the longest a snapshot goes unrewritten
    coalesce: float = 1.0  # wait after a change, so a burst of changes makes one snapshot
    check_every: float = 1.0  # how often the backlog is compared with the one on file
    backlog_step: int = 100
    backlog_ratio: float = 0.1

    @property
    def stale_after_s(self) -> float:
        return 2 * self.interval + self.coalesce + 5

    def backlog_moved(self, on_file: int, now: int) -> bool:
        return abs(now - on_file) > max(self.backlog_step, self.backlog_ratio * on_file)


class HealthReporter:
    """Runs as one task of the daemon; ``changed()`` is what the services call."""

    def __init__(self, *, state: Callable[[], dict], publish: Callable[[], None], refresh: Callable[[], Awaitable[None]],
                 backlog: Callable[[], int], status_path: str, policy: ReportPolicy, identity: dict,
                 metrics: MetricsExport | None = None, clock: Clock | None = None):
        self._state = state
        self._publish = publish
        self._refresh = refresh
        self._backlog = backlog
        self.status_path = status_path
        self.policy = policy
        self._identity = identity  # site and gateway: the snapshot names whose it is
        self.metrics = metrics
        self._clock = clock or Clock()
        self._dirty = asyncio.Event()
        self._publish_due = False
        self._on_file_backlog = 0
        self._file_log = FailureLog(log, f"status file {status_path}")
        self._metrics_log = FailureLog(log, "metrics")
        self.writes = 0

    def changed(self, publish: bool = True) -> None:
        """Something in the snapshot changed; ``publish=False``: the board's copy only."""
        self._publish_due |= publish
        self._dirty.set()

    async def run(self) -> None:
        await self.write()
        next_full = self._clock.monotonic() + self.policy.interval
        while True:
            wait = max(0.0, min(self.policy.check_every, next_full - self._clock.monotonic()))
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout=wait)
                await asyncio.sleep(self.policy.coalesce)
                publish, write = self._publish_due, True
            except asyncio.TimeoutError:
                publish = write = self._clock.monotonic() >= next_full
            if write:
                self._dirty.clear()
                self._publish_due = False
                if publish:
                    self._publish()
                    next_full = self._clock.monotonic() + self.policy.interval
                await self.write()
            elif self.policy.backlog_moved(self._on_file_backlog, self._backlog()):
                await self.write()

    async def write(self, state: str = RUNNING) -> None:
        """Take a snapshot now and write it (and the metrics); failures are logged, never raised."""
        try:
            await self._refresh()
        except Exception as exc:
            log.debug("health refresh failed: %s", exc)
        snapshot = {**self._identity, **self._state(), "daemon": daemon_record(state, self.policy.stale_after_s)}
        self._on_file_backlog = self._backlog()
        payload = encode(snapshot)
        await asyncio.to_thread(self._save, payload)
        self.writes += 1

    async def stopped(self) -> None:
        """The last snapshot, at a clean stop: `canopy status` then says "stopped", not "running"."""
        await self.write(STOPPED)

    def _save(self, payload: bytes) -> None:
        try:
            atomic_write(self.status_path, payload)
            self._file_log.recovered()
        except OSError as exc:
            self._file_log.failed(f"cannot write: {exc}")
        if self.metrics is not None:
            try:
                self.metrics.update(orjson.loads(payload))  # a private copy for the HTTP thread
                self._metrics_log.recovered()
            except OSError as exc:
                self._metrics_log.failed(f"cannot write {self.metrics.textfile}: {exc}")
