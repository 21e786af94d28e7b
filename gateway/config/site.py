"""The site: one YAML file's typed model, and the validated site with its profiles.

One file describes a site: who the gateway is, where the broker is, the buses
and devices, and optionally rules, commands and cameras.  ``buses:`` accepts
every bus type in the bus registry (``gateway.poll.registry``); loading,
with file:line for every problem, is in ``gateway.config.load``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

import gateway.poll.buses  # noqa: F401 - registers the built-in bus types before the union is built
from core.model import Id, Strict
from drivers.modbus.profile import Profile
from gateway.alerts.config import RulesConfig
from gateway.commands.config import CommandsConfig
from gateway.config.broker import BrokerConfig
from gateway.config.delivery import StoreConfig, UplinkConfig
from gateway.controls.config import ControlConfig
from gateway.poll.registry import BusConfig, BusType, bus_types, config_union
from inference.config import CameraConfig

_BUILT_IN = bus_types()
if TYPE_CHECKING:
    AnyBus = BusConfig
else:
    AnyBus = config_union(_BUILT_IN)  # site_model() takes in types registered later


class SiteConfig(Strict):
    site: Id
    gateway: Id
    language: Literal["en", "zh"] = "en"
    profiles_dir: str = Field("profiles", description="folder of device profiles, relative to the config file")
    broker: BrokerConfig | None = Field(None, description="omit to start an embedded broker on loopback (demo)")
    store: StoreConfig = StoreConfig()
    uplink: UplinkConfig = UplinkConfig()
    buses: list[AnyBus] = Field(default_factory=list)
    rules: RulesConfig | None = Field(None, description="local rules, alert classes and escalation (docs/alerts.md)")
    commands: CommandsConfig | None = Field(None, description="remote commands: issuers, authorisation, valves, locks (docs/commands.md)")
    cameras: list[CameraConfig] = Field(default_factory=list, description="cameras and their detectors (docs/cameras.md)")
    controls: list[ControlConfig] = Field(default_factory=list, description="local closed loops: fans, heaters, misters (docs/controls.md)")
    security: Literal["warn", "strict"] = Field("warn", description="strict: refuse a broker off the board without TLS or credentials, and a password written in the YAML (docs/security.md)")

    @field_validator("buses", "controls", mode="before")
    @classmethod
    def _list(cls, v):  # a null "buses:" (or "controls:") means none
        return [] if v is None else v


def site_model() -> type[SiteConfig]:
    """The site model whose ``buses:`` takes every bus type registered now."""
    types = bus_types()
    return SiteConfig if types == _BUILT_IN else _with_bus_types(types)


@functools.cache
def _with_bus_types(types: tuple[BusType, ...]) -> type[SiteConfig]:
    buses: Any = (list[config_union(types)], Field(default_factory=list))  # type: ignore[misc]
    return create_model("SiteConfig", __base__=SiteConfig, buses=buses)


class LoadedConfig(BaseModel):
    """A validated site with its resolved profiles and where it came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    site: SiteConfig
    profiles: dict[str, Profile]
    file: str
    base_dir: str

    def resolve(self, path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(self.base_dir, path)

    @property
    def status_path(self) -> str:
        """Where the daemon writes its health snapshot (beside the outbox by default)."""
        store = self.site.store
        if store.status_file:
            return self.resolve(store.status_file)
        return os.path.join(os.path.dirname(self.resolve(store.path)), "canopy-status.json")

    def devices(self) -> Iterator[tuple[BusConfig, Any]]:
        for bus in self.site.buses:
            for dev in bus.devices:
                yield bus, dev
