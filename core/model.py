"""The one strict base for every configuration and protocol model.

Unknown keys are errors (a typo in a site file must not be silently ignored) and
models are frozen (a validated config is never mutated behind the validator's back).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Location(Strict):
    """Where a device or camera is, in the words people use: building, unit, household, grid, zone."""

    building: str | None = None
    unit: str | None = None
    household: str | None = None
    grid: str | None = None
    zone: str | None = None
