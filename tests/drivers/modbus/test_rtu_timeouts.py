"""Adaptive reply timeouts: the estimator (pure, no clock) and the line using it on real ptys.

The pure tests pin the arithmetic (RFC 6298's SRTT/RTTVAR, bounds, doubling,
no-history guesses, re-probe waits); the pty tests check what an installer
sees: a slave that answers in 12 ms is declared silent within ~50 ms, a late
reply does not collide with the next request, a dead slave is quarantined
after three cheap failures and its re-probes cost a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.errors import DeviceQuarantined, DeviceTimeout
from drivers.modbus import framing
from drivers.modbus.rtu import ModbusRtuLine, RtuDevice
from drivers.modbus.rtu_slaves import SlavePolicy, Slaves
from drivers.modbus.rtu_timeouts import DelayEstimate, ReplyTimeouts, TimeoutBounds
from drivers.serial_line.settings import SerialSettings
from tests.drivers.serial_line.ptys import profile, rtu_line

E9600 = SerialSettings(9600, 8, "E", 1)
E38400 = SerialSettings(38400, 8, "E", 1)
SOIL = profile("soil_probe")
MS = 0.001


# -- the estimator ------------------------------------------------------------------------------
def test_estimate_follows_rfc6298():
    est = DelayEstimate()
    est.observe(10 * MS)
    assert est.srtt == pytest.approx(10 * MS) and est.rttvar == pytest.approx(5 * MS)
    est.observe(18 * MS)
    assert est.rttvar == pytest.approx(0.75 * 5 * MS + 0.25 * 8 * MS)
    assert est.srtt == pytest.approx(10 * MS + 8 * MS / 8)
    for _ in range(200):
        est.observe(12 * MS)
    assert est.srtt == pytest.approx(12 * MS, abs=1e-6) and est.rttvar < 1e-6
    assert est.allowance() == pytest.approx(24 * MS, abs=1e-5)  # twice the delay once it is steady


def test_timeout_is_wire_time_plus_learned_delay_within_floor_and_ceiling():
    t = ReplyTimeouts(TimeoutBounds(ceiling=0.5, floor=5 * MS))
    wire = 19.5 * MS
    assert t.timeout(1, 3, wire) == pytest.approx(wire + 0.5)  # nobody heard yet: the ceiling
    for _ in range(50):
        t.observe(1, 3, 12 * MS)
    assert t.timeout(1, 3, wire) == pytest.approx(wire + 24 * MS, abs=1e-4)
    for _ in range(50):
        t.observe(2, 3, 1 * MS)
    assert t.timeout(2, 3, wire) == pytest.approx(wire + 5 * MS)  # the floor
    assert t.timeout(1, 3, wire, ceiling=0.01) == pytest.approx(wire + 0.01)  # a device's own timeout caps it
    fixed = ReplyTimeouts(TimeoutBounds(ceiling=0.1, floor=0.1))  # floor = ceiling: a fixed timeout
    fixed.observe(1, 3, 1 * MS)
    assert fixed.timeout(1, 3, 0.0) == pytest.approx(0.1)


def test_function_codes_learn_separately_and_a_write_never_heard_waits_the_ceiling():
    t = ReplyTimeouts(TimeoutBounds(ceiling=0.5, floor=1 * MS))
    for _ in range(20):
        t.observe(1, 3, 4 * MS)
        t.observe(1, 16, 60 * MS)
    assert t.timeout(1, 3, 0.0) == pytest.approx(8 * MS, abs=1e-4)
    assert t.timeout(1, 16, 0.0) == pytest.approx(120 * MS, abs=1e-3)
    assert t.timeout(1, 6, 0.0) == pytest.approx(0.5)  # a write with no history: an operator's command is not cut short


def test_no_history_read_waits_twice_the_slowest_read_of_the_line():
    t = ReplyTimeouts(TimeoutBounds(ceiling=0.5, floor=1 * MS))
    for _ in range(20):
        t.observe(1, 3, 4 * MS)
        t.observe(2, 4, 10 * MS)
    assert t.timeout(9, 3, 0.0) == pytest.approx(40 * MS, abs=1e-3)  # 2 x (2 x 10 ms)


def test_each_timeout_doubles_the_next_until_an_answer():
    t = ReplyTimeouts(TimeoutBounds(ceiling=0.2, floor=1 * MS))
    for _ in range(60):
        t.observe(1, 3, 10 * MS)
    waits = []
    for _ in range(6):
        waits.append(round(t.timeout(1, 3, 0.0) / MS))
        t.timed_out(1, 3)
    assert waits == [20, 40, 80, 160, 200, 200]
    t.observe(1, 3, 10 * MS)
    assert t.timeout(1, 3, 0.0) == pytest.approx(20 * MS, abs=1e-3)
    t.timed_out(9, 3)  # never heard, timed out once: twice the line's first guess
    assert t.timeout(9, 3, 0.0) == pytest.approx(2 * 2 * 20 * MS, abs=1e-3)


def test_reprobes_wait_the_floor_and_every_fourth_the_ceiling():
    t = ReplyTimeouts(TimeoutBounds(ceiling=0.5, floor=20 * MS))
    slaves = Slaves(SlavePolicy(quarantine_after=1, reprobe_interval=10.0), "line")
    s = slaves.get(3)
    with pytest.raises(DeviceQuarantined):
        slaves.failed(s, DeviceTimeout("no reply"), 0.0)
    waits = []
    for k in range(1, 9):
        now = 10.0 * k + 0.1
        assert slaves.admit(s, now, command=False) is True
        waits.append(round(t.timeout(3, 3, 0.0, probe=s.probe_wait()) / MS))
        with pytest.raises(DeviceQuarantined):
            slaves.failed(s, DeviceTimeout("no reply"), now)
    assert waits == [20, 20, 20, 500, 20, 20, 20, 500]
    # line time of re-probes: (3 x floor + ceiling) / 4 per reprobe_interval (default 30 s)
    assert (3 * 0.02 + 0.5) / 4 / 30 < 0.02
    slaves.succeeded(s, 0.01, object())
    assert s.probes == 0 and not s.quarantined


def test_expected_reply_length_from_the_request():
    assert framing.expected_reply_length(bytes((3, 0, 0, 0, 6))) == 17
    assert framing.expected_reply_length(bytes((1, 0, 0, 0, 9))) == 7
    assert framing.expected_reply_length(bytes((16, 0, 0, 0, 2, 4, 0, 1, 0, 2))) == 8
    assert framing.expected_reply_length(bytes((43, 14, 1, 0))) == framing.RTU_MAX
    assert framing.ascii_length(17) == 35


# -- on a real pty --------------------------------------------------------------------------------
def devices_on(line: ModbusRtuLine, units) -> list[RtuDevice]:
    return [RtuDevice(f"dev-{u}", u, SOIL, line.slave(u, f"dev-{u}")) for u in units]


async def test_a_slave_answering_in_12ms_is_declared_silent_within_50ms(tmp_path):
    # 38400 8E1: 17-character reply = 4.9 ms; turnaround 7 ms -> the reply is complete 12 ms after the request
    with rtu_line(tmp_path, units=(1, 2), settings=E38400, turnaround=0.007) as sim:
        line = ModbusRtuLine(sim.path, E38400, timeout=0.5, slave_backoff_initial=0, slave_backoff_max=0)
        d1, d2 = devices_on(line, (1, 2))
        for _ in range(20):
            await d1.read_all()
            await d2.read_all()
        assert line.stats()["slaves"]["1"]["reply_timeouts"]["3"]["delay_ms"] == pytest.approx(7, abs=2.5)
        sim.set_fault(1, "silent")
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout, match="within"):
            await d1.read_all()
        took = time.monotonic() - t0  # gap 1.75 + request 2.3 + reply 4.9 + t3.5 1.75 + floor 40 ms
        assert took < 0.06, f"declared silent after {took * 1000:.1f} ms"
        assert await d2.read_all()  # the next request waited for silence after the timeout
        await line.close()
        c = sim.stats()
        assert c["gap_violations"] == 0 and c["collisions"] == 0


async def test_a_reply_late_past_its_timeout_does_not_collide_with_the_next_request(tmp_path):
    e2400 = SerialSettings(2400, 8, "E", 1)  # t3.5 = 16 ms: room for a reply 8 ms late on either side
    with rtu_line(tmp_path, units=(1, 2), settings=e2400) as sim:
        line = ModbusRtuLine(sim.path, e2400, timeout=0.3, timeout_floor=0.02, quarantine_after=100,
                             slave_backoff_initial=0, slave_backoff_max=0)
        d2 = RtuDevice("dev-2", 2, SOIL, line.slave(2, "dev-2"))
        # its own timeout = the floor: a fixed wait of 20 ms past the reply's 78 ms of wire time
        d1 = RtuDevice("dev-1", 1, SOIL, line.slave(1, "dev-1"), timeout=0.02)
        await d2.read_all()
        # turnaround 16 ms + 12 ms late: complete 8 ms after the wait ends, inside the next gap
        sim.set_fault(1, "slow", slow_delay=0.012)
        for _ in range(3):
            with pytest.raises(DeviceTimeout):
                await d1.read_all()
            try:
                assert {p.name: v for p, v in await d2.read_all()} == sim.expected(2)
            except DeviceTimeout:
                raise AssertionError(sim.stats())
        await line.close()
        c = sim.stats()
        assert c["collisions"] == 0 and c["gap_violations"] == 0, c
        assert line.stats()["stale_bytes"] == 3 * 17


async def test_a_dead_slave_is_quarantined_after_three_cheap_failures_and_reprobed_at_the_floor(tmp_path):
    with rtu_line(tmp_path, units=(1, 2, 3), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.5, reprobe_interval=0.2,
                             slave_backoff_initial=0.01, slave_backoff_max=0.02)
        devs = devices_on(line, (1, 2, 3))
        for _ in range(5):
            for d in devs:
                await d.read_all()
        sim.set_fault(3, "silent")
        spent = []
        statuses = []
        for _ in range(3):
            await asyncio.sleep(0.03)
            t0 = time.monotonic()
            with pytest.raises((DeviceTimeout, DeviceQuarantined)) as err:
                await devs[2].read_all()
            spent.append(time.monotonic() - t0)
            statuses.append(err.value.status)
        assert statuses == ["timeout", "timeout", "quarantined"]
        wire = (8 + 17) * E9600.char_time
        assert sum(spent) < 3 * wire + 0.04 + 0.08 + 0.16, [round(s * 1000, 1) for s in spent]  # doubling, << 1.5 s
        await asyncio.sleep(0.21)
        t0 = time.monotonic()
        with pytest.raises(DeviceQuarantined, match="re-probe"):
            await devs[2].read_all()
        probe = time.monotonic() - t0
        floor = E9600.t35 + 0.04
        assert probe < wire + floor + 0.025, f"re-probe took {probe * 1000:.1f} ms"  # wire + floor (+ gap, scheduling)
        await line.close()


async def test_a_dead_from_boot_slave_costs_a_guess_from_its_neighbours_not_the_ceiling(tmp_path):
    with rtu_line(tmp_path, units=(1, 2), settings=E9600) as sim:
        sim.set_fault(2, "silent")
        line = ModbusRtuLine(sim.path, E9600, timeout=0.5, slave_backoff_initial=0, slave_backoff_max=0)
        d1, d2 = devices_on(line, (1, 2))
        for _ in range(5):
            await d1.read_all()
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout):
            await d2.read_all()
        took = time.monotonic() - t0
        assert took < 0.1, f"no-history timeout took {took * 1000:.1f} ms"
        await line.close()
