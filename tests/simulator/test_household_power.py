"""``HouseholdPower``: the living-alone meter's noise stays inside a welfare deadband; a kettle does not."""

from __future__ import annotations

from simulator.clock import SimClock
from simulator.physics import HouseholdPower

START = 1_700_000_000.0


def test_a_day_of_fridge_and_standby_wobbles_but_stays_within_70_w() -> None:
    clock = SimClock(0, START)
    meter = HouseholdPower(clock, seed=3)
    seen = []
    for _ in range(24 * 60):  # a reading a minute for a day
        clock.advance(60)
        seen.append(meter.values(clock.now())["power"])
    assert max(seen) - min(seen) <= 70 and min(seen) > 0
    assert sum(a != b for a, b in zip(seen, seen[1:])) > 0.9 * len(seen), "a float that (nearly) never reads the same twice"
    assert sum(1 for a, b in zip(seen, seen[1:]) if abs(a - b) > 30) >= 20, "the compressor cycles through the day"


def test_a_kettle_is_a_step_far_above_the_noise_and_the_world_depends_only_on_the_seed() -> None:
    a_clock, b_clock = SimClock(0, START), SimClock(0, START)
    a, b = HouseholdPower(a_clock, seed=5), HouseholdPower(b_clock, seed=5)
    for _ in range(30):  # a is polled every minute, b only at the end
        a_clock.advance(60)
        a.values(a_clock.now())
    b_clock.advance(30 * 60)
    assert a.values(a_clock.now()) == b.values(b_clock.now())
    before = a.values(a_clock.now())["power"]
    a.set_appliance(1850)
    a_clock.advance(60)
    on = a.values(a_clock.now())
    assert on["power"] - before > 1700 and on["current"] > 7
    a.set_appliance(0)
    a_clock.advance(60)
    assert a.values(a_clock.now())["power"] < 80
