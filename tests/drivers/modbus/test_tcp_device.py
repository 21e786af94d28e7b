"""ModbusDevice over a real TCP connection: good replies, exceptions, silence, garbage."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from drivers.errors import BadReply, DeviceError, DeviceException, DeviceTimeout, DeviceUnreachable
from drivers.modbus.device import ModbusDevice
from drivers.modbus.tcp import ModbusTcpEndpoint, reply_problem
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


# -- replies whose lengths do not add up ---------------------------------------------------------


class LyingSlave:
    """A Modbus TCP slave answering reads with the frames ``reply(tid, unit, fc, count)`` makes.

    Counts connections, so a test can tell that a bad reply did not cost the shared connection.
    """

    def __init__(self, reply):
        self.reply = reply
        self.connections = 0
        self.server = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                fc, _, count = struct.unpack(">BHH", (await reader.readexactly(length - 1))[:5])
                writer.write(self.reply(tid, unit, fc, count))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()


def mbap(tid: int, unit: int, pdu: bytes, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1 if length is None else length, unit) + pdu


def good(tid, unit, fc, count):
    return mbap(tid, unit, bytes([fc, 2 * count]) + b"\x01\x00" * count)


def byte_count_too_big(tid, unit, fc, count):  # says 2 bytes more than it carries
    return mbap(tid, unit, bytes([fc, 2 * count + 2]) + b"\x01\x00" * count)


def cut_short(tid, unit, fc, count):  # the header announces the whole frame, half of it comes
    frame = good(tid, unit, fc, count)
    return frame[: len(frame) // 2]


async def test_wrong_byte_count_is_bad_reply_in_one_line_and_keeps_the_connection(caplog):
    """pymodbus raised inside data_received: asyncio logged a ~1 KB traceback at ERROR each poll and the
    device looked unreachable.  Now: bad_reply, one warning line for the episode, the connection kept."""
    from gateway.poll.health import Health
    from gateway.poll.poller import DevicePoller

    answers = [byte_count_too_big]
    slave = LyingSlave(lambda *a: answers[0](*a))
    port = await slave.start()
    ep = ModbusTcpEndpoint("127.0.0.1", port, timeout=0.3, backoff_initial=0.05, backoff_max=0.05)
    dev = device(ep, "soil-9", 1, "soil_probe")
    with pytest.raises(BadReply, match="byte count 14 but 12 data bytes follow"):
        await dev.read_all()

    health = Health()
    health.register("soil-9", "field")

    async def sink(readings):
        pass

    poller = DevicePoller(dev, 0.05, sink, health)
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    for _ in range(10):
        await poller.poll_once()
    assert health.devices["soil-9"].status == "bad_reply"
    assert health.devices["soil-9"].errors_by_status == {"bad_reply": 10}
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "bad_reply: byte count 14" in loud[0].getMessage(), [r.getMessage() for r in loud]
    assert len(loud[0].getMessage()) < 300 and not loud[0].exc_info
    answers[0] = good
    assert len(await dev.read_all()) == 4
    assert slave.connections == 1, "a bad reply must not drop the connection the unit's neighbours share"
    await ep.close()
    await slave.stop()


async def test_truncated_reply_is_bad_reply_not_a_timeout(caplog):
    slave = LyingSlave(cut_short)
    port = await slave.start()
    ep = ModbusTcpEndpoint("127.0.0.1", port, timeout=0.3)
    dev = device(ep, "soil-9", 1, "soil_probe")
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        with pytest.raises(BadReply, match=r"truncated reply: 10 of 21 bytes arrived within 0.30s"):
            await dev.read_all()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await ep.close()
    await slave.stop()


@pytest.mark.parametrize("frame,problem", [
    (mbap(1, 1, bytes([3, 14]) + bytes(12)), "byte count 14 but 12 data bytes follow"),
    (mbap(1, 1, bytes([3, 10]) + bytes(12)), "byte count 10 but 12 data bytes follow"),
    (mbap(1, 1, bytes([1, 2]) + bytes(1)), "byte count 2 but 1 data bytes follow"),
    (mbap(1, 1, bytes([3])), "function 3 reply without a byte count"),
    (b"\x00\x01\x00\x07" + bytes(9), "not a Modbus TCP reply (protocol id 0x0007)"),
    (mbap(1, 1, b"", length=300), "frame length 300 is outside Modbus's 2..254"),
    (mbap(1, 1, bytes([3, 12]) + bytes(12)), None),
    (mbap(1, 1, bytes([0x83, 2])), None),  # an exception reply
    (mbap(1, 1, bytes([6, 0, 1, 0, 5])), None),  # a write echo: no byte count
    (mbap(1, 1, bytes([3, 12]) + bytes(12))[:10], None),  # still arriving
])
def test_reply_problem_names_what_does_not_add_up(frame, problem):
    assert reply_problem(frame) == problem


async def test_extra_bits_or_registers_are_bad_reply():
    class Reply:
        def __init__(self, registers=(), bits=()):
            self.registers, self.bits = list(registers), list(bits)

        def isError(self):
            return False

    class Transport:
        reply = None

        async def execute(self, request, timeout=None):
            return self.reply

    t = Transport()
    soil = ModbusDevice("s", 1, load_profile(PROFILES / "soil_probe.yaml"), t)
    t.reply = Reply(registers=range(8))
    with pytest.raises(BadReply, match="reply carried 8 values, expected 6 values"):
        await soil.read_all()
    weather = ModbusDevice("w", 10, load_profile(PROFILES / "weather_station.yaml"), t)
    t.reply = Reply(bits=[True] * 16)  # one bit asked: one byte expected, two came
    with pytest.raises(BadReply, match=r"reply carried 2 byte\(s\) of bits, expected 1 bits"):
        await weather.read_all()
