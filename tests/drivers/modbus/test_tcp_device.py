"""ModbusDevice over a real TCP connection: good replies, exceptions, silence, garbage."""

from __future__ import annotations

import asyncio

import pytest

from drivers.errors import BadReply, DeviceError, DeviceException, DeviceTimeout, DeviceUnreachable
from drivers.modbus.device import ModbusDevice
from drivers.modbus.tcp import ModbusTcpEndpoint
from gateway.config.load import load_profile
from simulator.sites import start_site
from tests.support import PROFILES, free_port


@pytest.fixture
async def farm():
    sim, clock = await start_site("farm", port=0, speed=0)
    yield sim, clock
    await sim.stop()


def device(endpoint, dev_id, unit, profile):
    return ModbusDevice(dev_id, unit, load_profile(PROFILES / f"{profile}.yaml"), endpoint)


async def test_reads_every_point_in_merged_requests(farm):
    sim, clock = farm
    ep = ModbusTcpEndpoint("127.0.0.1", sim.port, timeout=0.5)
    weather = device(ep, "weather", 10, "weather_station")
    # input regs 0..7 in one request, the discrete bit, the model string far away at 100
    assert [(r.table, r.address, r.count) for r in weather.requests] == [("discrete", 0, 1), ("holding", 100, 4), ("input", 0, 8)]
    values = {p.name: v for p, v in await weather.read_all()}
    assert values == sim.device("weather").expected(clock.now())
    assert ep.requests == 3
    await ep.close()


async def test_exception_timeout_and_recovery(farm):
    sim, clock = farm
    ep = ModbusTcpEndpoint("127.0.0.1", sim.port, timeout=0.3)
    soil1, soil2 = device(ep, "soil-1", 1, "soil_probe"), device(ep, "soil-2", 2, "soil_probe")
    sim.device("soil-1").fault = "exception"
    with pytest.raises(DeviceException) as exc:
        await soil1.read_all()
    assert exc.value.code == 4 and "device failure" in str(exc.value)
    sim.device("soil-1").fault = "silent"
    with pytest.raises(DeviceTimeout):
        await soil1.read_all()
    # the neighbour on the same connection still answers right after
    assert {p.name for p, _ in await soil2.read_all()} == {"moisture", "temperature", "ec", "water_potential"}
    sim.device("soil-1").fault = None
    assert len(await soil1.read_all()) == 4
    await ep.close()


async def test_unreachable_endpoint_fails_fast_while_backing_off():
    port = free_port()
    ep = ModbusTcpEndpoint("127.0.0.1", port, timeout=0.3, backoff_initial=5, backoff_max=5)
    dev = device(ep, "x", 1, "soil_probe")
    with pytest.raises(DeviceUnreachable, match="cannot connect"):
        await dev.read_all()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(DeviceUnreachable, match="next attempt"):
        await dev.read_all()
    assert loop.time() - t0 < 0.1, "while backing off, a poll must not wait for another connect"


async def test_garbage_reply_is_a_device_error_not_a_crash():
    async def garbage(reader, writer):
        try:
            while True:
                data = await reader.read(256)
                if not data:
                    break
                writer.write(b"\x00\x01garbage that is not modbus\xff\xfe")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ep = ModbusTcpEndpoint("127.0.0.1", port, timeout=0.3, backoff_initial=0.05, backoff_max=0.05)
    dev = device(ep, "junk", 1, "soil_probe")
    for _ in range(3):
        with pytest.raises(DeviceError) as exc:
            await dev.read_all()
        assert exc.value.status in ("timeout", "bad_reply", "unreachable")
        await asyncio.sleep(0.06)
    server.close()
    await ep.close()


async def test_short_reply_is_bad_reply():
    class Short:
        def isError(self):
            return False

        registers = [1, 2]

    class Transport:
        async def execute(self, request, timeout=None):
            return Short()

    dev = ModbusDevice("s", 1, load_profile(PROFILES / "soil_probe.yaml"), Transport())
    with pytest.raises(BadReply, match="expected 6"):
        await dev.read_all()
