"""The bus registry: every bus type is one module that registers its config model and builder.

A bus type (Modbus TCP, an RS-485 line, a serial line of NMEA sensors, a toy in
the tests) brings three things: the typed model of its ``buses:`` entry, the
checks that need the whole site (a serial port owned by one bus, the profiles
of its devices), and a builder that turns a validated entry into a transport
and pollable devices.  The site config's ``buses:`` union and the runtime are
built from this registry, so adding a type never edits them (Frigate's
detector plugins work the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, Union, get_args

from pydantic import Field, field_validator

from core.clock import Clock
from core.model import Id, Strict
from core.yamlsrc import Problem, Source
from drivers.modbus.profile import Profile
from gateway.poll.poller import Pollable


class BusConfig(Strict):
    """What every ``buses:`` entry has: its ``type`` tag, an id and its devices (subclasses narrow both)."""

    type: str
    id: Id
    devices: list[Any] = Field(default_factory=list)

    @field_validator("devices", mode="before")
    @classmethod
    def _no_devices(cls, v):  # a null "devices:" means none
        return [] if v is None else v


class Bus(Protocol):
    """What the runtime needs of a built bus's transport (a TCP endpoint, an RS-485 line, ...)."""

    async def close(self) -> None: ...

    def stats(self) -> dict | None:
        """Line statistics for `canopy bus` and the status file; None when the bus keeps none."""
        ...


@dataclass
class BuiltBus:
    id: str
    transport: Bus
    devices: list[tuple[Any, Pollable]]  # (device config, what the poller reads)


@dataclass
class SiteChecks:
    """What a bus type's checks may use from the whole site while it is being loaded."""

    src: Source
    base_dir: str
    profile: Callable[[str, tuple], Profile | list[Problem]]  # (name, path of the key) -> the profile, or why not
    ports: dict[str, tuple] = field(default_factory=dict)  # real path of a serial port -> (key path, bus id) of its owner
    missing_ports_ok: bool = False


Builder = Callable[[Any, dict[str, Profile], Clock], BuiltBus]
Checker = Callable[[Any, int, SiteChecks], list[Problem]]


def _no_checks(bus: Any, index: int, site: SiteChecks) -> list[Problem]:
    return []


@dataclass(frozen=True)
class BusType:
    """One bus type: its ``type`` tag, the model of its config entry, its builder and its site checks."""

    name: str
    config_model: type[BusConfig]
    build: Builder
    check: Checker = _no_checks

    def __post_init__(self) -> None:
        if get_args(self.config_model.model_fields["type"].annotation) != (self.name,):
            raise TypeError(f"{self.config_model.__name__}.type must be Literal[{self.name!r}]: it is the union's tag")


_TYPES: dict[str, BusType] = {}


def register(bus_type: BusType) -> BusType:
    """Make a bus type known to the site config and the runtime; its name must be new."""
    if bus_type.name in _TYPES and _TYPES[bus_type.name] is not bus_type:
        raise ValueError(f"bus type {bus_type.name!r} is already registered")
    _TYPES[bus_type.name] = bus_type
    return bus_type


def unregister(name: str) -> None:
    """Forget a bus type (for tests that register a toy one)."""
    _TYPES.pop(name, None)


def bus_types() -> tuple[BusType, ...]:
    return tuple(_TYPES.values())


def bus_type(name: str) -> BusType:
    return _TYPES[name]


def config_union(types: tuple[BusType, ...]) -> Any:
    """The pydantic tagged union of the config models of ``types``, discriminated on ``type``."""
    models = tuple(t.config_model for t in types)
    if len(models) < 2:  # a tagged union needs two members; one model still checks its own tag
        return models[0] if models else BusConfig
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - a runtime tuple of models


def build_bus(bus: BusConfig, profiles: dict[str, Profile], clock: Clock) -> BuiltBus:
    return _TYPES[bus.type].build(bus, profiles, clock)
