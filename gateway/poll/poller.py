"""Poll one device on its own schedule and hand the readings on.

Each device has its own task, so a slow or dead device delays only itself
(and, on a shared line, only for its bounded timeout).  The schedule is
anchored to the monotonic clock: polls do not drift, and a poll that runs late
skips the missed slots instead of bursting to catch up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from core.clock import Clock
from core.records import Reading
from drivers.errors import DeviceError
from gateway.poll.health import Health

log = logging.getLogger("canopy.poller")


class Pollable(Protocol):
    id: str

    async def read_all(self) -> list[tuple[Any, Any]]: ...


Sink = Callable[[list[Reading]], Awaitable[None]]


class DevicePoller:
    def __init__(self, device: Pollable, interval: float, sink: Sink, health: Health, clock: Clock | None = None):
        self.device = device
        self.interval = interval
        self.sink = sink
        self.health = health
        self.clock = clock or Clock()
        self.stopping = False  # checked between polls: a swallowed cancel still ends the loop

    async def poll_once(self) -> list[Reading] | None:
        started = self.clock.monotonic()
        ts = self.clock.time()
        try:
            values = await self.device.read_all()
        except DeviceError as exc:
            self.health.failed(self.device.id, exc.status, str(exc))
            return None
        except Exception as exc:  # a driver bug must not stop this device's polling for good
            if self.health.devices[self.device.id].status != "error":
                log.exception("device %s: unexpected error while polling", self.device.id)
            self.health.failed(self.device.id, "error", f"{type(exc).__name__}: {exc}")
            return None
        self.health.ok(self.device.id, ts, (self.clock.monotonic() - started) * 1000)
        readings = [Reading(ts, self.device.id, point.name, value, point.unit) for point, value in values]
        await self.sink(readings)
        return readings

    async def run(self) -> None:
        next_at = self.clock.monotonic()
        while not self.stopping:
            delay = next_at - self.clock.monotonic()
            if delay > 0:
                await self.clock.sleep(delay)
            if self.stopping:
                return
            await self.poll_once()
            next_at += self.interval
            now = self.clock.monotonic()
            if next_at <= now:
                missed = int((now - next_at) // self.interval) + 1
                self.health.devices[self.device.id].overruns += missed
                next_at += missed * self.interval
