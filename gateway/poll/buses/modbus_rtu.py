"""Bus type ``modbus_rtu``: Modbus RTU or ASCII slaves sharing one RS-485 line the board owns."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.clock import Clock
from core.yamlsrc import Problem
from drivers.modbus.profile import Profile
from drivers.modbus.rtu import ModbusRtuLine, RtuDevice
from gateway.poll.buses.modbus_devices import ModbusBus, check_modbus_devices
from gateway.poll.buses.serial_port import SerialPortFields, check_serial_port
from gateway.poll.registry import BuiltBus, BusType, SiteChecks, register

ENGINE_REMOVED = "engine: pymodbus was removed; the built-in RTU engine is always used -- delete this key"


class ModbusRtuConfig(ModbusBus, SerialPortFields):
    """Modbus RTU or ASCII slaves sharing one RS-485 line."""

    type: Literal["modbus_rtu"]
    framer: Literal["rtu", "ascii"] = Field("rtu", description="rtu (binary, CRC) or ascii (':' hex LRC CR LF)")
    timeout: float = Field(0.5, gt=0, le=30, description="longest reply timeout in seconds, past the end of the request "
                           "and the reply's own wire time; each slave's timeout is learned below it")
    timeout_floor: float = Field(0.04, gt=0, le=30, description="shortest reply timeout past t3.5 and the reply's "
                                 "wire time (slave processing + adapter latency); >= timeout: a fixed timeout")
    quarantine_after: int = Field(3, ge=1, le=1000, description="consecutive failures before a slave is quarantined")
    reprobe_interval: float = Field(30.0, ge=0.1, le=86400, description="seconds between re-probes of a quarantined slave")
    slave_backoff_initial: float = Field(1.0, ge=0, le=60, description="first retry delay after a slave fails (doubles per failure)")
    slave_backoff_max: float = Field(10.0, ge=0, le=3600, description="longest retry delay before quarantine")
    process: bool = Field(True, description="run the line in its own worker process, which keeps the wire's "
                          "timing whatever the gateway is busy with; false: on the gateway's event loop (no process, "
                          "~8 MB less, less CPU per request, but a busy gateway sends requests late)")
    engine: None = Field(None, exclude=True, description="removed: any value is an error that says so")

    @field_validator("engine", mode="before")
    @classmethod
    def _engine_removed(cls, v):  # named in old site files: say what happened, at its line
        raise ValueError(ENGINE_REMOVED)

    @model_validator(mode="after")
    def _rtu_is_8_bit(self) -> "ModbusRtuConfig":
        if self.framer == "rtu" and self.bytesize != 8:
            raise ValueError("Modbus RTU needs bytesize 8 (7 data bits only with framer: ascii)")
        return self


def build(bus: ModbusRtuConfig, profiles: dict[str, Profile], clock: Clock) -> BuiltBus:
    line = ModbusRtuLine(bus.port, bus.settings(), framer=bus.framer, timeout=bus.timeout, timeout_floor=bus.timeout_floor,
                         quarantine_after=bus.quarantine_after, reprobe_interval=bus.reprobe_interval,
                         slave_backoff_initial=bus.slave_backoff_initial, slave_backoff_max=bus.slave_backoff_max,
                         backoff_initial=bus.backoff_initial, backoff_max=bus.backoff_max, name=bus.id, clock=clock,
                         process=bus.process)
    devices = [
        (dev, RtuDevice(dev.id, dev.unit, profiles[dev.profile], line.slave(dev.unit, dev.id),
                        max_read_registers=bus.max_read_registers, max_gap=bus.max_gap, timeout=dev.timeout))
        for dev in bus.devices if dev.enabled
    ]
    return BuiltBus(bus.id, line, devices)


def check(bus: ModbusRtuConfig, b: int, site: SiteChecks) -> list[Problem]:
    """One bus per port, the port present, and unit 0 (broadcast, never answers) refused."""
    return check_serial_port(bus, b, site) + check_modbus_devices(bus, b, site, broadcast_is_silent=True)


BUS_TYPE = register(BusType("modbus_rtu", ModbusRtuConfig, build, check))
