"""Device profiles: reusable register maps, one YAML file per device model.

A profile says what a device *is* (its points, their registers, types, scaling
and units); the site config says where a device *is* (bus, unit id, poll rate).
The simulator serves the same profiles, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from core.model import Strict
from drivers.modbus.codec import Layout

Table = Literal["coil", "discrete", "holding", "input"]


def require_unique_points(points) -> None:
    """A point name must mean one value: refuse a name given twice."""
    seen: set[str] = set()
    for p in points:
        if p.name in seen:
            raise ValueError(f"point '{p.name}' is defined twice")
        seen.add(p.name)



class Point(Strict):
    """One named value of a device."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="point name, lower_snake_case")
    table: Table = Field("holding", description="Modbus table the value lives in")
    address: int = Field(ge=0, le=65535, description="0-based register or bit address")
    type: Literal["bool", "u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64", "string"] = "u16"
    length: int = Field(1, ge=1, le=125, description="registers, for strings only")
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = Field(1.0, description="engineering = raw * scale + offset")
    offset: float = 0.0
    unit: str = Field("", description="engineering unit, e.g. '%', 'degC', 'm3'")
    writable: bool = Field(False, description="may be written by commands")
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _bits_default_to_bool(cls, data):
        # A coil or discrete input is one bit: no need to say "type: bool".
        if isinstance(data, dict) and data.get("table") in ("coil", "discrete") and "type" not in data:
            data = {**data, "type": "bool"}
        return data

    # Field validators (not one model validator) so an error points at the
    # offending key's line.  Fields validate in declaration order: table and
    # type are known by the time type, scale and offset are checked.
    @field_validator("type")
    @classmethod
    def _bits_are_bool(cls, v: str, info: ValidationInfo) -> str:
        table = info.data.get("table")
        if table in ("coil", "discrete") and v != "bool":
            raise ValueError(f"{table} points are single bits: type must be 'bool', not '{v}'")
        return v

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: float, info: ValidationInfo) -> float:
        if v == 0:
            raise ValueError("scale must not be 0")
        if info.data.get("type") == "string" and v != 1:
            raise ValueError("strings take no scale or offset")
        return v

    @field_validator("offset")
    @classmethod
    def _offset(cls, v: float, info: ValidationInfo) -> float:
        if info.data.get("type") == "string" and v != 0:
            raise ValueError("strings take no scale or offset")
        return v

    @model_validator(mode="after")
    def _check(self) -> "Point":
        # Belt and braces (field validators do not run on model_construct).
        if self.table in ("coil", "discrete") and self.type != "bool":
            raise ValueError(f"{self.table} points are single bits: type must be 'bool', not '{self.type}'")
        return self

    @property
    def layout(self) -> Layout:
        return Layout(self.type, self.byte_order, self.word_order, self.length)

    @property
    def count(self) -> int:
        """Units (registers or bits) occupied."""
        if self.table in ("coil", "discrete"):
            return 1
        return self.layout.registers


class Profile(Strict):
    """A device model's register map."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    manufacturer: str = ""
    max_read_registers: int = Field(125, ge=1, le=125, description="largest read this device accepts")
    points: list[Point] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "Profile":
        require_unique_points(self.points)
        return self

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)
