"""Models of every message on the broker, by topic leaf: the source of docs/schemas/*.json.

``MESSAGES`` maps a topic leaf (core.protocol.topics) to the model of what travels on it.
Records are told apart by ``type`` (a discriminated union), so a record of a type the
contract does not have, or a field a record does not have, fails validation.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, Field

from core.protocol.messages.alerts import LIFECYCLE, AlertAckRejected
from core.protocol.messages.batch import TelemetryBatch, batch_model
from core.protocol.messages.commands import ACTUATOR_EVENTS, CmdAudit, CmdJunk, CmdResult, ConfigResult, ReplayResult
from core.protocol.messages.controls import CONTROL_EVENTS
from core.protocol.messages.envelopes import AckEnvelope, Command, ConfigEnvelope, ReplayEnvelope
from core.protocol.messages.events import (CameraDetector, CameraStatus, CameraWatchdog, DeviceStatus, FallDetected,
                                           FallEvidence, FallResolved, StoreCorrupt, StoreDegraded, StoreRecovered)
from core.protocol.messages.meta import Meta
from core.protocol.messages.state import State


def _union(*models: type[BaseModel]):
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - a runtime tuple of models


EVENT_TYPES = (DeviceStatus, StoreCorrupt, StoreDegraded, StoreRecovered,
               *LIFECYCLE, AlertAckRejected, CmdAudit, CmdJunk, *ACTUATOR_EVENTS, *CONTROL_EVENTS,
               FallDetected, FallResolved, FallEvidence, CameraStatus, CameraWatchdog, CameraDetector)
RESULT_TYPES = (CmdResult, ConfigResult, ReplayResult)

EventBatch = batch_model("EventBatch", _union(*EVENT_TYPES), ("event", "alarm"),
                         "…/event: every event and alarm record, including a copy of each alert lifecycle record.")
AlertBatch = batch_model("AlertBatch", _union(*LIFECYCLE), ("alarm", "event"),
                         "…/alert/{group}: the lifecycle records of the alerts that reached this group.")
ResultBatch = batch_model("ResultBatch", _union(*RESULT_TYPES), ("event",),
                          "…/cmd/result: answers to signed commands, config bundles and replay requests.")

# topic leaf -> model; also the name of its schema file (docs/schemas/{name}.json)
MESSAGES: dict[str, tuple[str, type[BaseModel]]] = {
    "telemetry": ("telemetry", TelemetryBatch),
    "event": ("event", EventBatch),
    "alert/{group}": ("alert-group", AlertBatch),
    "cmd/result": ("cmd-result", ResultBatch),
    "state": ("state", State),
    "meta": ("meta", Meta),
    "cmd": ("cmd", Command),
    "alert/ack": ("alert-ack", AckEnvelope),
    "config": ("config", ConfigEnvelope),
    "replay": ("replay", ReplayEnvelope),
}
