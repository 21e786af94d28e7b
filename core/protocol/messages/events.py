"""Event records of the poller, the outbox and the cameras (docs/protocol.md#event-and-alarm-records, cameras.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.protocol.messages.base import Id, OpenRecord, Place, Record, Severity, Strict

PollStatus = Literal["ok", "timeout", "unreachable", "exception", "bad_reply", "quarantined", "error"]


class DeviceStatus(Record):
    """A device's poll status changed (``gateway/runtime.py``); never the first unknown -> ok."""

    type: Literal["device.status"]
    device: Id
    bus: Id
    status: PollStatus
    previous: PollStatus | Literal["unknown"]
    detail: str = Field(description="a readable reason, or empty for ok")


class StoreCorrupt(Record):
    """Alarm lane, first record of a new epoch: the outbox file failed its check and was moved aside."""

    type: Literal["store.corrupt"]
    severity: Literal["critical"]
    moved_to: str
    detail: str


StoreReason = Literal["disk_full", "io_error", "read_only", "deleted", "replaced", "error"]


class StoreDegraded(Record):
    """Alarm lane: the outbox cannot commit (or its file went); alarms and events go out from memory meanwhile."""

    type: Literal["store.degraded"]
    severity: Literal["critical"]
    reason: StoreReason
    detail: str = Field(description="SQLite's (or the file check's) reason")
    path: str = Field(description="the outbox file")
    memory_epoch: str | None = Field(description="the epoch of the records published from memory until it recovers")


class StoreRecovered(Record):
    """Event lane: the outbox commits again; everything held in memory is committed (or counted, if delivered)."""

    type: Literal["store.recovered"]
    reason: StoreReason
    after_seconds: float
    memory_epoch: str | None
    held: int = Field(ge=0, description="alarm and event records held in memory and committed since the alarm")
    delivered_from_memory: int = Field(ge=0, description="of them, acknowledged by the broker first: counted, not stored")
    moved_to: str | None = Field(description="a file found at the outbox's path when it was put back, kept there")


# -- cameras (inference/) ----------------------------------------------------------------------
class Keypoints(Strict):
    """The pose summary of a fall: fractions of the frame, never pixels."""

    score: float
    hip: tuple[float, float]
    shoulder: tuple[float, float]
    axis_deg: float
    box: tuple[float, float, float, float] | None = None


class FallDetected(OpenRecord):
    """A detector saw a fall; event lane with ``alert`` set, alarm lane without rules.  Detector metrics may be added."""

    type: Literal["fall.detected"]
    camera: Id
    alert: str | None = Field(None, description="the alert raised for it, when the alert engine took it")
    fall_id: str
    detector: str
    subject: str
    severity: Severity
    location: Place
    zone: str | None
    confidence: float
    fell_at: float
    lying_at: float
    still_since: float
    stillness_seconds: float
    window_closed_at: float
    detected_at: float
    transition_seconds: float | None = None
    drop_torso: float | None = None
    axis_deg: float | None = None
    aspect: float | None = None
    height_ratio: float | None = None
    score: float | None = None
    keypoints: Keypoints | None = None
    frame_seq: int | None = None


class FallResolved(Record):
    type: Literal["fall.resolved"]
    camera: Id
    fall_id: str | None
    detector: str
    subject: str
    location: Place
    resolved_at: float
    fell_at: float
    lying_seconds: float
    reason: str


class FallEvidence(Record):
    """Only with ``privacy.send_evidence: true``: a blurred, shrunk JPEG."""

    type: Literal["fall.evidence"]
    camera: Id
    fall_id: str
    blurred: Literal[True]
    content_type: Literal["image/jpeg"]
    jpeg_base64: str


class CameraStatus(Record):
    type: Literal["camera.status"]
    camera: Id
    status: str
    previous: str | None
    detail: str | None
    source: str | None = None


class CameraWatchdog(Record):
    type: Literal["camera.watchdog"]
    camera: Id
    what: Literal["stream_stalled", "detector_hung"]
    after_seconds: float
    action: Literal["restart"]
    restarts: int
    retry_in: float
    source: str | None = None


class CameraDetector(Record):
    type: Literal["camera.detector"]
    camera: Id
    status: Literal["ok", "error"]
    detail: str | None
