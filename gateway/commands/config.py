"""Typed config for issuers, authorisation, valves and locks (placeholder seam)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CommandsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_commands(site, profiles, src) -> list:
    """Cross-checks needing the whole site (unknown devices/points, keys); returns Problems."""
    return []
