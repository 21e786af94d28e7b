"""Time, injectable: real in the daemon, controllable in tests.

Schedules use the monotonic clock; timestamps on data use wall time.  Tests
drive a FakeClock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time


class Clock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock(Clock):
    """A clock that only moves when the test says so.

    ``await clock.sleep(s)`` suspends until ``advance()`` has moved time past
    the wake-up point; ``advance`` lets every woken task run before returning.
    """

    def __init__(self, start: float = 1_700_000_000.0):
        self._mono = 0.0
        self._wall0 = start
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._ids = itertools.count()

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall0 + self._mono

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + max(0.0, seconds), next(self._ids), fut))
        await fut

    async def advance(self, seconds: float, step: float | None = None) -> None:
        """Move time forward, waking sleepers in order and letting them run."""
        target = self._mono + seconds
        while True:
            await _settle()
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            when, _, fut = heapq.heappop(self._sleepers)
            self._mono = max(self._mono, when)
            if not fut.done():
                fut.set_result(None)
        self._mono = target
        await _settle()


async def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)
