"""ModbusRtuLine on real pty lines: scheduling, timing, dead slaves, lost ports, bad replies.

Every test runs the gateway's line against ``simulator.rtu.RtuLineSimulator``
on a Linux pty: the slaves answer only when the bytes would have crossed the
wire, drop requests that break the 3.5-character gap, and count collisions,
so "no overlap, gap kept" is checked by the other end of the line.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.errors import BadReply, DeviceException, DeviceQuarantined, DeviceTimeout, DeviceUnreachable
from drivers.modbus.rtu import COMMAND, POLL, ModbusRtuLine, RtuDevice
from drivers.serial_line.settings import SerialSettings
from gateway.poll.health import Health
from gateway.poll.poller import DevicePoller
from simulator.clock import SimClock
from simulator.modbus_tcp import SimulatedDevice
from simulator.physics import ValveRelay
from simulator.rtu import soil_probes
from tests.drivers.serial_line.ptys import profile, rtu_line

E9600 = SerialSettings(9600, 8, "E", 1)
SOIL = profile("soil_probe")


def devices_on(line: ModbusRtuLine, units, prof=SOIL, **kw) -> list[RtuDevice]:
    return [RtuDevice(f"dev-{u}", u, prof, line.slave(u, f"dev-{u}"), **kw) for u in units]


def assert_clean_wire(sim) -> None:
    c = sim.stats()
    assert c["gap_violations"] == 0, f"gap violated {c['gap_violations']} time(s)"
    assert c["collisions"] == 0, f"{c['collisions']} collision(s) on the wire"


async def test_ten_slaves_at_9600_all_read_correctly_on_schedule(tmp_path):
    with rtu_line(tmp_path, units=range(1, 11), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.3)
        health = Health()
        seen: dict[str, list] = {}

        async def sink(readings):
            seen.setdefault(readings[0].device, []).append(readings)

        devs = devices_on(line, range(1, 11))
        pollers = []
        for d in devs:
            health.register(d.id, "rs485")
            pollers.append(DevicePoller(d, 1.0, sink, health))
        tasks = [asyncio.create_task(p.run()) for p in pollers]
        # a round of 10 polls takes 10 x 36.7 ms (25 chars x 1.146 ms + 2 gaps of 4.01 ms) of each 1 s;
        # rounds start at 0, 1 and 2 s
        await asyncio.sleep(2.6)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await line.close()

        for d in devs:
            st = health.devices[d.id]
            assert st.failures == 0 and st.overruns == 0, f"{d.id}: {st.as_dict()}"
            assert st.polls == 3, f"{d.id} polled {st.polls} times, expected 3"
            batches = seen[d.id]
            starts = [b[0].ts for b in batches]
            gaps = [b - a for a, b in zip(starts, starts[1:])]
            assert all(0.95 < g < 1.05 for g in gaps), f"{d.id} off schedule: {gaps}"
            want = sim.expected(d.unit)
            for r in batches[-1]:
                assert r.value == want[r.point], f"{d.id}.{r.point}: {r.value} != {want[r.point]}"
            assert {r.point for r in batches[-1]} == set(want)
        stats = line.stats()
        assert stats["transactions"] == 30 and stats["replies"] == 30
        assert 0.25 < stats["utilisation_total"] < 0.6  # 3 x 367 ms in ~2.6 s, gaps included
        assert_clean_wire(sim)


async def test_commands_preempt_queued_polls(tmp_path):
    clock = SimClock(0)
    valves = SimulatedDevice("valves", 40, profile("valve_relay"), ValveRelay(clock, 40))
    with rtu_line(tmp_path, devices=soil_probes(list(range(1, 10)), clock) + [valves], settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.3)
        probes = devices_on(line, range(1, 10))
        relay = RtuDevice("valves", 40, profile("valve_relay"), line.slave(40, "valves"))
        await probes[0].read_all()  # port open, line warm
        done: list[str] = []

        async def poll(d):
            await d.read_all()
            done.append(d.id)

        async def command():
            await relay.write("zone_2", True)
            done.append("command")

        polls = [asyncio.create_task(poll(d)) for d in probes]
        await asyncio.sleep(0.005)  # all nine polls queued, the first on the wire
        t0 = time.monotonic()
        cmd = asyncio.create_task(command())
        await cmd
        took = time.monotonic() - t0
        await asyncio.gather(*polls)
        await line.close()
        # only the poll already on the wire may finish before the command
        assert done.index("command") <= 1, done
        assert took < 0.25, f"command waited {took * 1000:.0f} ms behind polls"
        assert sim.expected(40)["zone_2"] is True
        assert line.stats()["commands"] == 1
        assert_clean_wire(sim)


async def test_priority_is_explicit_too(tmp_path):
    """``execute(..., priority=COMMAND)`` jumps the queue for callers outside RtuDevice."""
    with rtu_line(tmp_path, units=range(1, 6), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.3)
        order: list[str] = []

        async def req(tag, unit, prio):
            await line.execute(lambda c: c.read_holding_registers(0, count=1, device_id=unit), None, prio, unit=unit)
            order.append(tag)

        tasks = [asyncio.create_task(req(f"poll{u}", u, POLL)) for u in range(1, 6)]
        await asyncio.sleep(0.005)
        tasks.append(asyncio.create_task(req("cmd", 3, COMMAND)))
        await asyncio.gather(*tasks)
        await line.close()
        assert order.index("cmd") <= 1, order
        assert_clean_wire(sim)


async def test_silent_slave_is_quarantined_costs_no_wire_time_and_returns(tmp_path):
    with rtu_line(tmp_path, units=(1, 2, 3), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.05, quarantine_after=3, reprobe_interval=0.4,
                             slave_backoff_initial=0.01, slave_backoff_max=0.02)
        d1, d2, d3 = devices_on(line, (1, 2, 3))
        await d3.read_all()
        sim.set_fault(3, "silent")
        statuses = []
        for _ in range(3):
            await asyncio.sleep(0.04)  # past the slave's retry backoff
            with pytest.raises((DeviceTimeout, DeviceQuarantined)) as err:
                await d3.read_all()
            statuses.append(err.value.status)
        assert statuses == ["timeout", "timeout", "quarantined"]
        assert line.stats()["slaves"]["3"]["state"] == "quarantined"

        # quarantined: fails at once, nothing goes on the wire, the others are unaffected
        asked = sim.slave(3).requests
        t0 = time.monotonic()
        for _ in range(20):
            with pytest.raises(DeviceQuarantined):
                await d3.read_all()
        assert time.monotonic() - t0 < 0.05
        assert sim.slave(3).requests == asked
        assert [p.name for p, _ in await d1.read_all()] and await d2.read_all()

        # it answers again: the next re-probe brings it back by itself
        sim.set_fault(3, None)

        async def back():
            try:
                return await d3.read_all()
            except DeviceQuarantined:
                return None

        values = await eventually_async(back, timeout=2.0)
        assert {p.name: v for p, v in values} == sim.expected(3)
        st = line.stats()["slaves"]["3"]
        assert st["state"] == "ok" and st["quarantines"] == 1 and st["consecutive_failures"] == 0
        assert st["skipped"] >= 20
        await line.close()
        assert_clean_wire(sim)


async def eventually_async(fn, timeout: float = 5.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no success within {timeout}s")
        await asyncio.sleep(interval)


async def test_quarantined_slave_probe_failure_keeps_status_quarantined(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.03, quarantine_after=1, reprobe_interval=0.1)
        (d1,) = devices_on(line, (1,))
        sim.set_fault(1, "silent")
        with pytest.raises(DeviceQuarantined):
            await d1.read_all()
        await asyncio.sleep(0.12)
        asked = sim.slave(1).requests
        with pytest.raises(DeviceQuarantined, match="re-probe"):  # the probe itself: still quarantined, not "timeout"
            await d1.read_all()
        assert sim.slave(1).requests == asked + 1
        await line.close()


async def test_exception_replies_mean_alive_not_quarantined(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.1, quarantine_after=2)
        (d1,) = devices_on(line, (1,))
        sim.set_fault(1, "exception")
        for _ in range(4):
            with pytest.raises(DeviceException) as err:
                await d1.read_all()
            assert err.value.code == 4
        st = line.stats()["slaves"]["1"]
        assert st["state"] == "ok" and st["exceptions"] == 4 and st["quarantines"] == 0
        await line.close()


async def test_command_reaches_a_quarantined_slave(tmp_path):
    clock = SimClock(0)
    valves = SimulatedDevice("valves", 40, profile("valve_relay"), ValveRelay(clock, 40))
    with rtu_line(tmp_path, devices=[valves], settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.03, quarantine_after=1, reprobe_interval=60)
        relay = RtuDevice("valves", 40, profile("valve_relay"), line.slave(40, "valves"))
        sim.set_fault(40, "silent")
        with pytest.raises(DeviceQuarantined):
            await relay.read_all()
        sim.set_fault(40, None)
        with pytest.raises(DeviceQuarantined):
            await relay.read_all()  # polls wait for the re-probe...
        await relay.write("zone_1", True)  # ...a command is always tried, and brings it back
        assert sim.expected(40)["zone_1"] is True
        assert line.stats()["slaves"]["40"]["state"] == "ok"
        await relay.read_all()
        await line.close()


async def test_vanished_port_is_reopened_and_devices_are_unreachable_meanwhile(tmp_path):
    with rtu_line(tmp_path, units=(1, 2), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.1, backoff_initial=0.05, backoff_max=0.1)
        d1, d2 = devices_on(line, (1, 2))
        await d1.read_all()
        sim.vanish()
        await asyncio.sleep(0.05)  # the adapter is gone: reads fail with EIO
        for d in (d1, d2):
            with pytest.raises(DeviceUnreachable):
                await d.read_all()
        st = line.stats()
        assert st["state"] == "reopening" and st["port_error"]
        await asyncio.sleep(0.3)  # reopen attempts fail while it is unplugged
        with pytest.raises(DeviceUnreachable):
            await d2.read_all()
        sim.restore()  # plugged back in: a new pty behind the same path

        async def ok():
            try:
                return await d1.read_all() and await d2.read_all()
            except DeviceUnreachable:
                return None

        await eventually_async(ok, timeout=3.0)
        st = line.stats()
        assert st["state"] == "open" and st["opens"] >= 2 and st["port_failures"] >= 2
        # the slaves were not blamed for the port
        assert st["slaves"]["1"]["consecutive_failures"] == 0 and st["slaves"]["2"]["quarantines"] == 0
        await line.close()
        assert_clean_wire(sim)


async def test_port_missing_at_start_is_retried(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        sim.vanish()
        line = ModbusRtuLine(sim.path, E9600, timeout=0.1, backoff_initial=0.05, backoff_max=0.05)
        (d1,) = devices_on(line, (1,))
        with pytest.raises(DeviceUnreachable, match="does not exist"):
            await d1.read_all()
        sim.restore()

        async def ok():
            try:
                return await d1.read_all()
            except DeviceUnreachable:
                return None

        await eventually_async(ok, timeout=2.0)
        await line.close()


async def test_crc_garbled_truncated_replies_and_noise_are_counted_never_crash(tmp_path):
    with rtu_line(tmp_path, units=(1, 2, 3, 4), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.08, quarantine_after=1000, slave_backoff_initial=0,
                             slave_backoff_max=0)
        d1, d2, d3, d4 = devices_on(line, (1, 2, 3, 4))
        sim.set_fault(1, "crc")
        sim.set_fault(2, "garbled")
        sim.set_fault(3, "truncated")
        for _ in range(5):
            for d in (d1, d2, d3):
                with pytest.raises(BadReply):
                    await d.read_all()
            assert {p.name for p, _ in await d4.read_all()} == {"moisture", "temperature", "ec", "water_potential"}
        sim.write(b"\x00\xffnoise between frames")  # line noise while nobody waits for a reply
        await asyncio.sleep(0.02)
        st = line.stats()
        assert st["crc_errors"] + st["garbled"] == 10  # random bytes can happen to look like a CRC error
        assert st["crc_errors"] >= 5 and st["truncated"] == 5
        assert st["stale_bytes"] > 0
        for d in (d1, d2, d3):
            sim.set_fault(d.unit, None)
        for d in (d1, d2, d3, d4):
            values = {p.name: v for p, v in await d.read_all()}
            assert values == sim.expected(d.unit)
        assert line.stats()["slaves"]["2"]["failures"] == 5
        await line.close()


async def test_garbage_fuzz_only_ever_gives_device_errors(tmp_path):
    with rtu_line(tmp_path, units=(5,), settings=SerialSettings(38400, 8, "E", 1)) as sim:
        line = ModbusRtuLine(sim.path, SerialSettings(38400, 8, "E", 1), timeout=0.03, quarantine_after=10_000,
                             slave_backoff_initial=0, slave_backoff_max=0)
        (d5,) = devices_on(line, (5,))
        sim.set_fault(5, "garbled")
        for _ in range(60):
            with pytest.raises((BadReply, DeviceTimeout)):
                await d5.read_all()
        sim.set_fault(5, None)
        assert await d5.read_all()
        await line.close()


async def test_the_gap_matters_a_strict_slave_drops_early_requests(tmp_path):
    """Why the owner waits 3.5 characters: without it the simulated slaves drop requests."""
    with rtu_line(tmp_path, units=(1, 2), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.05, quarantine_after=1000, slave_backoff_initial=0,
                             slave_backoff_max=0)
        line.gap = 0.0  # a master that does not wait (as pymodbus on its own)
        d1, d2 = devices_on(line, (1, 2))
        failures = 0
        for _ in range(6):
            for d in (d1, d2):
                try:
                    await d.read_all()
                except DeviceTimeout:
                    failures += 1
        await line.close()
        assert sim.stats()["gap_violations"] >= 5 and failures >= 5


async def test_timing_follows_baud_and_gap(tmp_path):
    """A poll takes at least the wire time and not much more (no fixed sleeps)."""
    for settings in (SerialSettings(9600, 8, "E", 1), SerialSettings(38400, 8, "N", 2)):
        with rtu_line(tmp_path, units=(1,), settings=settings, name=f"tty{settings.baudrate}") as sim:
            line = ModbusRtuLine(sim.path, settings, timeout=0.3)
            (d1,) = devices_on(line, (1,))
            await d1.read_all()
            # back to back: each poll waits the gap after the previous reply, then 25 chars + turnaround
            times = []
            for _ in range(20):
                t0 = time.monotonic()
                await d1.read_all()
                times.append(time.monotonic() - t0)
            wire = (8 + 17) * settings.char_time + settings.t35  # request, slave turnaround, reply
            floor = wire + settings.t35  # + the master's gap before the next request
            # never faster than the wire (part of the gap may pass before a call starts: the gap itself
            # is checked by the simulator, assert_clean_wire); the least disturbed poll close to the floor
            assert min(times) > wire * 0.98, (settings, min(times), wire)
            assert min(times) < floor * 1.3 + 0.001, (settings, min(times), floor)
            await line.close()
            assert_clean_wire(sim)


async def test_slow_slave_answers_late_but_within_timeout(tmp_path):
    with rtu_line(tmp_path, units=(1, 2), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.3)
        d1, d2 = devices_on(line, (1, 2))
        sim.set_fault(1, "slow", slow_delay=0.08)
        t0 = time.monotonic()
        assert await d1.read_all()
        assert time.monotonic() - t0 >= 0.08
        assert await d2.read_all()
        assert line.stats()["slaves"]["1"]["latency_ms"]["last"] >= 80
        await line.close()


@pytest.mark.parametrize("process", [False, True], ids=["in-process", "worker"])
async def test_ascii_framer(tmp_path, process):
    settings = SerialSettings(9600, 7, "E", 1)
    with rtu_line(tmp_path, units=(1, 17), settings=settings, framer="ascii") as sim:
        line = ModbusRtuLine(sim.path, settings, framer="ascii", timeout=0.3, process=process)
        for d in devices_on(line, (1, 17)):
            assert {p.name: v for p, v in await d.read_all()} == sim.expected(d.unit)
        sim.set_fault(17, "crc")
        with pytest.raises(BadReply, match="LRC"):
            await devices_on(line, (17,))[0].read_all()
        assert line.stats()["crc_errors"] == 1 and line.stats()["type"] == "modbus_ascii"
        await line.close()


def test_the_pymodbus_engine_is_gone():
    """One engine (the hand-written framing, which keeps the 3.5-character gap): asking for pymodbus' fails.

    Replaces test_pymodbus_engine_reads_and_times_out; the pymodbus comparison lives in bench/rtu_bus.py."""
    with pytest.raises((TypeError, ValueError), match="engine"):
        ModbusRtuLine("/dev/null", E9600, engine="pymodbus")
    assert ModbusRtuLine("/dev/null", E9600).stats()["engine"] == "raw"


async def test_close_fails_queued_requests_and_lets_the_wire_finish(tmp_path):
    with rtu_line(tmp_path, units=range(1, 6), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.3)
        devs = devices_on(line, range(1, 6))
        tasks = [asyncio.create_task(d.read_all()) for d in devs]
        await asyncio.sleep(0.005)
        await line.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], list)  # the one on the wire completed
        assert all(isinstance(r, DeviceUnreachable) for r in results[1:])
        with pytest.raises(DeviceUnreachable):
            await devs[0].read_all()
        assert_clean_wire(sim)


async def test_stats_carry_what_canopy_bus_shows(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.1)
        (d1,) = devices_on(line, (1,))
        for _ in range(3):
            await d1.read_all()
        st = line.stats()
        for key in ("port", "settings", "state", "utilisation", "wire_utilisation", "busy_s", "gap_ms", "char_time_ms",
                    "transactions", "timeouts", "crc_errors", "queue", "slaves"):
            assert key in st
        assert st["settings"] == "9600 8E1" and st["gap_ms"] == pytest.approx(3.5 * 11 / 9600 * 1000, rel=1e-3)
        s1 = st["slaves"]["1"]
        assert s1["device"] == "dev-1" and s1["success_rate"] == 1.0 and s1["latency_ms"]["avg"] > 20
        assert 0 < st["wire_utilisation"] < st["utilisation"] <= 1
        await line.close()


async def test_a_failing_request_function_does_not_stop_the_line(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        line = ModbusRtuLine(sim.path, E9600, timeout=0.2)

        async def broken(client):
            raise RuntimeError("bug in a request function")

        with pytest.raises(RuntimeError, match="bug in a request"):
            await line.execute(broken, unit=1)
        (d1,) = devices_on(line, (1,))
        assert {p.name: v for p, v in await d1.read_all()} == sim.expected(1)
        await line.close()
