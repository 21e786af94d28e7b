"""`canopy scan` / `canopy probe` over Modbus TCP, against a simulated TCP-to-RS-485 gateway.

The gateway (a small asyncio server in a thread) answers like the real ones
do: units on its line answer, an absent unit gets exception 0x0B (0x0A for
one, as some gateways say for an unknown route), and a few units it simply
never answers.  All three must read as "absent"; an "illegal data address"
answer is a device that is there.
"""

from __future__ import annotations

import asyncio
import struct
import threading

import orjson
import pytest

from drivers.modbus.installer import UsageError
from drivers.modbus.tcp_scan import TcpAddress, parse_address, scan_tcp
from gateway.cli.main import main
from tests.support import free_port

PRESENT = {1: [0x1234, 0x5678, 0, 0], 5: [7, 8, 9, 10]}
ILLEGAL_ADDRESS = {7}  # there, but holding 0 is not mapped: exception 2
PATH_UNAVAILABLE = {2}  # exception 0x0A
SILENT = set(range(9, 21))  # the gateway swallows these requests (12 in a row)


class FakeRs485Gateway:
    """A Modbus TCP server standing for a TCP-to-RS-485 gateway; unknown units answer 0x0B."""

    def __init__(self, absent_delay: float = 0.0) -> None:
        self.port = free_port()
        self.absent_delay = absent_delay  # the gateway's own serial timeout before it answers 0x0B
        self.registers = {u: list(r) for u, r in PRESENT.items()}
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "FakeRs485Gateway":
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self._ready.set()
        await self._stop.wait()
        server.close()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                self.requests += 1
                answer = self._answer(unit, pdu)
                if answer is not None and answer[1:] == b"\x0b" and self.absent_delay:
                    await asyncio.sleep(self.absent_delay)
                if answer is not None:
                    writer.write(struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, unit: int, pdu: bytes) -> bytes | None:
        function = pdu[0]
        if unit in SILENT:
            return None
        if unit in PATH_UNAVAILABLE:
            return bytes([function | 0x80, 0x0A])
        if unit in ILLEGAL_ADDRESS:
            return bytes([function | 0x80, 0x02])
        if unit not in self.registers:
            return bytes([function | 0x80, 0x0B])
        regs = self.registers[unit]
        if function in (3, 4):
            address, count = struct.unpack(">HH", pdu[1:5])
            if address + count > len(regs):
                return bytes([function | 0x80, 0x02])
            return bytes([function, 2 * count]) + b"".join(struct.pack(">H", r) for r in regs[address:address + count])
        if function == 6:
            address, value = struct.unpack(">HH", pdu[1:5])
            regs[address] = value
            return pdu[:5]
        if function == 16:
            address, count = struct.unpack(">HH", pdu[1:5])
            regs[address:address + count] = struct.unpack(f">{count}H", pdu[6:6 + 2 * count])
            return pdu[:5]
        return bytes([function | 0x80, 0x01])


@pytest.fixture
def rs485_gateway():
    with FakeRs485Gateway() as gw:
        yield gw


def test_parse_address_tells_tcp_from_serial():
    assert parse_address("/dev/ttyUSB0") is None and parse_address("COM3") is None
    assert parse_address("/dev/serial/by-id/usb-FTDI_FT232R-if00-port0") is None
    assert parse_address("127.0.0.1:15502") == TcpAddress("127.0.0.1", 15502)
    assert parse_address("gw-shed.local:502") == TcpAddress("gw-shed.local", 502)
    assert parse_address("[::1]:502") == TcpAddress("::1", 502) and str(TcpAddress("::1", 502)) == "[::1]:502"
    assert parse_address("tcp://10.0.0.5:502") == TcpAddress("10.0.0.5", 502)
    with pytest.raises(UsageError, match="tcp://"):
        parse_address("tcp://nowhere")
    with pytest.raises(UsageError, match="outside"):
        parse_address("127.0.0.1:70000")


async def test_scan_behind_a_gateway_counts_0x0A_0x0B_and_silence_as_absent(rs485_gateway):
    result = await scan_tcp(TcpAddress("127.0.0.1", rs485_gateway.port), list(range(1, 26)), timeout=0.1)
    assert [f.unit for f in result.found] == [1, 5, 7]
    assert result.found[0].answer == "holding 0 = 0x1234 (4660)"
    assert "illegal data address" in result.found[2].answer  # an exception that is not 0x0A/0x0B: a device
    assert result.absent == {"0x0A": 1, "0x0B": 25 - 3 - 1 - len(SILENT), "silent": len(SILENT)}
    assert result.tried == 25 and result.noise == 0


async def test_a_late_0x0B_is_not_taken_for_the_next_units_answer():
    """A gateway that waits longer than the scan before answering 0x0B: the units after an absent one are still found."""
    with FakeRs485Gateway(absent_delay=0.25) as slow:
        slow.registers[4] = [44]  # right after absent unit 3
        slow.registers[6] = [66]  # right after absent... unit 5 is present, 6 follows it
        result = await scan_tcp(TcpAddress("127.0.0.1", slow.port), [3, 4, 6, 8], timeout=0.1)
    assert [(f.unit, f.answer) for f in result.found] == [(4, "holding 0 = 0x002C (44)"), (6, "holding 0 = 0x0042 (66)")]
    assert result.absent == {"silent": 2}  # 3 and 8: their 0x0B came after the scan had moved on


def test_canopy_scan_over_tcp_prints_the_units_and_a_modbus_tcp_snippet(rs485_gateway, capsys):
    port = f"127.0.0.1:{rs485_gateway.port}"
    assert main(["scan", "--port", port, "--units", "1-8", "--timeout", "0.1", "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert [f["unit"] for f in out["found"]] == [1, 5, 7]
    assert out["absent"] == {"0x0A": 1, "0x0B": 4}
    assert "type: modbus_tcp" in out["snippet"] and f"port: {rs485_gateway.port}" in out["snippet"]
    assert main(["scan", "--port", port, "--units", "1-3", "--timeout", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "units behind" in text and "absent: 1 0x0A, 1 0x0B" in text
    assert main(["scan", "--port", port, "--units", "30-32", "--timeout", "0.1"]) == 1
    assert "no unit answered" in capsys.readouterr().out


def test_canopy_probe_reads_and_writes_over_tcp(rs485_gateway, capsys):
    port = f"127.0.0.1:{rs485_gateway.port}"
    assert main(["probe", "--port", port, "--unit", "1", "--read", "holding:0:2", "--as", "u32", "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["registers"] == [0x1234, 0x5678] and out["values"] == [0x12345678] and out["settings"] == "Modbus TCP"
    assert main(["probe", "--port", port, "--unit", "5", "--write", "holding:2:0x00FF", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["registers"] == [0x00FF]
    assert rs485_gateway.registers[5][2] == 0x00FF
    assert main(["probe", "--port", port, "--unit", "1", "--read", "holding:0:1"]) == 0
    assert f"on {port} at Modbus TCP" in capsys.readouterr().out


def test_canopy_probe_over_tcp_fails_in_one_line(rs485_gateway, capsys):
    port = f"127.0.0.1:{rs485_gateway.port}"
    assert main(["probe", "--port", port, "--unit", "3", "--read", "holding:0:1"]) == 1
    err = capsys.readouterr().err
    assert "exception 11 (gateway target failed to respond)" in err and err.count("\n") == 1
    assert main(["probe", "--port", port, "--unit", "300", "--read", "holding:0:1"]) == 2
    assert "0..255" in capsys.readouterr().err
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    for argv in (["probe", "--port", dead, "--unit", "1", "--read", "holding:0:1"], ["scan", "--port", dead, "--units", "1-3"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: cannot connect to") and "Traceback" not in err, err
