"""Named timers and background jobs of the command service.

A valve's close, a lock's relock, a lock-out's end and the link-loss policy
are timers keyed by ``(kind, id)``: scheduling one replaces the previous one
of that key, so a new cycle never inherits an old cycle's close.  Work that
must not hold up the caller (a close decided on a reading, a program's start,
an event from ``observe``) runs as a job; ``drain`` waits for jobs, except
those ``park``\\ ed waiting for time to pass (a close retry).  Once
``stopping`` is set nothing new is scheduled.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("canopy.commands")


class Jobs:
    def __init__(self, clock, counters: dict):
        self.clock = clock
        self.counters = counters
        self.stopping = False
        self.timers: dict[tuple, asyncio.Task] = {}
        self.jobs: set[asyncio.Task] = set()
        self.parked: set[asyncio.Task] = set()

    def schedule(self, key: tuple, delay: float, fn, *args) -> None:
        """Run ``fn(*args)`` as a job after ``delay`` seconds, replacing the timer of ``key``."""
        self.cancel(key)
        if self.stopping:
            return

        async def timer():
            await self.clock.sleep(max(0.0, delay))
            if self.timers.get(key) is task:
                del self.timers[key]
            if not self.stopping:
                self.spawn(fn(*args))

        task = asyncio.create_task(timer(), name=f"commands-timer-{key[0]}-{key[1]}")
        self.timers[key] = task

    def cancel(self, key: tuple) -> None:
        task = self.timers.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def cancel_kind(self, kind: str) -> None:
        for key in [k for k in self.timers if k[0] == kind]:
            self.cancel(key)

    async def park(self, seconds: float) -> None:
        """A job waiting for time to pass (a retry); ``drain`` does not wait for it."""
        task = asyncio.current_task()
        self.parked.add(task)
        try:
            await self.clock.sleep(seconds)
        finally:
            self.parked.discard(task)

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.jobs.add(task)
        task.add_done_callback(self._done)

    def active(self) -> set[asyncio.Task]:
        """Jobs that are working (not parked)."""
        return self.jobs - self.parked

    async def stop(self, current: asyncio.Task | None, grace: float = 0.3) -> None:
        """No new timers; cancel the timers, the jobs and the command under way, and give them ``grace`` to end."""
        self.stopping = True
        for t in list(self.timers.values()):
            t.cancel()
        self.timers.clear()
        busy = [t for t in [current, *self.jobs] if t is not None and not t.done()]
        for t in busy:
            t.cancel()
        if busy:
            await asyncio.wait(busy, timeout=grace)

    def _done(self, task: asyncio.Task) -> None:
        self.jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters["worker_errors"] += 1
            log.error("commands: background job failed", exc_info=task.exception())
