"""What `canopy scan` and `canopy probe` do, without the terminal: find slaves, read or write one thing.

Both run on a ``ModbusRtuLine`` (same timing, gap and framing as the daemon),
one setting at a time; the CLI adds progress bars and tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from drivers.errors import BadReply, DeviceException, DeviceTimeout, DeviceUnreachable
from drivers.modbus import codec
from drivers.modbus.rtu import COMMAND, SCAN, ModbusRtuLine
from drivers.serial_line.settings import STANDARD_BAUDS, SerialSettings

TABLES = ("holding", "input", "coil", "discrete")
TYPES = ("u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64", "string", "hex")


class UsageError(ValueError):
    """A command-line value that makes no sense (shown to the installer, exit code 2)."""


def parse_units(text: str) -> list[int]:
    """'1-247' / '3,7,12' / '1-3,9' -> sorted unit ids (1..247)."""
    units: set[int] = set()
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise UsageError(f"unit range {part} runs backwards")
                units.update(range(lo, hi + 1))
            else:
                units.add(int(part))
    except ValueError as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"units must look like 1-247 or 3,7,12 (got {text!r})") from None
    bad = [u for u in units if not 1 <= u <= 247]
    if bad:
        raise UsageError(f"RTU unit ids are 1..247 (got {bad[:5]})")
    if not units:
        raise UsageError("no unit ids given")
    return sorted(units)


def parse_bauds(text: str) -> list[int]:
    try:
        bauds = [int(b) for b in str(text).split(",") if b.strip()]
    except ValueError:
        raise UsageError(f"baud rates must be numbers like 9600,19200 (got {text!r})") from None
    bad = [b for b in bauds if b not in STANDARD_BAUDS]
    if bad or not bauds:
        raise UsageError(f"baud rate(s) {bad or text} not standard; use {', '.join(map(str, STANDARD_BAUDS))}")
    return bauds


def parse_parities(text: str) -> list[str]:
    out = []
    for p in str(text).split(","):
        p = p.strip().upper()[:1]
        if p not in ("N", "E", "O"):
            raise UsageError(f"parity must be N, E or O (got {text!r})")
        out.append(p)
    return out


def stable_name(port: str) -> str:
    """The /dev/serial/by-id/ link that points at ``port``, if there is one."""
    real = os.path.realpath(port)
    by_id = Path("/dev/serial/by-id")
    if by_id.is_dir():
        for link in sorted(by_id.iterdir()):
            if os.path.realpath(link) == real:
                return str(link)
    return port


# -- scan ---------------------------------------------------------------------------------------
@dataclass
class Found:
    baudrate: int
    parity: str
    stopbits: int
    unit: int
    answer: str
    latency_ms: float

    @property
    def settings(self) -> str:
        return f"{self.baudrate} 8{self.parity}{self.stopbits}"


@dataclass
class ScanResult:
    port: str
    found: list[Found] = field(default_factory=list)
    tried: int = 0
    noise: int = 0  # garbled or CRC-failed replies (another setting is probably right)

    def as_dict(self) -> dict:
        return {"port": self.port, "tried": self.tried, "noise": self.noise, "found": [asdict(f) for f in self.found]}


async def scan(port: str, bauds: list[int], parities: list[str], units: list[int], *, stopbits: int = 1,
               timeout: float = 0.15, framer: str = "rtu", on_step: Callable[[int, int, str, int], None] | None = None
               ) -> ScanResult:
    """Ask every unit at every setting for holding register 0; any valid reply (even an exception) is a slave."""
    import time

    result = ScanResult(port)
    for baud in bauds:
        for parity in parities:
            settings = SerialSettings(baud, 8 if framer == "rtu" else 7, parity, stopbits)
            line = ModbusRtuLine(port, settings, framer=framer, timeout=timeout, backoff_initial=0.05, backoff_max=0.05)
            try:
                for unit in units:
                    result.tried += 1
                    t0 = time.monotonic()
                    try:
                        reply = await line.execute(
                            lambda c, u=unit: c.read_holding_registers(0, count=1, device_id=u), timeout, SCAN)
                    except DeviceTimeout:
                        pass
                    except BadReply:
                        result.noise += 1
                    except DeviceUnreachable as exc:
                        raise UsageError(str(exc)) from None
                    else:
                        if reply.isError():
                            code = reply.exception_code
                            answer = f"exception {code} ({DeviceException.NAMES.get(code, 'unknown')}) to holding 0"
                        else:
                            answer = f"holding 0 = 0x{reply.registers[0]:04X} ({reply.registers[0]})"
                        result.found.append(Found(baud, parity, stopbits, unit, answer,
                                                  round((time.monotonic() - t0) * 1000, 1)))
                    if on_step:
                        on_step(baud, unit, parity, len(result.found))
            finally:
                await line.close()
    return result


def snippet(result: ScanResult, bus_id: str = "rs485-1") -> str:
    """A ready-to-paste ``buses:`` entry for the most common setting found."""
    if not result.found:
        return ""
    groups: dict[tuple, list[Found]] = {}
    for f in result.found:
        groups.setdefault((f.baudrate, f.parity, f.stopbits), []).append(f)
    (baud, parity, stopbits), found = max(groups.items(), key=lambda kv: len(kv[1]))
    port = stable_name(result.port)
    lines = [
        "buses:",
        f"  - id: {bus_id}",
        "    type: modbus_rtu",
        f"    port: {port}" + ("" if port != result.port or not result.port.startswith("/dev/tty") else
                               "   # prefer /dev/serial/by-id/... (stable across reboots)"),
        f"    baudrate: {baud}",
        f"    parity: {parity}",
        f"    stopbits: {stopbits}",
        "    devices:",
    ]
    for f in found:
        lines.append(f"      - {{id: unit-{f.unit}, unit: {f.unit}, profile: CHANGE_ME, poll_interval: 5}}")
    return "\n".join(lines) + "\n"


# -- probe --------------------------------------------------------------------------------------
@dataclass
class Target:
    table: str
    address: int
    count_or_value: str


def parse_target(text: str, what: str) -> Target:
    parts = str(text).split(":")
    if len(parts) != 3 or parts[0] not in TABLES:
        raise UsageError(f"--{what} wants TABLE:ADDRESS:{'COUNT' if what == 'read' else 'VALUE'} with TABLE one of "
                         f"{', '.join(TABLES)} (got {text!r})")
    try:
        address = int(parts[1], 0)
    except ValueError:
        raise UsageError(f"address {parts[1]!r} is not a number") from None
    if not 0 <= address <= 65535:
        raise UsageError(f"address {address} is outside 0..65535")
    return Target(parts[0], address, parts[2])


def decode_registers(registers: list[int], dtype: str, word_order: str, byte_order: str) -> list:
    """Registers -> values of ``dtype`` (consecutive, e.g. 4 registers as f32 -> 2 values)."""
    if dtype == "hex":
        return [f"0x{r:04X}" for r in registers]
    if dtype == "string":
        return [codec.decode(registers, codec.Layout("string", byte_order, word_order, len(registers)))]
    layout = codec.Layout(dtype, byte_order, word_order)
    n = layout.registers
    if len(registers) % n:
        raise UsageError(f"{len(registers)} register(s) do not divide into {dtype} values of {n} register(s)")
    return [codec.decode(registers[i:i + n], layout) for i in range(0, len(registers), n)]


def encode_value(text: str, dtype: str, word_order: str, byte_order: str) -> list[int]:
    if dtype in ("hex", "u16") and text.lower().startswith("0x"):
        return [int(text, 16)]
    dtype = "u16" if dtype == "hex" else dtype
    try:
        value: object = text if dtype == "string" else float(text) if dtype in ("f32", "f64") else int(text, 0)
    except ValueError:
        raise UsageError(f"{text!r} is not a {dtype} value") from None
    layout = codec.Layout(dtype, byte_order, word_order, max(1, (len(text) + 1) // 2) if dtype == "string" else 1)
    try:
        return codec.encode(value, layout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "on", "true", "yes"):
        return True
    if low in ("0", "off", "false", "no"):
        return False
    raise UsageError(f"a coil value is 0/1/on/off (got {text!r})")


async def _read(line: ModbusRtuLine, unit: int, target: Target, count: int, timeout: float):
    method = {"holding": "read_holding_registers", "input": "read_input_registers",
              "coil": "read_coils", "discrete": "read_discrete_inputs"}[target.table]
    reply = await line.execute(lambda c: getattr(c, method)(target.address, count=count, device_id=unit), timeout, COMMAND)
    if reply.isError():
        raise DeviceException(reply.exception_code, f"read {target.table} {target.address}+{count}")
    if target.table in ("coil", "discrete"):
        return [bool(b) for b in reply.bits[:count]]
    return list(reply.registers[:count])


async def probe(port: str, settings: SerialSettings, unit: int, *, read: str | None = None, write: str | None = None,
                dtype: str = "u16", word_order: str = "big", byte_order: str = "big", timeout: float = 0.5,
                framer: str = "rtu") -> dict:
    """Read (or write, then read back) one thing; returns raw registers/bits and decoded values."""
    if (read is None) == (write is None):
        raise UsageError("give exactly one of --read or --write")
    if dtype not in TYPES:
        raise UsageError(f"--as must be one of {', '.join(TYPES)}")
    line = ModbusRtuLine(port, settings, framer=framer, timeout=timeout, backoff_initial=0.05, backoff_max=0.05)
    out: dict = {"port": port, "settings": str(settings), "unit": unit, "as": dtype, "word_order": word_order,
                 "byte_order": byte_order}
    try:
        if read is not None:
            t = parse_target(read, "read")
            try:
                count = int(t.count_or_value, 0)
            except ValueError:
                raise UsageError(f"count {t.count_or_value!r} is not a number") from None
            limit = 2000 if t.table in ("coil", "discrete") else 125
            if not 1 <= count <= limit:
                raise UsageError(f"count must be 1..{limit} for {t.table}")
            raw = await _read(line, unit, t, count, timeout)
            out.update(op="read", table=t.table, address=t.address, count=count)
        else:
            t = parse_target(write, "write")
            if t.table in ("input", "discrete"):
                raise UsageError(f"{t.table} is read-only; write coil or holding")
            if t.table == "coil":
                value = parse_bool(t.count_or_value)
                reply = await line.execute(lambda c: c.write_coil(t.address, value, device_id=unit), timeout, COMMAND)
                count = 1
            else:
                regs = encode_value(t.count_or_value, dtype, word_order, byte_order)
                count = len(regs)
                if count == 1:
                    reply = await line.execute(lambda c: c.write_register(t.address, regs[0], device_id=unit), timeout, COMMAND)
                else:
                    reply = await line.execute(lambda c: c.write_registers(t.address, regs, device_id=unit), timeout, COMMAND)
                out["written"] = [f"0x{r:04X}" for r in regs]
            if reply.isError():
                raise DeviceException(reply.exception_code, f"write {t.table} {t.address}")
            raw = await _read(line, unit, t, count, timeout)
            out.update(op="write", table=t.table, address=t.address, count=count, value=t.count_or_value)
        if t.table in ("coil", "discrete"):
            out["bits"] = raw
            out["values"] = raw
        else:
            out["registers"] = raw
            out["hex"] = [f"0x{r:04X}" for r in raw]
            try:
                out["values"] = decode_registers(raw, dtype, word_order, byte_order)
            except codec.DecodeError as exc:
                raise UsageError(str(exc)) from None
    finally:
        await line.close()
    return out
