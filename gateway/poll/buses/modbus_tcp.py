"""Bus type ``modbus_tcp``: Modbus TCP devices behind one endpoint (one connection, merged reads)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.clock import Clock
from drivers.modbus.device import ModbusDevice
from drivers.modbus.profile import Profile
from drivers.modbus.tcp import ModbusTcpEndpoint
from gateway.poll.buses.modbus_devices import ModbusBus, check_modbus_devices
from gateway.poll.registry import BuiltBus, BusType, register


class ModbusTcpConfig(ModbusBus):
    type: Literal["modbus_tcp"]
    host: str
    port: int = Field(502, ge=1, le=65535)
    timeout: float = Field(1.0, gt=0, le=30, description="reply timeout in seconds")
    backoff_initial: float = Field(1.0, gt=0, le=60)
    backoff_max: float = Field(30.0, gt=0, le=3600)


class TcpEndpointBus:
    """The ``Bus`` face of a TCP endpoint: it keeps no line statistics (its devices' health says it all)."""

    def __init__(self, endpoint: ModbusTcpEndpoint):
        self.endpoint = endpoint

    async def close(self) -> None:
        await self.endpoint.close()

    def stats(self) -> dict | None:
        return None


def build(bus: ModbusTcpConfig, profiles: dict[str, Profile], clock: Clock) -> BuiltBus:
    endpoint = ModbusTcpEndpoint(bus.host, bus.port, timeout=bus.timeout, backoff_initial=bus.backoff_initial,
                                 backoff_max=bus.backoff_max, clock=clock)
    devices = [
        (dev, ModbusDevice(dev.id, dev.unit, profiles[dev.profile], endpoint, max_read_registers=bus.max_read_registers,
                           max_gap=bus.max_gap, timeout=dev.timeout))
        for dev in bus.devices if dev.enabled
    ]
    return BuiltBus(bus.id, TcpEndpointBus(endpoint), devices)


BUS_TYPE = register(BusType("modbus_tcp", ModbusTcpConfig, build, check_modbus_devices))
