"""Bus builders: turn one bus of the config into its transport and pollable devices.

Each bus type registers a builder here, so adding RS-485 or serial-line buses
adds a builder, not a branch in the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.modbus.device import ModbusDevice
from drivers.modbus.tcp import ModbusTcpEndpoint
from gateway.clock import Clock
from gateway.profiles import Profile


@dataclass
class BuiltBus:
    id: str
    transport: Any  # has `async close()`
    devices: list[tuple[Any, Any]]  # (device config, Pollable)


Builder = Callable[[Any, dict[str, Profile], Clock], BuiltBus]
BUILDERS: dict[str, Builder] = {}


def builder(bus_type: str):
    def register(fn: Builder) -> Builder:
        BUILDERS[bus_type] = fn
        return fn

    return register


def build_bus(bus, profiles: dict[str, Profile], clock: Clock) -> BuiltBus:
    return BUILDERS[bus.type](bus, profiles, clock)


@builder("modbus_tcp")
def _modbus_tcp(bus, profiles: dict[str, Profile], clock: Clock) -> BuiltBus:
    endpoint = ModbusTcpEndpoint(bus.host, bus.port, timeout=bus.timeout, backoff_initial=bus.backoff_initial,
                                 backoff_max=bus.backoff_max, clock=clock)
    devices = [
        (dev, ModbusDevice(dev.id, dev.unit, profiles[dev.profile], endpoint, max_read_registers=bus.max_read_registers,
                           max_gap=bus.max_gap, timeout=dev.timeout))
        for dev in bus.devices if dev.enabled
    ]
    return BuiltBus(bus.id, endpoint, devices)
