"""`canopy scan` and `canopy probe` over Modbus TCP: the units behind a TCP-to-RS-485 gateway, or a TCP device.

A TCP-to-RS-485 gateway accepts every unit id, so "who is there" reads
differently from a serial line: for a unit that is not on its line it answers
exception 0x0A (gateway path unavailable) or 0x0B (gateway target failed to
respond), or it stays silent.  All three mean *absent*; any other reply, an
exception such as "illegal data address" included, is a device.  Requests go
through ``ModbusTcpEndpoint``: one connection and the daemon's own error mapping.
A gateway whose own serial timeout is longer than ours answers 0x0B after we
gave up; the scan then reconnects, so that late answer cannot be taken for the
next unit's.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from drivers.errors import BadReply, DeviceException, DeviceTimeout, DeviceUnreachable
from drivers.modbus import codec
from drivers.modbus.installer import TYPES, Target, UsageError, decode_registers, encode_value, parse_bool, parse_target
from drivers.modbus.tcp import ModbusTcpEndpoint

ABSENT_EXCEPTIONS = {0x0A: "gateway path unavailable", 0x0B: "gateway target failed to respond"}
_ADDRESS = re.compile(r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p6>\d+)|(?P<host>[A-Za-z0-9_.-]+):(?P<port>\d+)")


@dataclass(frozen=True)
class TcpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> TcpAddress | None:
    """``host:port``, ``[::1]:502`` or ``tcp://host:port``; None for a serial device (``/dev/ttyUSB0``, ``COM3``)."""
    value = str(text).strip()
    explicit = value.startswith("tcp://")
    if explicit:
        value = value[len("tcp://"):]
    elif value.startswith("/"):
        return None
    m = _ADDRESS.fullmatch(value)
    if m is None:
        if explicit:
            raise UsageError(f"a Modbus TCP address looks like tcp://192.168.1.50:502 (got {text!r})")
        return None
    host, port = (m["v6"], int(m["p6"])) if m["v6"] else (m["host"], int(m["port"]))
    if not 1 <= port <= 65535:
        raise UsageError(f"TCP port {port} is outside 1..65535")
    return TcpAddress(host, port)


def endpoint(address: TcpAddress, timeout: float) -> ModbusTcpEndpoint:
    """A short-lived endpoint for an installer tool: quick retries, no long backoff."""
    return ModbusTcpEndpoint(address.host, address.port, timeout=timeout, backoff_initial=0.05, backoff_max=0.05)


async def _execute(ep: ModbusTcpEndpoint, request, timeout: float):
    """One request; a connection the gateway dropped (some do after silent units) is reopened once."""
    try:
        return await ep.execute(request, timeout)
    except DeviceUnreachable:
        if ep.requests == 0:  # never connected: the address is wrong or nothing listens
            raise
    await asyncio.sleep(0.06)  # past the endpoint's retry delay
    return await ep.execute(request, timeout)


# -- scan ---------------------------------------------------------------------------------------
@dataclass
class TcpFound:
    unit: int
    answer: str
    latency_ms: float


@dataclass
class TcpScanResult:
    address: str
    found: list[TcpFound] = field(default_factory=list)
    tried: int = 0
    absent: dict[str, int] = field(default_factory=dict)  # why each absent unit was absent: 0x0A, 0x0B, silent
    noise: int = 0  # replies that cannot be right (lengths, framing)

    def as_dict(self) -> dict:
        return {"address": self.address, "tried": self.tried, "absent": dict(self.absent), "noise": self.noise,
                "found": [asdict(f) for f in self.found]}

    def _absent(self, why: str) -> None:
        self.absent[why] = self.absent.get(why, 0) + 1


async def scan_tcp(address: TcpAddress, units: list[int], *, timeout: float = 0.3,
                   on_step: Callable[[int, int], None] | None = None) -> TcpScanResult:
    """Ask every unit for holding register 0; an answer that is not 0x0A/0x0B is a device."""
    result = TcpScanResult(str(address))
    ep = endpoint(address, timeout)
    try:
        for unit in units:
            result.tried += 1
            t0 = time.monotonic()
            try:
                reply = await _execute(ep, lambda c, u=unit: c.read_holding_registers(0, count=1, device_id=u), timeout)
            except DeviceTimeout:
                result._absent("silent")
                await ep.close()  # a late answer (a gateway's own timeout is often longer) must not pass for the next unit's
            except BadReply:
                result.noise += 1
            except DeviceUnreachable as exc:
                raise UsageError(str(exc)) from None
            else:
                code = reply.exception_code if reply.isError() else None
                if code in ABSENT_EXCEPTIONS:
                    result._absent(f"0x{code:02X}")
                else:
                    answer = (f"exception {code} ({DeviceException.NAMES.get(code, 'unknown')}) to holding 0" if code is not None
                              else f"holding 0 = 0x{reply.registers[0]:04X} ({reply.registers[0]})")
                    result.found.append(TcpFound(unit, answer, round((time.monotonic() - t0) * 1000, 1)))
            if on_step:
                on_step(unit, len(result.found))
    finally:
        await ep.close()
    return result


def tcp_snippet(result: TcpScanResult, address: TcpAddress, bus_id: str = "tcp-1") -> str:
    """A ready-to-paste ``buses:`` entry for the units found."""
    if not result.found:
        return ""
    lines = ["buses:", f"  - id: {bus_id}", "    type: modbus_tcp", f"    host: {address.host}", f"    port: {address.port}",
             "    devices:"]
    lines += [f"      - {{id: unit-{f.unit}, unit: {f.unit}, profile: CHANGE_ME, poll_interval: 5}}" for f in result.found]
    return "\n".join(lines) + "\n"


# -- probe --------------------------------------------------------------------------------------
_READS = {"holding": "read_holding_registers", "input": "read_input_registers", "coil": "read_coils",
          "discrete": "read_discrete_inputs"}


async def _read(ep: ModbusTcpEndpoint, unit: int, target: Target, count: int, timeout: float) -> list:
    method = _READS[target.table]
    reply = await _execute(ep, lambda c: getattr(c, method)(target.address, count=count, device_id=unit), timeout)
    if reply.isError():
        raise DeviceException(reply.exception_code, f"read {target.table} {target.address}+{count}")
    if target.table in ("coil", "discrete"):
        return [bool(b) for b in reply.bits[:count]]
    return list(reply.registers[:count])


async def _write(ep: ModbusTcpEndpoint, unit: int, target: Target, dtype: str, word_order: str, byte_order: str,
                 timeout: float, out: dict) -> int:
    """Write one coil or register value (encoded as ``dtype``); returns how many items to read back."""
    if target.table in ("input", "discrete"):
        raise UsageError(f"{target.table} is read-only; write coil or holding")
    if target.table == "coil":
        value = parse_bool(target.count_or_value)
        request, count = (lambda c: c.write_coil(target.address, value, device_id=unit)), 1
    else:
        regs = encode_value(target.count_or_value, dtype, word_order, byte_order)
        count = len(regs)
        out["written"] = [f"0x{r:04X}" for r in regs]
        request = ((lambda c: c.write_register(target.address, regs[0], device_id=unit)) if count == 1
                   else (lambda c: c.write_registers(target.address, regs, device_id=unit)))
    reply = await _execute(ep, request, timeout)
    if reply.isError():
        raise DeviceException(reply.exception_code, f"write {target.table} {target.address}")
    return count


def _read_count(target: Target) -> int:
    try:
        count = int(target.count_or_value, 0)
    except ValueError:
        raise UsageError(f"count {target.count_or_value!r} is not a number") from None
    limit = 2000 if target.table in ("coil", "discrete") else 125
    if not 1 <= count <= limit:
        raise UsageError(f"count must be 1..{limit} for {target.table}")
    return count


async def probe_tcp(address: TcpAddress, unit: int, *, read: str | None = None, write: str | None = None,
                    dtype: str = "u16", word_order: str = "big", byte_order: str = "big", timeout: float = 0.5) -> dict:
    """Read (or write, then read back) one thing on one unit; the same answer shape as the serial ``probe``."""
    if (read is None) == (write is None):
        raise UsageError("give exactly one of --read or --write")
    if dtype not in TYPES:
        raise UsageError(f"--as must be one of {', '.join(TYPES)}")
    if not 0 <= unit <= 255:
        raise UsageError("a Modbus TCP unit id is 0..255")
    target = parse_target(read if read is not None else write, "read" if read is not None else "write")
    out: dict = {"port": str(address), "settings": "Modbus TCP", "unit": unit, "as": dtype, "word_order": word_order,
                 "byte_order": byte_order}
    ep = endpoint(address, timeout)
    try:
        if read is not None:
            count = _read_count(target)
            out.update(op="read", table=target.table, address=target.address, count=count)
        else:
            count = await _write(ep, unit, target, dtype, word_order, byte_order, timeout, out)
            out.update(op="write", table=target.table, address=target.address, count=count, value=target.count_or_value)
        raw = await _read(ep, unit, target, count, timeout)
    finally:
        await ep.close()
    if target.table in ("coil", "discrete"):
        out["bits"] = out["values"] = raw
    else:
        out["registers"] = raw
        out["hex"] = [f"0x{r:04X}" for r in raw]
        try:
            out["values"] = decode_registers(raw, dtype, word_order, byte_order)
        except codec.DecodeError as exc:
            raise UsageError(str(exc)) from None
    return out
