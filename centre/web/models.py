"""The API's answers as pydantic models: they document ``/api/openapi.json`` and FastAPI serialises them directly.

Times are epoch seconds (floats), as everywhere in the centre and the protocol.  Field
names are the store's column names, so a reader of docs/centre.md#schema recognises them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class GrantOut(BaseModel):
    role: str
    site: str | None = Field(description="null: every site")
    scope_kind: str = Field(description="site | group | household | zone")
    scope: str | None


class MeOut(BaseModel):
    username: str
    display_name: str | None
    language: str
    phone: str | None
    email: str | None
    active: bool
    must_change_password: bool = Field(description="true: only /api/me, /api/password and /api/logout answer")
    grants: list[GrantOut]
    permissions: list[str]
    csrf: str = Field(description="send it back in the X-CSRF-Token header of every POST/PUT/PATCH/DELETE")
    session_expires_at: float


class Ok(BaseModel):
    ok: bool = True


class SiteOut(BaseModel):
    site: str
    gateways: int
    online: int
    offline: int
    unknown: int
    last_seen: float | None


class GatewayOut(BaseModel):
    site: str
    gateway: str
    status: str = Field(description="online | offline | unknown")
    online: bool
    reason: str | None = Field(description="why offline: shutdown, connection lost, blind ...")
    status_since: float | None
    last_seen: float = Field(description="centre time of the last message of any kind")
    last_record_ts: float | None = Field(description="gateway time of the newest record stored")
    boot: int | None
    version: str | None
    protocol: int | None
    capabilities: list[str] | None
    meta_version: str | None


class GatewayDetail(GatewayOut):
    state: dict[str, Any] | None = Field(description="the latest …/state document")
    meta: dict[str, Any] | None = Field(description="the latest …/meta document: devices, points, zones, locks")
    first_seen: float


class AlertOut(BaseModel):
    site: str
    gateway: str
    alert: str
    status: str = Field(description="raised | escalated | acknowledged | resolved")
    rule: str | None
    class_: str | None = Field(alias="class", serialization_alias="class")
    severity: str | None
    subject: str | None
    device: str | None
    location: dict[str, Any] | None
    groups: list[str] | None
    step: int | None
    next_escalation_at: float | None
    raised_at: float | None
    acked_at: float | None
    acked_by: str | None
    ack_note: str | None
    resolved_at: float | None
    resolved_by: str | None
    message: str | None
    lang: str | None
    texts: dict[str, str] | None = Field(None, description="what happened, the gateway's ready line per language "
                                                           "(en, zh-CN); a screen shows the one in its language")
    updated_at: float

    model_config = {"populate_by_name": True}


class TimelineItem(BaseModel):
    ts: float
    type: str = Field(description="alert.raised, .escalated, .updated, .acknowledged, .resolved")
    status: str | None
    step: int | None
    actor: str | None = Field(description="who acknowledged or resolved")
    groups: list[str] | None
    group: str | None = Field(None, description="the group this record went to")
    recipients: list[str] | None = None
    note: str | None = None


class AlertDetail(BaseModel):
    alert: AlertOut
    timeline: list[TimelineItem]


class ReadingOut(BaseModel):
    gateway: str
    device: str
    point: str
    ts: float
    value: float | None
    text: str | None
    invalid: str | None = Field(description='"nan", "inf", "-inf" when the device sent one (value is null)')
    unit: str | None


class RawPoint(BaseModel):
    ts: float
    value: float | None
    text: str | None
    invalid: str | None


class HourlyPoint(BaseModel):
    hour: int = Field(description="epoch seconds of the hour's start (UTC)")
    count: int
    mean: float
    min: float
    max: float


class SeriesOut(BaseModel):
    site: str
    gateway: str
    device: str
    point: str
    resolution: str = Field(description="raw | hourly")
    unit: str | None
    since: float
    until: float
    truncated: bool = Field(description="more points matched than the limit; these are the newest")
    raw: list[RawPoint] | None = None
    hourly: list[HourlyPoint] | None = None


class CommandOut(BaseModel):
    id: str
    kind: str = Field(description="command | ack | config | replay")
    site: str
    gateway: str
    issuer: str | None
    on_behalf_of: str | None
    action: str | None
    target: str | None
    params: Any = None
    intent: str | None = Field(description="what the person asked, in words, as shown when they acted")
    created_at: float
    valid_until: float | None
    status: str = Field(description="pending | sent | expired | accepted | executed | rejected | failed")
    reason: str | None
    detail: str | None
    sent_at: float | None
    sends: int
    result_at: float | None


class CommandDetail(CommandOut):
    envelope: dict[str, Any] | None
    result: dict[str, Any] | None
