"""A Modbus device on a bus (TCP or RS-485): its config entry and the checks against its profile.

Shared by the Modbus bus types: a device is a unit id plus a profile (the
register map in ``profiles_dir``), and its points must fit the bus's reads.
"""

from __future__ import annotations

from pydantic import Field

from core.model import Id, Location, Strict
from core.yamlsrc import Problem
from gateway.poll.labels import Labels
from gateway.poll.registry import BusConfig, SiteChecks


class ModbusDeviceConfig(Strict):
    id: Id
    unit: int = Field(ge=0, le=247, description="Modbus unit (slave) id")
    profile: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$",
                         description="profile name: a file <profile>.yaml in profiles_dir")
    poll_interval: float = Field(5.0, ge=0.05, le=86400, description="seconds between polls")
    timeout: float | None = Field(None, gt=0, le=30, description="reply timeout; default: the bus's")
    location: Location | None = None
    labels: Labels = Field(default_factory=dict, description="what people call it, by language: {en: Mrs Wang's door, zh-CN: 王阿姨家门} (…/meta)")
    enabled: bool = True


class ModbusBus(BusConfig):
    """What the Modbus bus types share: their devices and how reads may be merged."""

    max_read_registers: int = Field(125, ge=1, le=125)
    max_gap: int = Field(8, ge=0, le=125, description="unread registers allowed inside a merged read")
    devices: list[ModbusDeviceConfig] = Field(default_factory=list)


def check_modbus_devices(bus: ModbusBus, b: int, site: SiteChecks, *, broadcast_is_silent: bool = False) -> list[Problem]:
    """Unit ids unique on the bus, each profile found, and no point longer than the largest read.

    ``broadcast_is_silent``: on a serial line unit 0 is the broadcast address, which never answers.
    """
    problems: list[Problem] = []
    units: dict[int, str] = {}
    for d, dev in enumerate(bus.devices):
        dpath = ("buses", b, "devices", d)
        if broadcast_is_silent and dev.unit == 0:
            problems.append(site.src.problem(dpath + ("unit",), "unit 0 is the RS-485 broadcast address and never answers; use 1..247"))
        if dev.unit in units:
            problems.append(site.src.problem(dpath + ("unit",), f"unit {dev.unit} is already used by device '{units[dev.unit]}' on bus '{bus.id}'"))
        units.setdefault(dev.unit, dev.id)
        prof = site.profile(dev.profile, dpath + ("profile",))
        if isinstance(prof, list):  # not found or broken (a broken file is reported once, not per device)
            problems.extend(prof)
            continue
        limit = min(bus.max_read_registers, prof.max_read_registers)
        too_big = [p.name for p in prof.points if p.table in ("holding", "input") and p.count > limit]
        if too_big:
            problems.append(site.src.problem(dpath + ("profile",), f"points {too_big} are longer than the largest allowed read"))
    return problems
