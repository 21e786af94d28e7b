"""Stall and hang detection for one camera, and its restart policy.

- a reader that delivers nothing for ``stall_seconds`` (plus ``open_timeout``
  while it connects) has stalled: its stream is restarted;
- an inference that takes longer than ``detector_timeout`` means a hung
  detector: the worker is restarted with a new interpreter.

A wedged thread cannot be killed in Python: it is abandoned (it is a daemon
thread) and counted here; while ``MAX_ABANDONED`` are still alive, every
restart waits ``backoff_max`` more.  Frames flowing for ``STABLE_SECONDS``
after a restart start the backoffs again from the beginning.

This module decides; the runner acts (it owns the threads) and reports.
"""

from __future__ import annotations

import threading

from core.backoff import Backoff
from inference.config import WatchdogConfig

MAX_ABANDONED = 3  # wedged threads tolerated per camera before giving up on restarts for a while
STABLE_SECONDS = 10.0  # frames flowing this long after a restart resets the backoff


class Watchdog:
    def __init__(self, cfg: WatchdogConfig, open_timeout: float):
        self.cfg = cfg
        self.open_timeout = open_timeout
        self.stream_backoff = Backoff(cfg.backoff_initial, cfg.backoff_max)
        self.detector_backoff = Backoff(cfg.backoff_initial, cfg.backoff_max)
        self.restarts = {"stream": 0, "detector": 0}
        self.abandoned: list[threading.Thread] = []
        self.restarted_at: float | None = None  # time.monotonic() of the last restart, until things are stable

    @property
    def tick(self) -> float:
        """How often the runner asks :meth:`check`."""
        return min(1.0, self.cfg.stall_seconds / 4)

    def check(self, reader_state: str, heartbeat: float, last_frame: float | None, now: float) -> float | None:
        """Seconds the reader has been silent if that is a stall (restart the stream), else None."""
        limit = self.cfg.stall_seconds
        if reader_state == "connecting":
            limit += self.open_timeout
        if reader_state in ("running", "connecting") and now - heartbeat > limit:
            return now - heartbeat
        if (self.restarted_at is not None and last_frame is not None
                and last_frame > self.restarted_at and now - self.restarted_at > STABLE_SECONDS):
            self.stream_backoff.reset()
            self.detector_backoff.reset()
            self.restarted_at = None
        return None

    def stream_restart(self, now: float) -> float:
        """Count a stream restart; the delay before the new reader opens the source."""
        self.restarts["stream"] += 1
        self.restarted_at = now
        return self.stream_backoff.next() + self.penalty()

    def detector_restart(self, now: float) -> float:
        """Count a detector restart; the backoff delay before the new worker loads (see :meth:`penalty`)."""
        self.restarts["detector"] += 1
        self.restarted_at = now
        return self.detector_backoff.next()

    def abandon(self, thread: threading.Thread) -> None:
        if thread.is_alive():
            self.abandoned.append(thread)

    def prune(self) -> None:
        """Forget abandoned threads that have ended after all."""
        self.abandoned = [t for t in self.abandoned if t.is_alive()]

    def penalty(self) -> float:
        """Extra wait while too many wedged threads are still alive."""
        return self.cfg.backoff_max if len(self.abandoned) >= MAX_ABANDONED else 0.0
