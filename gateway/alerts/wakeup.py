"""The engine task's sleep: until its next deadline (at most ``max_sleep``), or until woken.

Inputs (readings, acks, finished output writes) wake it at once; a timer that
comes due earlier than the planned wake-up also does.
"""

from __future__ import annotations

import asyncio
import math


class Wakeup:
    def __init__(self, clock, max_sleep: float):
        self.clock = clock
        self.max_sleep = max_sleep
        self.event = asyncio.Event()
        self.until = math.inf  # when the sleeping task will wake by itself

    def set(self) -> None:
        self.event.set()

    def clear(self) -> None:
        self.event.clear()

    async def sleep(self, deadline: float) -> None:
        now = self.clock.time()
        self.until = min(deadline, now + self.max_sleep)
        try:
            await self._sleep_or_wake(max(0.0, self.until - now))
        finally:
            self.until = math.inf

    async def _sleep_or_wake(self, delay: float) -> None:
        if self.event.is_set():
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        waker = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (sleeper, waker):
                if not f.done():
                    f.cancel()
