"""Automatic programs over simulated days (FakeClock + the simulator's soil physics), and the shared arbiter."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.config.load import load_profile
from simulator.physics import SoilProbe, ValveRelay
from tests.gateway.commands.support import Harness, commands
from tests.support import PROFILES

TZ = ZoneInfo("Asia/Shanghai")


class SimTime:
    """The simulator's clock interface over the test's FakeClock."""

    def __init__(self, clock):
        self.clock = clock

    def now(self) -> float:
        return self.clock.time()


class ModelDevice:
    """A driver double backed by a simulator model (writes reach the physics)."""

    def __init__(self, profile: str, model, simtime: SimTime):
        self.profile = load_profile(PROFILES / f"{profile}.yaml")
        self.model = model
        self.simtime = simtime
        self.writes: list = []

    async def write(self, point, value):
        self.writes.append((point, value))
        self.model.write(point, value, self.simtime.now())

    async def read_all(self):
        values = self.model.values(self.simtime.now())
        return [(p, values[p.name]) for p in self.profile.points]


def program_cmds(**prog) -> dict:
    cmds = commands()
    cmds["programs"] = [{"id": "zone-1-auto", "valve": "zone-1", "sensor": {"device": "soil-1", "point": "moisture"},
                         "start_below": 28, "stop_at": 30, "max_run": "20m", "max_per_day": 12, **prog}]
    return cmds


class Farm:
    def __init__(self, h: Harness, seed: int = 3, moisture: float | None = None):
        self.h = h
        st = SimTime(h.clock)
        self.relay = ValveRelay(st, seed)
        self.soil = SoilProbe(st, seed, irrigating=lambda t: self.relay.is_open(1, t))
        if moisture is not None:
            self.soil.moisture = moisture
        h.valves = ModelDevice("valve_relay", self.relay, st)
        h.devices["valves"] = h.valves
        self.trace: list[tuple[float, float, bool]] = []  # (time, moisture, zone 1 open)

    def moisture(self) -> float:
        return self.soil.values(self.h.clock.time())["moisture"]

    async def run(self, seconds: float, step: float = 60.0, on_step=None) -> None:
        h = self.h
        for _ in range(int(seconds / step)):
            await h.clock.advance(step)
            now = h.clock.time()
            m = self.moisture()
            h.observe("soil-1", moisture=m)
            h.observe("weather", rain_detected=False)
            h.observe("tank", level=1.5)
            h.observe("valves", **{k: v for k, v in self.relay.values(now).items() if not k.endswith("_pulse")})
            await h.svc.drain()
            self.trace.append((now, m, self.relay.is_open(1, now)))
            if on_step:
                await on_step(now)


def cycles(h: Harness) -> list[dict]:
    return [c for c in h.of("valve.closed") if c.get("program") == "zone-1-auto"]


def local_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).date().isoformat()


async def test_program_keeps_a_zone_between_its_targets_over_a_day(tmp_path):
    h = Harness(tmp_path, program_cmds(max_run="30m", stop_at=29.5))
    farm = Farm(h, moisture=31.0)
    await h.start(readings=False)
    await farm.run(48 * 3600)
    opened = [o for o in h.of("valve.opened") if o["source"] == "program"]
    closed = cycles(h)
    assert len(opened) >= 3, "the soil dries over two days: the program must have watered"
    assert len(closed) >= len(opened) - 1
    for c in closed:
        assert c["ran_s"] <= 30 * 60 + 1e-6, f"cycle ran {c['ran_s']} s, longer than max_run"
        assert c["reason"] in ("target_reached", "max_run")
    per_day: dict[str, int] = {}
    for o in opened:
        per_day[local_day(o["ts"])] = per_day.get(local_day(o["ts"]), 0) + 1
    assert max(per_day.values()) <= 12
    moist = [m for _t, m, _open in farm.trace]
    assert min(moist) >= 28 - 0.5, f"moisture fell to {min(moist)}: the program let the zone dry out"
    assert max(moist) <= 31.0 + 0.01, f"moisture rose to {max(moist)}: the program over-watered"
    # it stops at the target, before its maximum
    assert any(c["reason"] == "target_reached" and c["ran_s"] < 30 * 60 for c in closed)
    assert h.svc.snapshot()["programs"]["zone-1-auto"]["runs_today"] >= 0
    await h.stop()


async def test_program_never_exceeds_its_daily_count_or_its_window(tmp_path):
    # very dry soil, short cycles: the count and the window are what limit it
    h = Harness(tmp_path, program_cmds(max_per_day=3, max_run="5m", windows=["05:00-08:00"]))
    farm = Farm(h, moisture=18.0)
    await h.start(readings=False)
    await farm.run(30 * 3600, step=120)
    opened = [o for o in h.of("valve.opened") if o["source"] == "program"]
    per_day: dict[str, int] = {}
    for o in opened:
        local = datetime.fromtimestamp(o["ts"], TZ)
        assert 5 <= local.hour < 8, f"started at {local:%H:%M}, outside 05:00-08:00"
        per_day[local.date().isoformat()] = per_day.get(local.date().isoformat(), 0) + 1
    assert per_day and max(per_day.values()) == 3, per_day
    assert all(c["ran_s"] <= 300 + 1e-6 for c in cycles(h))
    snap = h.svc.snapshot()["programs"]["zone-1-auto"]
    assert snap["max_per_day"] == 3
    await h.stop()


async def test_daily_count_survives_a_restart(tmp_path):
    h = Harness(tmp_path, program_cmds(max_per_day=1, max_run="1m"))
    await h.start()
    h.observe("soil-1", moisture=20.0)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is True
    await h.advance(61)
    await h.stop()
    h2 = Harness(tmp_path, program_cmds(max_per_day=1, max_run="1m"))
    h2.clock = h.clock
    await h2.start()
    h2.observe("soil-1", moisture=20.0)
    await h2.svc.drain()
    assert h2.valves.values["zone_1"] is False, "a second cycle the same day after a restart"
    assert "1 cycles today" in h2.svc.snapshot()["programs"]["zone-1-auto"]["waiting"]
    await h2.stop()


async def test_program_yields_to_close_all_and_resumes_when_told(tmp_path):
    h = Harness(tmp_path, program_cmds())
    await h.start()
    h.observe("soil-1", moisture=25.0)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is True
    assert h.of("valve.opened")[-1]["source"] == "program"
    res = await h.send(h.env("close_all", "*"))  # default hold: close_all_hold (6 h)
    assert res["status"] == "executed" and res["programs_paused_until"] == pytest.approx(h.clock.time() + 6 * 3600)
    assert h.valves.values["zone_1"] is False
    closed = h.of("valve.closed")[-1]
    assert closed["reason"] == "close_all" and closed["program"] == "zone-1-auto"
    for _ in range(10):  # still dry, inside the window: the program must not fight the farmer
        await h.advance(60)
        h.observe_farm(moisture=25.0)
        await h.svc.drain()
        assert h.valves.values["zone_1"] is False
    assert "close_all" in h.svc.snapshot()["programs"]["zone-1-auto"]["waiting"]
    assert (await h.send(h.env("resume_programs", "*")))["status"] == "executed"
    h.observe_farm(moisture=25.0)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is True
    await h.stop()


async def test_hold_survives_a_restart_and_ends_by_itself(tmp_path):
    h = Harness(tmp_path, program_cmds())
    await h.start()
    await h.send(h.env("close_all", "*", {"hold_s": 600}))
    await h.stop()
    h2 = Harness(tmp_path, program_cmds())
    h2.clock = h.clock
    await h2.start()
    h2.observe("soil-1", moisture=25.0)
    await h2.svc.drain()
    assert h2.valves.values["zone_1"] is False
    await h2.advance(601)
    h2.observe_farm(moisture=25.0)
    await h2.svc.drain()
    assert h2.valves.values["zone_1"] is True
    await h2.stop()


async def test_remote_command_takes_over_a_program_cycle(tmp_path):
    h = Harness(tmp_path, program_cmds())
    await h.start()
    h.observe("soil-1", moisture=25.0)
    await h.svc.drain()
    res = await h.send(h.env("irrigate", "zone-1", {"duration_s": 1500}))
    assert res["status"] == "executed"
    opened = h.of("valve.opened")[-1]
    assert opened["source"] == "remote" and opened["replaced"]["program"] == "zone-1-auto"
    h.observe("soil-1", moisture=31.0)  # the program's target: not the program's cycle any more
    await h.svc.drain()
    assert h.valves.values["zone_1"] is True
    await h.advance(1200)  # the program's max_run (20 min) does not apply either
    assert h.valves.values["zone_1"] is True
    await h.advance(300)
    assert h.valves.values["zone_1"] is False
    assert h.of("valve.closed")[-1]["reason"] == "duration_elapsed"
    await h.stop()


async def test_program_respects_interlocks(tmp_path):
    h = Harness(tmp_path, program_cmds())
    await h.start(readings=False)
    h.observe("weather", rain_detected=True)
    h.observe("tank", level=1.5)
    h.observe("soil-1", moisture=25.0)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is False
    assert "rain" in h.svc.snapshot()["programs"]["zone-1-auto"]["waiting"]
    h.observe("weather", rain_detected=False)
    h.observe("soil-1", moisture=25.0)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is True
    h.observe("weather", rain_detected=True)  # rain starts mid-cycle
    await h.svc.drain()
    assert h.valves.values["zone_1"] is False
    assert h.of("valve.closed")[-1]["interlock"] == "rain"
    await h.stop()


async def test_a_reading_arriving_while_the_valve_opens_is_still_judged(tmp_path):
    h = Harness(tmp_path, program_cmds())
    await h.start(readings=False)
    h.observe("weather", rain_detected=False)
    h.observe("tank", level=1.5)
    h.observe("soil-1", moisture=25.0)  # the program decides to open ...
    h.observe("weather", rain_detected=True)  # ... and rain is seen before the valve is open
    await h.svc.drain()
    assert h.valves.values["zone_1"] is False
    assert h.of("valve.closed")[-1]["interlock"] == "rain"
    await h.stop()
