"""Bus type ``serial_line``: line-oriented ASCII sensors (NMEA 0183, key=value) on one serial port."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.clock import Clock
from core.model import Id, Location, Strict
from drivers.modbus.profile import Profile, require_unique_points
from drivers.serial_line.bus import LinePointSpec, SerialLineBus
from drivers.serial_line.parsers import make_parser
from gateway.poll.buses.serial_port import SerialPortFields, check_serial_port
from gateway.poll.labels import Labels
from gateway.poll.registry import BuiltBus, BusConfig, BusType, register


class LinePointConfig(Strict):
    """One value taken from a parsed line."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="point name, lower_snake_case")
    key: str = Field(min_length=1, max_length=64, description="field of the parsed line: 'MDA.5', 'XDR.TempAir', 't'")
    type: Literal["float", "int", "str", "bool"] = "float"
    scale: float = Field(1.0, description="engineering = raw * scale + offset (numbers only)")
    offset: float = 0.0
    unit: str = ""
    labels: Labels = Field(default_factory=dict, description="what the value means, by language (…/meta)")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0")
        return v


class LineSensorConfig(Strict):
    id: Id
    poll_interval: float = Field(5.0, ge=0.05, le=86400, description="seconds between published samples")
    stale_after: float = Field(30.0, gt=0, le=86400, description="a value older than this is not published; no fresh value at all means status 'timeout'")
    match: dict[str, str] = Field(default_factory=dict, description="only lines whose fields equal these (e.g. {sentence: MDA}, {id: ws1})")
    points: list[LinePointConfig] = Field(min_length=1)
    location: Location | None = None
    labels: Labels = Field(default_factory=dict, description="what people call it, by language (…/meta)")
    enabled: bool = True

    @property
    def profile(self) -> None:
        """Line sensors have no Modbus profile: their points are inline (``points``)."""
        return None

    @model_validator(mode="after")
    def _unique(self) -> "LineSensorConfig":
        require_unique_points(self.points)
        return self


class SerialLineConfig(BusConfig, SerialPortFields):
    """Line-oriented ASCII sensors (NMEA 0183, key=value) on one serial port."""

    type: Literal["serial_line"]
    parser: Literal["nmea", "kv"] = Field(description="nmea ($..*hh sentences) or kv (key=value,key=value[*hh])")
    require_checksum: bool | None = Field(None, description="refuse lines without a checksum; default: yes for nmea, no for kv")
    max_line: int = Field(256, ge=16, le=4096, description="longest accepted line in bytes; longer ones are dropped and counted")
    devices: list[LineSensorConfig] = Field(default_factory=list)


def build(bus: SerialLineConfig, profiles: dict[str, Profile], clock: Clock) -> BuiltBus:
    line = SerialLineBus(bus.port, bus.settings(), make_parser(bus.parser, bus.require_checksum),
                         max_line=bus.max_line, backoff_initial=bus.backoff_initial, backoff_max=bus.backoff_max,
                         name=bus.id)
    devices = []
    for dev in bus.devices:
        if not dev.enabled:
            continue
        points = [LinePointSpec(p.name, p.key, p.type, p.scale, p.offset, p.unit) for p in dev.points]
        devices.append((dev, line.sensor(dev.id, points, match=dev.match, stale_after=dev.stale_after)))
    return BuiltBus(bus.id, line, devices)


BUS_TYPE = register(BusType("serial_line", SerialLineConfig, build, check_serial_port))
