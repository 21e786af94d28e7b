"""What a fall leaves the board as: the ``fall.detected`` / ``fall.resolved`` fields and the alert's arguments.

Metadata only (camera, location, confidence, times, a keypoint summary; no
pixels).  The fall logic runs on the camera's monotonic timeline; the frame
that completed an event relates it to epoch time, which is what the records
carry.  Pure and import-light: the service uses it on boards without OpenCV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from inference.fall import FallEvent, FallResolved

if TYPE_CHECKING:
    from inference.config import CameraConfig
    from inference.pipeline import Frame

ALERT_RULE = "camera.fall"  # rules.external."camera.fall" in the site file gives it a class (escalation) and outputs
DEFAULT_DETECTOR = "fall"


def subject(camera_id: str, detector_id: str) -> str:
    """The alert's subject: the camera (and the detector when it is not the default one)."""
    return camera_id if detector_id == DEFAULT_DETECTOR else f"{camera_id}/{detector_id}"


def _epoch(frame: "Frame") -> Callable[[float], float]:
    offset = frame.wall - frame.ts  # camera timeline -> epoch
    return lambda t: round(t + offset, 3)


def detected_fields(camera: "CameraConfig", plugin, ev: FallEvent, frame: "Frame", location: dict) -> dict:
    """``fall.detected``: ``plugin`` is the detector plugin that raised it (its ``id`` and ``cfg``)."""
    wall = _epoch(frame)
    h, w = frame.image.shape[:2]
    stillness = plugin.cfg.fall.stillness_seconds
    return dict(
        fall_id=f"{camera.id}-{plugin.id}-{int(wall(ev.lying_at) * 1000)}", detector=plugin.id,
        subject=subject(camera.id, plugin.id), severity=plugin.cfg.severity,
        location=location, zone=location.get("zone"), confidence=ev.confidence,
        fell_at=wall(ev.fell_at), lying_at=wall(ev.lying_at), still_since=wall(ev.still_since),
        stillness_seconds=stillness, window_closed_at=wall(ev.still_since + stillness),
        detected_at=wall(ev.at), transition_seconds=ev.transition_seconds, drop_torso=ev.drop,
        axis_deg=ev.angle, aspect=ev.aspect, height_ratio=ev.height_ratio, score=ev.score,
        keypoints=ev.pose.summary(w, h), frame_seq=frame.seq,
    )


def resolved_fields(camera: "CameraConfig", plugin, ev: FallResolved, frame: "Frame", location: dict,
                    fall_id: str | None) -> dict:
    """``fall.resolved``; ``fall_id`` is the open fall's (None if the runner did not see it open)."""
    wall = _epoch(frame)
    return dict(fall_id=fall_id, detector=plugin.id, subject=subject(camera.id, plugin.id), location=location,
                resolved_at=wall(ev.at), fell_at=wall(ev.fell_at), lying_seconds=ev.lying_seconds, reason=ev.reason)


def alert_args(camera: "CameraConfig", fields: dict) -> dict:
    """``AlertEngine.raise_alert`` arguments: metadata only (the keypoint summary rides in ``readings``)."""
    detail = {k: fields[k] for k in ("fall_id", "confidence", "fell_at", "lying_at", "still_since", "stillness_seconds",
                                     "window_closed_at", "detected_at", "axis_deg", "keypoints") if k in fields}
    return {"rule": ALERT_RULE, "subject": subject(camera.id, fields["detector"]), "severity": fields["severity"],
            "device": camera.id, "location": fields["location"],
            "facts": {"camera": camera.id, "zone": fields.get("zone"), "confidence": fields["confidence"],
                      "fall_id": fields["fall_id"]},
            "readings": [{"camera": camera.id, "detector": fields["detector"], **detail}], "ts": fields["detected_at"]}
