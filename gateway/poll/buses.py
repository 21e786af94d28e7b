"""Bus builders: turn one bus of the config into its transport and pollable devices.

Each bus type registers a builder here, so adding RS-485 or serial-line buses
adds a builder, not a branch in the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.clock import Clock
from drivers.modbus.device import ModbusDevice
from drivers.modbus.profile import Profile
from drivers.modbus.rtu import ModbusRtuLine, RtuDevice
from drivers.modbus.tcp import ModbusTcpEndpoint
from drivers.serial_line.bus import LinePointSpec, SerialLineBus
from drivers.serial_line.parsers import make_parser
from drivers.serial_line.settings import SerialSettings


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


def _serial_settings(bus) -> SerialSettings:
    return SerialSettings(bus.baudrate, bus.bytesize, bus.parity, bus.stopbits)


@builder("modbus_rtu")
def _modbus_rtu(bus, profiles: dict[str, Profile], clock: Clock) -> BuiltBus:
    line = ModbusRtuLine(bus.port, _serial_settings(bus), framer=bus.framer, timeout=bus.timeout,
                         quarantine_after=bus.quarantine_after, reprobe_interval=bus.reprobe_interval,
                         slave_backoff_initial=bus.slave_backoff_initial, slave_backoff_max=bus.slave_backoff_max,
                         backoff_initial=bus.backoff_initial, backoff_max=bus.backoff_max, engine=bus.engine,
                         name=bus.id, clock=clock)
    devices = [
        (dev, RtuDevice(dev.id, dev.unit, profiles[dev.profile], line.slave(dev.unit, dev.id),
                        max_read_registers=bus.max_read_registers, max_gap=bus.max_gap, timeout=dev.timeout))
        for dev in bus.devices if dev.enabled
    ]
    return BuiltBus(bus.id, line, devices)


@builder("serial_line")
def _serial_line(bus, profiles: dict[str, Profile], clock: Clock) -> BuiltBus:
    line = SerialLineBus(bus.port, _serial_settings(bus), make_parser(bus.parser, bus.require_checksum),
                         max_line=bus.max_line, backoff_initial=bus.backoff_initial, backoff_max=bus.backoff_max,
                         name=bus.id)
    devices = []
    for dev in bus.devices:
        if not dev.enabled:
            continue
        points = [LinePointSpec(p.name, p.key, p.type, p.scale, p.offset, p.unit) for p in dev.points]
        devices.append((dev, line.sensor(dev.id, points, match=dev.match, stale_after=dev.stale_after)))
    return BuiltBus(bus.id, line, devices)
