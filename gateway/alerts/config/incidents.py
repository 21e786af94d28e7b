"""Incidents: rules about the same subject that raise ONE alert together (docs/alerts.md#incidents).

One smoke event trips the detector's alarm, a haze threshold and a smoulder
composition; people need one alert whose severity rises as rules join, with one
ack, not three.  Rules name their incident (``incident: smoke``); this section
says how its alert behaves.  Declaring an incident is optional: an undeclared one
takes the defaults below (but a name only one rule uses must be declared, so a typo
does not split an incident silently -- checks.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.alerts.config.fields import Name
from gateway.alerts.config.rule_models import Messages, ReraisePolicy


class Incident(ReraisePolicy):
    """How the one alert of an incident escalates and reads."""

    class_: Name | None = Field(None, alias="class", description="alert class (its chain); default: the class its rules share")
    on_rise: Literal["restart", "next", "keep"] = Field(
        "restart", description="when a joining rule raises the severity: restart the escalation clock from the rise "
                               "(an ack no longer holds), page the next group at once (next), or keep the times")
    message: Messages | None = Field(None, description="the text for people; default: the text of its most severe rule")
    description: str = ""


DEFAULT = Incident()
