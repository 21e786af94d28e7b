"""Pieces every message model shares: the record base, places, labels, severities.

Closed shapes use :class:`core.model.Strict` (an unknown field is an error, so the
schemas catch a producer that drifts from the contract); :class:`OpenRecord` is for
the few records documented to carry extra fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from core.model import Id, Location, Strict

__all__ = ["Id", "Labels", "Lane", "OpenRecord", "Place", "Record", "Severity", "Strict", "Value", "JSONObject"]

Lane = Literal["alarm", "event", "telemetry"]
Severity = Literal["critical", "warning", "info"]
Value = int | float | str | bool | None
JSONObject = dict[str, Any]
# Human labels by language tag: {"en": "Mrs Wang's door", "zh-CN": "王阿姨家门"}
Labels = dict[Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")], str]


class Place(Location):
    """Where something is, as records carry it: the site plus the config's location fields that are set."""

    site: str | None = None


class Record(Strict):
    """One record of a batch: its lane's sequence number, when it happened, and (subclasses) its type."""

    model_config = ConfigDict(populate_by_name=True)

    seq: int = Field(ge=1, description="the record's sequence number in its lane (unique per epoch and lane)")
    ts: float = Field(description="wall-clock epoch seconds, rounded to ms")
    topic: str | None = Field(None, description="v1 only: the topic suffix the record was routed by; v2 bodies do not carry it")


class OpenRecord(Record):
    """A record documented to carry extra fields beside these (receivers ignore what they do not know)."""

    model_config = ConfigDict(extra="allow")
