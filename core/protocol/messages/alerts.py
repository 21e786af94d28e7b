"""Alert lifecycle records (docs/alerts.md#records-on-the-broker, docs/protocol.md#alert-lifecycle).

raised -> (delivered: the broker's PUBACK of the raise) -> escalated* -> acknowledged -> resolved,
with ``alert.updated`` for a later severity change.  In v2 every lifecycle record goes to
``…/event`` and to ``…/alert/{group}`` of every group the alert has reached (``groups``);
all copies are the same record with the same ``(epoch, lane, seq)``.  A group paged by an
escalation also gets the raise, as a record of its own that names the raise in ``copy_of``:
a record's key is its ``copy_of`` when it has one, else its own ``(epoch, lane, seq)``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from core.protocol.messages.base import Labels, Lane, Place, Record, Severity, Strict, Value


class RecordKey(Strict):
    """Which record a copy repeats: the original's own ``(epoch, lane, seq)``, its key for de-duplication."""

    epoch: str = Field(pattern=r"^[0-9a-f]{16}$", description="the epoch the original was committed in")
    lane: Lane
    seq: int = Field(ge=1, description="the original's seq in that epoch and lane")


class AlertRecord(Record):
    """What every lifecycle record of one alert repeats, so each can be read alone."""

    alert: str = Field(description="the alert id, `{n}-{4 hex}`, unique per gateway; acks name it")
    rule: str
    cls: str | None = Field(alias="class", description="the alert class (its escalation chain), or null")
    severity: Severity
    subject: str = Field(description="a device id, a household, or `*` (site-wide)")
    device: str | None
    location: Place
    raised_at: float
    groups: list[str] = Field([], description="v2: every group the alert has been sent to so far (the copies' topics)")
    incident: str | None = Field(None, description="v2: the incident its rules are grouped in (`rules.incidents`), or null")
    rules: list[str] = Field([], description="v2: every rule that joined the alert (an incident's members), in order")
    message_key: str | None = Field(None, description="v2: what the text says, for a screen that renders its own words: "
                                                      "a default template (`threshold.above`), `rule:{id}` or `incident:{name}`")
    params: dict[str, Value] = Field({}, description="v2: the text's parameters (raw numbers, ids, location parts)")
    texts: Labels = Field({}, description="v2: this record's ready line for people, by language tag (`en`, `zh-CN`)")


class _Paged(AlertRecord):
    step: int = Field(ge=0, description="escalation step: 0 is the first group")
    group: str | None = Field(description="the group this step pages (null without a class)")
    recipients: list[str]
    next_escalation_at: float | None
    readings: list[dict[str, Any]] = Field(max_length=8)
    message: str
    lang: str


class AlertRaised(_Paged):
    """Alarm lane.  "delivered" is the broker's PUBACK of this record on the first group's topic."""

    type: Literal["alert.raised"]
    status: Literal["raised"]
    copy_of: RecordKey | None = Field(None, description="v2: on a group paged by an escalation, this record is a copy "
                                                        "of the raise: the raise's key, on which receivers de-duplicate")


class AlertEscalated(_Paged):
    """Alarm lane: a step of the chain fell due with nobody acknowledging."""

    type: Literal["alert.escalated"]
    status: Literal["escalated"]


class AlertAcknowledged(AlertRecord):
    """Event lane: the first (signed) ack."""

    type: Literal["alert.acknowledged"]
    status: Literal["acknowledged"]
    by: str | None = Field(description="the person who acknowledged (the ack's on_behalf_of, else its issuer)")
    note: str | None
    step: int = Field(ge=0, description="the last escalation step that went out")
    issuer: str | None = Field(None, description="v2: the key id that signed the ack")
    ack: str | None = Field(None, description="v2: the ack envelope's id")


class AlertResolved(AlertRecord):
    """Event lane: the condition cleared, an ack resolved it, or its rule left the config."""

    type: Literal["alert.resolved"]
    status: Literal["resolved"]
    resolved_by: str | None = Field(description="`condition`, `ack:{name}`, `rule removed`, or what the camera said")
    acked_by: str | None
    ack: str | None = Field(None, description="v2: the id of the ack envelope that resolved it (when one did)")
    duration: float = Field(description="seconds from the raise to the resolution")
    readings: list[dict[str, Any]] = Field(max_length=8)
    message: str
    lang: str


class AlertUpdated(AlertRecord):
    """v2, alarm lane: the severity of an open alert changed (``previous_severity`` -> ``severity``)."""

    type: Literal["alert.updated"]
    status: Literal["raised", "delivered", "escalated", "acknowledged"]
    previous_severity: Severity
    step: int = Field(ge=0)
    readings: list[dict[str, Any]] = Field(max_length=8)
    message: str
    lang: str


class AlertAckRejected(Record):
    """Event lane: an ack that named an unknown alert, changed nothing, or was not signed (``unsigned_ack``)."""

    type: Literal["alert.ack_rejected"]
    alert: str
    by: str
    reason: str = Field(description="`unknown alert`, `already acknowledged`, `already resolved`, `unsigned_ack`, …")
    detail: str | None = Field(None, description="v2: what to do about it")
    id: str | None = Field(None, description="v2: the ack envelope's id, when it had one")


LIFECYCLE = (AlertRaised, AlertEscalated, AlertAcknowledged, AlertResolved, AlertUpdated)
