"""Typed config for rules, alert classes, recipient groups and escalation.

Placeholder seam: the site config's `rules:` section validates against
RulesConfig; `validate_rules` cross-checks it against devices and profiles.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RulesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_rules(site, profiles, src) -> list:
    """Cross-checks that need the whole site (unknown device/point, cycles); returns Problems."""
    return []
