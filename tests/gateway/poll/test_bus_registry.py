"""The bus registry's recipe, proven: a new bus type is one module plus one registration line.

The toy ``constant`` bus below is the whole module a new bus type needs (its
config model, its transport, its devices and its builder); the fixture's one
``register(...)`` line makes the site config accept it from YAML, with
file:line errors like any built-in bus, and the real poller polls it.
"""

from __future__ import annotations

import asyncio
import textwrap
from dataclasses import dataclass
from typing import Literal

import pytest

from core.clock import Clock, FakeClock
from core.model import Id, Location, Strict
from core.records import Reading
from core.yamlsrc import ConfigError
from drivers.modbus.profile import Profile
from gateway.config.load import load_config
from gateway.poll.health import Health
from gateway.poll.poller import DevicePoller
from gateway.poll.registry import BuiltBus, BusConfig, BusType, build_bus, bus_types, register, unregister


# --------------------------------------------------------------------------- the toy bus type (a module of its own in real life)
class ConstantDeviceConfig(Strict):
    id: Id
    values: dict[str, float]
    unit: str = ""
    poll_interval: float = 1.0
    location: Location | None = None
    enabled: bool = True

    @property
    def profile(self) -> None:  # no Modbus profile, like a serial-line sensor
        return None


class ConstantBusConfig(BusConfig):
    type: Literal["constant"]
    devices: list[ConstantDeviceConfig] = []


@dataclass(frozen=True)
class Point:
    name: str
    unit: str


class ConstantDevice:
    def __init__(self, cfg: ConstantDeviceConfig):
        self.id = cfg.id
        self.readings = [(Point(name, cfg.unit), value) for name, value in cfg.values.items()]
        self.reads = 0

    async def read_all(self):
        self.reads += 1
        return list(self.readings)


class ConstantBus:
    def __init__(self):
        self.closed = False
        self.devices: list[ConstantDevice] = []

    async def close(self) -> None:
        self.closed = True

    def stats(self) -> dict | None:
        return {"type": "constant", "reads": sum(d.reads for d in self.devices)}


def build_constant(bus: ConstantBusConfig, profiles: dict[str, Profile], clock: Clock) -> BuiltBus:
    devices = [(cfg, ConstantDevice(cfg)) for cfg in bus.devices if cfg.enabled]
    transport = ConstantBus()
    transport.devices = [device for _, device in devices]
    return BuiltBus(bus.id, transport, devices)


@pytest.fixture
def constant_bus():
    toy = register(BusType("constant", ConstantBusConfig, build_constant))  # the one registration line
    yield toy
    unregister("constant")


SITE = """\
site: s
gateway: g
buses:
  - type: constant
    id: bench
    devices:
      - {id: ref-1, values: {voltage: 3.3, current: 0.25}, unit: V, poll_interval: 2}
      - {id: ref-2, values: {level: 1}, enabled: false}
"""


def write(tmp_path, text: str):
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the proof
async def test_a_registered_toy_bus_is_configured_in_yaml_and_polled_by_the_real_poller(tmp_path, constant_bus):
    cfg = load_config(write(tmp_path, SITE))
    (bus_cfg,) = cfg.site.buses
    assert isinstance(bus_cfg, ConstantBusConfig) and [d.id for _, d in cfg.devices()] == ["ref-1", "ref-2"]

    clock = FakeClock()
    built = build_bus(bus_cfg, cfg.profiles, clock)
    health = Health()
    batches: list[list[Reading]] = []

    async def sink(readings: list[Reading]) -> None:
        batches.append(readings)

    pollers = []
    for dev_cfg, device in built.devices:
        health.register(dev_cfg.id, built.id)
        pollers.append(DevicePoller(device, dev_cfg.poll_interval, sink, health, clock))
    assert [p.device.id for p in pollers] == ["ref-1"]  # a disabled device is not built
    task = asyncio.create_task(pollers[0].run())
    await clock.advance(5.0)  # polls at 0, 2 and 4 s
    pollers[0].stopping = True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert len(batches) == 3
    assert [(r.device, r.point, r.value, r.unit) for r in batches[0]] == [("ref-1", "voltage", 3.3, "V"), ("ref-1", "current", 0.25, "V")]
    assert health.snapshot()["ref-1"]["status"] == "ok"
    assert built.transport.stats() == {"type": "constant", "reads": 3}
    await built.transport.close()
    assert built.transport.closed


def test_a_toy_bus_error_names_file_line_and_key(tmp_path, constant_bus):
    text = SITE.replace("poll_interval: 2", "poll_interval: soon")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    (p,) = info.value.problems
    assert (p.line, p.key) == (7, "buses[0].devices[0].poll_interval")  # the tag is not in the key
    assert "'soon'" in p.message


def test_an_unknown_bus_type_lists_the_registered_ones(tmp_path, constant_bus):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, SITE.replace("type: constant", "type: constnat")))
    (p,) = info.value.problems
    assert p.key == "buses[0].type"
    assert all(name in p.message for name in ("'constant'", "'modbus_tcp'", "'modbus_rtu'", "'serial_line'"))


def test_without_registration_the_type_is_unknown(tmp_path):
    assert "constant" not in [t.name for t in bus_types()]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, SITE))
    assert "unknown type 'constant'" in info.value.problems[0].message


def test_a_name_is_registered_once_and_must_match_the_models_tag(constant_bus):
    with pytest.raises(ValueError, match="already registered"):
        register(BusType("constant", ConstantBusConfig, build_constant))
    with pytest.raises(TypeError, match="Literal"):
        BusType("konstant", ConstantBusConfig, build_constant)
