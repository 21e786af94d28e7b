"""Typed camera/detector config (no OpenCV import here: sensor-only boards load it too)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
