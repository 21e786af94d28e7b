"""Run the once-only jobs while this instance holds the lease, and stop them the moment it does not.

A job is an ``async def () -> None`` that runs until cancelled (a loop with its own pace).
Taking the lease starts every job; losing it cancels them all before anything else
happens, so a former leader does not send one more command or notification.  A job that
crashes is logged and started again after ``job_restart_delay``: one bug must not stop
blind-site checks for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from centre.jobs.lease import Lease
from core.tasks import cancel_all

log = logging.getLogger("centre.jobs")


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    run: Callable[[], Awaitable[None]]


class LeaderJobs:
    def __init__(self, lease: Lease, jobs: list[Job], *, restart_delay: float = 1.0):
        self.lease = lease
        self.jobs = jobs
        self.restart_delay = restart_delay
        self.crashes: dict[str, int] = {}
        self.running = False

    async def run(self) -> None:
        while True:
            await self.lease.wait(True)
            tasks = [asyncio.create_task(self._keep(job), name=f"job-{job.name}") for job in self.jobs]
            self.running = True
            try:
                await self.lease.wait(False)
            finally:
                self.running = False
                await cancel_all(tasks, 5.0)

    async def _keep(self, job: Job) -> None:
        """Run one job for as long as the lease lasts, restarting it after a crash."""
        while True:
            try:
                await job.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.crashes[job.name] = self.crashes.get(job.name, 0) + 1
                log.exception("job %s crashed (%d so far); starting it again in %.0f s", job.name,
                              self.crashes[job.name], self.restart_delay)
                await asyncio.sleep(self.restart_delay)
