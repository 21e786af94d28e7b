"""The command store on a slow disk: the event loop never waits for its fsync, and the order of writes holds.

The commit hook runs on the store's writer thread as each COMMIT starts; one
that sleeps is an SD card whose fsync is slow.  bench/looplag.py measures the
real lag figure; here the bound is generous on purpose.
"""

from __future__ import annotations

import asyncio
import time

from tests.gateway.commands.support import DUTY, Harness

SLOW_FSYNC_S = 0.2


class LoopLag:
    """Ticks every 5 ms on the real loop and keeps how late each tick woke."""

    def __init__(self, period: float = 0.005):
        self.period = period
        self.lags: list[float] = []
        self.task: asyncio.Task | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.period)
            self.lags.append(loop.time() - t - self.period)

    def __enter__(self) -> "LoopLag":
        self.task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc) -> None:
        self.task.cancel()


async def test_a_slow_fsync_does_not_stall_the_event_loop(tmp_path):
    commits: list[float] = []

    def slow_fsync() -> None:  # on the writer thread, never on the loop
        commits.append(time.monotonic())
        time.sleep(SLOW_FSYNC_S)

    h = Harness(tmp_path, on_commit=slow_fsync)
    await h.start()
    await h.svc.drain()
    before = len(commits)
    envs = [h.env("irrigate", "zone-1", {"duration_s": 60}), h.env("close", "zone-1"),
            h.env("unlock", "door-101", key=DUTY, issuer="duty"), h.env("lock", "door-101", key=DUTY, issuer="duty")]
    with LoopLag() as lag:
        for env in envs:
            assert (await h.send(env))["status"] == "executed"
    assert len(commits) - before >= len(envs)  # every command id went through a slow commit
    assert lag.lags, "the ticker never ran"
    assert max(lag.lags) < 0.05, f"the loop stalled {max(lag.lags) * 1000:.0f} ms behind a {SLOW_FSYNC_S * 1000:.0f} ms fsync"
    await h.stop()


async def test_the_id_and_the_cycle_are_committed_before_the_valve_is_written(tmp_path):
    h = Harness(tmp_path)
    writes_at_commit: list[int] = []
    h.on_commit = lambda: writes_at_commit.append(len(h.valves.writes))
    await h.start()
    await h.svc.drain()
    writes_at_commit.clear()
    before = len(h.valves.writes)
    res = await h.send(h.env("irrigate", "zone-2", {"duration_s": 60}))
    assert res["status"] == "executed" and len(h.valves.writes) > before
    assert writes_at_commit[:2] == [before, before]  # the command id, then the cycle, then the device
    await h.stop()


async def test_writes_nobody_waits_for_reach_the_disk_in_order(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    store = h.svc.store
    for n in range(50):
        store.put("counter", n)  # not awaited: the mirror at once, the disk in order
    store.save_cycle("zone-9", {"cid": 1})
    store.clear_cycle("zone-9")
    assert store.get("counter") == 49 and "zone-9" not in store.cycles()
    await h.stop()
    h2 = Harness(tmp_path)
    await h2.start()
    assert h2.svc.store.get("counter") == 49 and "zone-9" not in h2.svc.store.cycles()
    assert not h2.of("valve.interrupted")
    await h2.stop()
