"""Serve device models on real Modbus TCP, through the same profiles and codec as the gateway.

Registers are not stored: every access refreshes the accessed table from the
model at the current simulated time, so a read is always the model's truth and
a write reaches the model (which decides what reads back).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Literal

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from drivers.modbus import codec
from drivers.modbus.profile import Point, Profile
from simulator.physics import Model

Fault = Literal["silent", "exception"] | None
Value = int | float | bool | str
TABLES = ("coil", "discrete", "holding", "input")  # order of SimDevice's simdata tuple
_FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 4: "input"}
_FC_TABLE.update({fc: "holding" for fc in (3, 6, 16, 22, 23)})
_INT_RANGE = {f"{s}{b}": ((-(1 << (b - 1)), (1 << (b - 1)) - 1) if s == "i" else (0, (1 << b) - 1))
              for s in "ui" for b in (16, 32, 64)}


def to_registers(point: Point, value: Value) -> list[int]:
    """Engineering value -> registers, clamped to what the type can carry (a device saturates)."""
    if point.type in ("bool", "string"):
        return codec.encode(value, point.layout)
    raw = codec.from_engineering(float(value), point.scale, point.offset)
    if point.type in _INT_RANGE:
        lo, hi = _INT_RANGE[point.type]
        raw = min(max(int(round(raw)), lo), hi)
    return codec.encode(raw, point.layout)


def from_registers(point: Point, registers: list[int]) -> Value:
    """What the gateway decodes from these registers."""
    return codec.to_engineering(codec.decode(registers, point.layout), point.scale, point.offset)


@dataclass
class SimulatedDevice:
    """One Modbus unit: a profile's register map served from a model."""

    id: str
    unit: int
    profile: Profile
    model: Model
    fault: Fault = None
    silence: float = 30.0  # how long a "silent" request is held before being dropped unanswered
    _held: set[asyncio.Task] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        missing = {p.name for p in self.profile.points} - set(self.model.values(self.model.clock.now()))
        if missing:
            raise ValueError(f"{self.id}: model {type(self.model).__name__} gives no {sorted(missing)}")

    def expected(self, now: float) -> dict[str, Value]:
        """Each point as the gateway should decode it at ``now`` (encode -> decode round trip)."""
        values = self.model.values(now)
        return {p.name: from_registers(p, to_registers(p, values[p.name])) for p in self.profile.points}

    def points(self, table: str) -> list[Point]:
        return [p for p in self.profile.points if p.table == table]

    def sim_device(self) -> SimDevice:
        blocks = []
        for table in TABLES:
            size = max((p.address + p.count for p in self.points(table)), default=1)
            if table in ("coil", "discrete"):
                blocks.append([SimData(0, count=size, values=False, datatype=DataType.BITS)])
            else:
                blocks.append([SimData(0, values=[0] * size, datatype=DataType.REGISTERS)])
        return SimDevice(id=self.unit, simdata=tuple(blocks), action=self._action)

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.fault == "silent":
            await self._hold()
        if self.fault == "exception":
            return ExcCodes.DEVICE_FAILURE
        table = _FC_TABLE.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        now = self.model.clock.now()
        if set_values is not None and (error := self._write(table, address, list(set_values), now)):
            return error
        self._refresh(table, start_address, registers, now)
        return None

    async def _hold(self) -> None:
        """Never answer: park the request, then drop it (a late reply would confuse a client)."""
        task = asyncio.current_task()
        if task is not None:
            self._held.add(task)
        try:
            await asyncio.sleep(self.silence)
        finally:
            self._held.discard(task)  # type: ignore[arg-type]
        raise asyncio.CancelledError  # ends the server's handler without a response

    def release(self) -> None:
        """Drop held requests now (on shutdown)."""
        for task in list(self._held):
            task.cancel()

    def _write(self, table: str, address: int, values: list, now: float) -> ExcCodes | None:
        if table in ("discrete", "input"):
            return ExcCodes.ILLEGAL_FUNCTION
        end = address + len(values)
        targets = [p for p in self.points(table) if p.address < end and address < p.address + p.count]
        covered = sum(p.count for p in targets)
        if covered != len(values) or any(not p.writable or p.address < address or p.address + p.count > end
                                         for p in targets):
            return ExcCodes.ILLEGAL_ADDRESS  # read-only, unused, or half of a multi-register value
        try:
            for p in targets:
                chunk = values[p.address - address : p.address - address + p.count]
                value = bool(chunk[0]) if table == "coil" else from_registers(p, chunk)
                self.model.write(p.name, value, now)
        except (ValueError, codec.DecodeError):
            return ExcCodes.ILLEGAL_VALUE
        return None

    def _refresh(self, table: str, start_address: int, registers: list[int], now: float) -> None:
        values = self.model.values(now)
        if table in ("coil", "discrete"):
            bits = SimUtils.registersToBits(registers)
            for p in self.points(table):
                bits[p.address - start_address * 16] = bool(values[p.name])
            registers[:] = SimUtils.bitsToRegisters(bits)
            return
        for p in self.points(table):
            i = p.address - start_address
            registers[i : i + p.count] = to_registers(p, values[p.name])


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (the tiny race with other processes is acceptable for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ModbusTcpSimulator:
    """Many units behind one TCP endpoint, like a Modbus TCP gateway in front of an RS-485 line.

    ``port=0`` picks a free port at once, so ``port`` is known before ``start()``.
    """

    def __init__(self, devices: list[SimulatedDevice], host: str = "127.0.0.1", port: int = 0) -> None:
        units = [d.unit for d in devices]
        if len(set(units)) != len(units):
            raise ValueError(f"duplicate unit ids in {units}")
        self.devices = devices
        self.host = host
        self.port = port or free_port(host)
        self._server: ModbusTcpServer | None = None

    def device(self, id: str) -> SimulatedDevice:
        for d in self.devices:
            if d.id == id:
                return d
        raise KeyError(id)

    async def start(self) -> None:
        self._server = ModbusTcpServer(context=[d.sim_device() for d in self.devices], address=(self.host, self.port))
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        for d in self.devices:
            d.release()
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
