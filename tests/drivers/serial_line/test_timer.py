"""PreciseTimer: sub-millisecond wake-ups on the event loop without spinning (a timerfd)."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.serial_line.timer import PreciseTimer


async def test_wakes_at_the_deadline_never_before_and_mostly_within_half_a_millisecond():
    timer = PreciseTimer()
    assert timer.precise
    late = []
    cpu0 = time.process_time()
    for _ in range(100):
        when = time.monotonic() + 0.00175  # the RTU gap above 19200 baud
        await timer.sleep_until(when)
        late.append(time.monotonic() - when)
    cpu = time.process_time() - cpu0
    timer.close()
    late.sort()
    assert late[0] >= 0
    assert late[50] < 0.0005, f"median {late[50] * 1000:.3f} ms late"  # asyncio.sleep: ~0.3-1 ms (millisecond ticks)
    assert cpu < 0.5 * 100 * 0.00175, f"{cpu * 1000:.1f} ms CPU for 175 ms of sleeping: spinning?"


async def test_a_past_deadline_returns_at_once_and_a_cancelled_sleep_does_not_wake_the_next():
    timer = PreciseTimer()
    t0 = time.monotonic()
    await timer.sleep_until(t0 - 1.0)
    assert time.monotonic() - t0 < 0.01
    task = asyncio.create_task(timer.sleep_until(time.monotonic() + 0.01))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    t1 = time.monotonic()
    await timer.sleep_until(t1 + 0.03)  # the cancelled 10 ms deadline must not end this one early
    assert time.monotonic() - t1 >= 0.03
    timer.close()
    await timer.sleep_until(time.monotonic() + 0.001)  # closed: a new descriptor on demand
    timer.close()
