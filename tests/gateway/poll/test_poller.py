"""DevicePoller on a FakeClock: the schedule, overruns, failures, and what a reading carries.

Devices here are stubs whose reads take *fake* time (``clock.sleep``), so a
"2.5 s poll" costs nothing and the schedule can be checked exactly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from core.clock import FakeClock
from core.records import Reading
from drivers.errors import DeviceError, DeviceException, DeviceTimeout
from gateway.poll.health import Health
from gateway.poll.poller import DevicePoller


@dataclass(frozen=True)
class Point:
    name: str
    unit: str = ""


class StubDevice:
    """Records when each read started; a read takes ``duration`` fake seconds, then returns or raises."""

    def __init__(self, id: str, clock: FakeClock, *, duration=0.0, points=None):
        self.id = id
        self.clock = clock
        self.duration = duration  # float, or callable(read_index) -> float
        self.points = points if points is not None else [(Point("moisture", "%"), 31.5), (Point("temperature", "°C"), 18.25)]
        self.error: Exception | None = None
        self.starts: list[float] = []

    async def read_all(self):
        n = len(self.starts)
        self.starts.append(self.clock.monotonic())
        d = self.duration(n) if callable(self.duration) else self.duration
        if d:
            await self.clock.sleep(d)
        if self.error is not None:
            raise self.error
        return list(self.points)


class Sink:
    def __init__(self):
        self.batches: list[list[Reading]] = []

    async def __call__(self, readings: list[Reading]) -> None:
        self.batches.append(readings)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def start():
    tasks: list[asyncio.Task] = []

    def go(poller: DevicePoller) -> asyncio.Task:
        t = asyncio.create_task(poller.run(), name=f"poll-{poller.device.id}")
        tasks.append(t)
        return t

    yield go
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def make(clock, device, interval, health=None, sink=None):
    health = health or Health()
    if device.id not in health.devices:
        health.register(device.id, "bus-1")
    sink = sink or Sink()
    return DevicePoller(device, interval, sink, health, clock), health, sink


# --------------------------------------------------------------------------- schedule


async def test_polls_run_on_a_fixed_grid_without_drift(clock, start):
    dev = StubDevice("soil-1", clock, duration=0.3)  # each read takes 0.3 s of the 1 s interval
    poller, health, sink = make(clock, dev, 1.0)
    start(poller)
    await clock.advance(9.2)
    assert dev.starts == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]), "polls drifted off the grid"
    assert len(sink.batches) == 9  # the poll at 9.0 is still reading
    assert health.devices["soil-1"].overruns == 0
    assert health.devices["soil-1"].polls == 9


async def test_a_late_poll_skips_missed_slots_instead_of_bursting(clock, start):
    dev = StubDevice("meter", clock, duration=lambda n: 2.5 if n == 0 else 0.1)
    poller, health, sink = make(clock, dev, 1.0)
    start(poller)
    await clock.advance(6.5)
    # slots 1 and 2 were missed: no catch-up polls at 2.5, back on the grid at 3.0
    assert dev.starts == pytest.approx([0.0, 3.0, 4.0, 5.0, 6.0])
    assert health.devices["meter"].overruns == 2


async def test_always_slow_device_polls_every_free_slot_and_counts_overruns(clock, start):
    dev = StubDevice("slow", clock, duration=2.5)
    poller, health, _ = make(clock, dev, 1.0)
    start(poller)
    await clock.advance(10.0)
    assert dev.starts == pytest.approx([0.0, 3.0, 6.0, 9.0])
    assert health.devices["slow"].overruns == 6  # two missed slots after each of the three finished polls
    assert health.devices["slow"].as_dict()["overruns"] == 6


# --------------------------------------------------------------------------- outcomes


async def test_readings_carry_device_point_unit_value_and_wall_time(clock, start):
    dev = StubDevice("soil-7", clock, duration=0.2)
    poller, health, sink = make(clock, dev, 5.0)
    start(poller)
    await clock.advance(5.5)
    assert len(sink.batches) == 2
    first, second = sink.batches
    t0 = 1_700_000_000.0  # FakeClock's wall time at monotonic 0
    assert first == [
        Reading(t0, "soil-7", "moisture", 31.5, "%"),
        Reading(t0, "soil-7", "temperature", 18.25, "°C"),
    ]
    # timestamped when the poll started, from the injected clock
    assert [r.ts for r in second] == [t0 + 5.0, t0 + 5.0]
    st = health.devices["soil-7"]
    assert st.status == "ok" and st.last_ok == t0 + 5.0
    assert st.last_latency_ms == pytest.approx(200.0)


@pytest.mark.parametrize(
    "error, status",
    [
        (DeviceTimeout("no reply within 0.30s"), "timeout"),
        (DeviceException(2, "read holding 0x0000 x2"), "exception"),
        (DeviceError("garbled"), "error"),
    ],
)
async def test_device_error_marks_health_failed_and_produces_no_readings(clock, error, status):
    dev = StubDevice("tank", clock)
    dev.error = error
    poller, health, sink = make(clock, dev, 1.0)
    assert await poller.poll_once() is None
    assert sink.batches == []
    st = health.devices["tank"]
    assert st.status == status
    assert st.detail == str(error)
    assert st.failures == 1 and st.errors_by_status == {status: 1}
    # it comes back: the next good poll is ok again and produces readings
    dev.error = None
    readings = await poller.poll_once()
    assert readings and st.status == "ok" and len(sink.batches) == 1


async def test_failing_poll_keeps_the_schedule(clock, start):
    dev = StubDevice("dead", clock, duration=0.4)
    dev.error = DeviceTimeout("no reply")
    poller, health, sink = make(clock, dev, 1.0)
    start(poller)
    await clock.advance(3.2)  # the read started at 3.0 is still waiting for its timeout
    assert dev.starts == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert health.devices["dead"].failures == 3 and health.devices["dead"].consecutive_failures == 3
    assert sink.batches == []


async def test_a_failing_device_does_not_delay_another_devices_polls(clock, start):
    health = Health()
    dead = StubDevice("dead", clock, duration=0.9)  # every read times out after 0.9 s
    dead.error = DeviceTimeout("no reply within 0.90s")
    good = StubDevice("good", clock, duration=0.05)
    p_dead, _, _ = make(clock, dead, 1.0, health)
    p_good, _, good_sink = make(clock, good, 0.5, health)
    start(p_dead)
    start(p_good)
    await clock.advance(4.8)
    assert good.starts == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5])
    assert len(good_sink.batches) == 10
    assert health.devices["good"].status == "ok" and health.devices["good"].overruns == 0
    assert health.devices["dead"].status == "timeout"


async def test_a_device_that_never_answers_does_not_block_others(clock, start):
    """A read with no timeout of its own hangs for ever: only that device stops."""
    health = Health()
    hung = StubDevice("hung", clock, duration=1e9)
    good = StubDevice("good", clock)
    p_hung, _, _ = make(clock, hung, 1.0, health)
    p_good, _, good_sink = make(clock, good, 1.0, health)
    start(p_hung)
    start(p_good)
    await clock.advance(5.5)
    assert hung.starts == [0.0]
    assert len(good_sink.batches) == 6


async def test_unexpected_driver_exception_does_not_stop_polling(clock, start):
    dev = StubDevice("buggy", clock)
    dev.error = OverflowError("(34, 'Numerical result out of range')")
    poller, health, sink = make(clock, dev, 1.0)
    task = start(poller)
    await clock.advance(1.5)
    dev.error = None
    await clock.advance(2.0)
    assert not task.done(), f"poller task ended: {task.exception() if task.done() and not task.cancelled() else ''}"
    assert len(dev.starts) == 4 and len(sink.batches) == 2
    assert health.devices["buggy"].status == "ok"
