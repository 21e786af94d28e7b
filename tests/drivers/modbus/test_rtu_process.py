"""``process: true``: a line run by its worker process (rtu_worker), on real pty lines with strict slaves.

The same simulator as test_rtu_line.py checks the other end of the wire (gap
kept, no collision); here the worker owns the port, so these tests also cover
what only a process can do: fail to open the port, die, and be restarted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

from drivers.errors import BadReply, DeviceException, DeviceQuarantined, DeviceTimeout, DeviceUnreachable
from drivers.modbus.rtu import ModbusRtuLine, RtuDevice
from drivers.serial_line.settings import SerialSettings
from simulator.clock import SimClock
from simulator.modbus_tcp import SimulatedDevice
from simulator.physics import ValveRelay
from simulator.rtu import soil_probes
from tests.drivers.modbus.test_rtu_line import assert_clean_wire, devices_on, eventually_async
from tests.drivers.serial_line.ptys import profile, rtu_line

E9600 = SerialSettings(9600, 8, "E", 1)
E38400 = SerialSettings(38400, 8, "E", 1)


def worker_line(path: str, settings: SerialSettings = E9600, **kw) -> ModbusRtuLine:
    return ModbusRtuLine(path, settings, process=True, **kw)


async def reads_ok(*devs) -> list | None:
    try:
        return [await d.read_all() for d in devs]
    except DeviceUnreachable:
        return None


async def test_ten_slaves_and_a_command_through_the_worker(tmp_path):
    clock = SimClock(0)
    valves = SimulatedDevice("valves", 40, profile("valve_relay"), ValveRelay(clock, 40))
    with rtu_line(tmp_path, devices=soil_probes(list(range(1, 11)), clock) + [valves], settings=E38400) as sim:
        line = worker_line(sim.path, E38400, timeout=0.3)
        probes = devices_on(line, range(1, 11))
        relay = RtuDevice("valves", 40, profile("valve_relay"), line.slave(40, "valves"))
        for _ in range(3):
            results = await asyncio.gather(*(d.read_all() for d in probes), relay.write("zone_2", True))
            for d, values in zip(probes, results):
                assert {p.name: v for p, v in values} == sim.expected(d.unit)
        assert sim.expected(40)["zone_2"] is True
        st = line.stats()
        assert st["transactions"] == st["replies"] == 33 and st["timeouts"] == 0 and st["commands"] == 3
        assert st["state"] == "open" and line.counters["worker_starts"] == 1 and st["opens"] == 1
        assert st["reaction_ms"]["p50"] < 1.0  # the worker's own view: request written after the gap's end
        assert st["slaves"]["3"]["reply_timeouts"]["3"]["samples"] == 3  # learned as in-process
        proc = line._port.proc
        await line.close()
        assert proc.poll() is not None, "the worker outlived its line"
        assert_clean_wire(sim)


async def test_a_command_waits_for_at_most_the_two_requests_in_the_worker(tmp_path):
    clock = SimClock(0)
    valves = SimulatedDevice("valves", 40, profile("valve_relay"), ValveRelay(clock, 40))
    with rtu_line(tmp_path, devices=soil_probes(list(range(1, 10)), clock) + [valves], settings=E9600) as sim:
        line = worker_line(sim.path, timeout=0.3)
        probes = devices_on(line, range(1, 10))
        relay = RtuDevice("valves", 40, profile("valve_relay"), line.slave(40, "valves"))
        await probes[0].read_all()
        done: list[str] = []

        async def poll(d):
            await d.read_all()
            done.append(d.id)

        polls = [asyncio.create_task(poll(d)) for d in probes]
        await asyncio.sleep(0.005)  # nine polls queued, two of them in the worker
        await relay.write("zone_2", True)
        done.append("command")
        await asyncio.gather(*polls)
        await line.close()
        assert done.index("command") <= 2, done
        assert sim.expected(40)["zone_2"] is True
        assert_clean_wire(sim)


async def test_silent_slave_times_out_then_is_quarantined(tmp_path):
    with rtu_line(tmp_path, units=(1, 2), settings=E9600) as sim:
        line = worker_line(sim.path, timeout=0.05, quarantine_after=2, reprobe_interval=60,
                           slave_backoff_initial=0.0, slave_backoff_max=0.0)
        d1, d2 = devices_on(line, (1, 2))
        await d2.read_all()
        sim.set_fault(2, "silent")
        with pytest.raises(DeviceTimeout, match="no reply from unit 2"):
            await d2.read_all()
        with pytest.raises(DeviceQuarantined):
            await d2.read_all()
        assert await d1.read_all()
        st = line.stats()
        assert st["timeouts"] == 2 and st["slaves"]["2"]["state"] == "quarantined"
        await line.close()
        assert_clean_wire(sim)  # after each timeout the worker waited t3.5 before the next request


async def test_crc_garbled_truncated_exception_and_noise_are_counted(tmp_path):
    with rtu_line(tmp_path, units=(1, 2, 3, 4, 5), settings=E9600) as sim:
        line = worker_line(sim.path, timeout=0.08, quarantine_after=1000, slave_backoff_initial=0, slave_backoff_max=0)
        d1, d2, d3, d4, d5 = devices_on(line, (1, 2, 3, 4, 5))
        for unit, fault in ((1, "crc"), (2, "garbled"), (3, "truncated"), (5, "exception")):
            sim.set_fault(unit, fault)
        for _ in range(3):
            for d in (d1, d2, d3):
                with pytest.raises(BadReply):
                    await d.read_all()
            with pytest.raises(DeviceException):
                await d5.read_all()
            assert {p.name for p, _ in await d4.read_all()} == {"moisture", "temperature", "ec", "water_potential"}
        sim.write(b"\x00\xffnoise between frames")  # line noise while nobody waits for a reply
        await asyncio.sleep(0.05)
        assert await d4.read_all()  # the noise is reported with the next transaction
        st = line.stats()
        assert st["crc_errors"] + st["garbled"] == 6 and st["crc_errors"] >= 3 and st["truncated"] == 3
        assert st["exceptions"] == 3 and st["stale_bytes"] > 0
        for unit in (1, 2, 3, 5):
            sim.set_fault(unit, None)
        for d in (d1, d2, d3, d4, d5):
            assert {p.name: v for p, v in await d.read_all()} == sim.expected(d.unit)
        await line.close()


async def test_port_lost_and_missing_port_are_reopened(tmp_path):
    with rtu_line(tmp_path, units=(1, 2), settings=E9600) as sim:
        line = worker_line(sim.path, timeout=0.1, backoff_initial=0.05, backoff_max=0.1)
        d1, d2 = devices_on(line, (1, 2))
        await d1.read_all()
        sim.vanish()
        await asyncio.sleep(0.05)
        with pytest.raises(DeviceUnreachable):
            await d1.read_all()
        await asyncio.sleep(0.2)
        with pytest.raises(DeviceUnreachable, match="does not exist"):  # the worker reports why it cannot open
            await eventually_async(lambda: _raising(d2), timeout=2.0)
        assert line.stats()["state"] == "reopening"
        sim.restore()
        await eventually_async(lambda: reads_ok(d1, d2), timeout=3.0)
        st = line.stats()
        assert st["state"] == "open" and st["port_failures"] >= 2 and line.counters["worker_deaths"] == 0
        assert st["slaves"]["1"]["consecutive_failures"] == 0  # the slaves were not blamed for the port
        await line.close()
        assert_clean_wire(sim)


async def _raising(dev):
    """Read until the failure names its cause (the first attempts may still meet the dying worker)."""
    try:
        await dev.read_all()
    except DeviceUnreachable as exc:
        if "does not exist" in str(exc):
            raise
    return None


async def test_a_killed_worker_is_restarted_at_once_counted_and_logged_once(tmp_path, caplog):
    with rtu_line(tmp_path, units=(1, 2), settings=E9600) as sim:
        line = worker_line(sim.path, timeout=0.2, backoff_initial=5.0)  # a port backoff would take 5 s
        d1, d2 = devices_on(line, (1, 2))
        await d1.read_all()
        first = line._port.proc
        caplog.set_level(logging.INFO, logger="canopy.modbus.rtu")
        task = asyncio.create_task(d2.read_all())  # on the wire when the worker dies
        await asyncio.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        with pytest.raises(DeviceUnreachable, match="worker died"):
            await task
        t0 = time.monotonic()
        values = await eventually_async(lambda: reads_ok(d1, d2), timeout=2.0)
        assert time.monotonic() - t0 < 1.0, "the worker was not restarted at once"
        assert {p.name: v for p, v in values[1]} == sim.expected(2)
        assert line.counters["worker_deaths"] == 1 and line.counters["worker_starts"] == 2
        assert line._port.proc.pid != first.pid
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "worker died" in warnings[0].getMessage()
        assert any("recovered" in r.getMessage() for r in caplog.records)
        await line.close()
        assert_clean_wire(sim)


async def test_close_fails_queued_requests_and_stops_the_worker(tmp_path):
    with rtu_line(tmp_path, units=range(1, 6), settings=E9600) as sim:
        line = worker_line(sim.path, timeout=0.3)
        devs = devices_on(line, range(1, 6))
        await devs[0].read_all()
        proc = line._port.proc
        tasks = [asyncio.create_task(d.read_all()) for d in devs]
        await asyncio.sleep(0.005)
        await line.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], list)  # on the wire: completed
        assert all(isinstance(r, DeviceUnreachable) for r in results[2:])  # queued: failed
        assert proc.poll() is not None
        assert_clean_wire(sim)


def test_process_is_a_typed_option_of_the_line():
    from pydantic import ValidationError

    from gateway.poll.buses.modbus_rtu import ModbusRtuConfig

    base = {"id": "field-485", "type": "modbus_rtu", "port": "/dev/ttyUSB0", "devices": []}
    assert ModbusRtuConfig.model_validate(base).process is True  # the default: the timing kept on a busy gateway
    assert ModbusRtuConfig.model_validate({**base, "process": False}).process is False
    with pytest.raises(ValidationError, match="process"):
        ModbusRtuConfig.model_validate({**base, "process": "sometimes"})


def test_the_worker_holds_about_20_ms_of_requests_so_a_stalled_loop_does_not_idle_the_line():
    from drivers.modbus.rtu_process import pipeline_depth

    depth = {b: pipeline_depth(SerialSettings(b, 8, "E", 1)) for b in (1200, 9600, 19200, 38400, 57600, 115200)}
    # a command waits behind these only: two at slow bauds, more where a request takes ~4 ms
    assert depth == {1200: 2, 9600: 2, 19200: 2, 38400: 3, 57600: 4, 115200: 5}


def _slice_ns(pid: int) -> int | None:
    for row in open(f"/proc/{pid}/sched"):
        if row.startswith("se.slice"):
            return int(row.split(":")[1])
    return None


async def test_the_worker_asks_the_kernel_for_a_short_slice_not_real_time(tmp_path):
    """Linux >= 6.12 (EEVDF): a 0.1 ms slice lets the woken worker preempt a busy gateway on its core."""
    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    with rtu_line(tmp_path, units=(1,), settings=E38400) as sim:
        line = worker_line(sim.path, E38400, timeout=0.3)
        await devices_on(line, (1,))[0].read_all()
        pid = line._port.proc.pid
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER  # the unit forbids real-time scheduling
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0)  # the gateway's nice
        if release >= (6, 12):
            assert _slice_ns(pid) == 100_000
        else:  # older kernels keep their default slice; the worker runs all the same
            assert _slice_ns(pid) != 100_000 or _slice_ns(pid) is None
        await line.close()


async def test_closing_a_line_whose_worker_is_stuck_never_blocks_the_loop_and_kills_it(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        line = worker_line(sim.path, timeout=0.3)
        await devices_on(line, (1,))[0].read_all()
        proc = line._port.proc
        os.kill(proc.pid, signal.SIGSTOP)  # it cannot see its socket close
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        await line.close()  # waits the grace (0.5 s), then kills it: all on the loop's time
        t.cancel()
        assert proc.poll() == -signal.SIGKILL, "the stuck worker outlived its line"
        assert ticks >= 10, f"the loop was blocked while the worker stopped ({ticks} ticks in the grace)"


def _exited(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has exited (its new parent may reap it later)


async def test_a_gateway_killed_outright_leaves_no_worker_holding_the_port(tmp_path):
    """kill -9 of the gateway: its worker sees its socket close and exits, so the restarted gateway
    gets the port (opened exclusively) instead of "in use"."""
    import subprocess
    import sys

    from tests.drivers.serial_line.ptys import ROOT

    script = (
        "import asyncio, sys\n"
        "from drivers.modbus.rtu import ModbusRtuLine\n"
        "from drivers.serial_line.settings import SerialSettings\n"
        "from tests.drivers.modbus.test_rtu_line import devices_on\n"
        "async def main():\n"
        "    line = ModbusRtuLine(sys.argv[1], SerialSettings(9600, 8, 'E', 1), process=True, timeout=0.3)\n"
        "    dev = devices_on(line, (1,))[0]\n"
        "    await dev.read_all()\n"
        "    print(line._port.proc.pid, flush=True)\n"
        "    while True:\n"
        "        await dev.read_all()\n"
        "asyncio.run(main())\n")
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        gateway = subprocess.Popen([sys.executable, "-c", script, sim.path], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            worker = int(gateway.stdout.readline())
            gateway.kill()
            gateway.wait()
            deadline = time.monotonic() + 3.0
            while not _exited(worker) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert _exited(worker), "the worker outlived its gateway and keeps the port"
        finally:
            gateway.kill()
            gateway.wait()
        line = worker_line(sim.path, timeout=0.3)
        assert {p.name: v for p, v in await devices_on(line, (1,))[0].read_all()} == sim.expected(1)
        await line.close()
