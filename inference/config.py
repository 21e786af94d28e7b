"""Typed camera/detector config (no OpenCV/numpy import here: sensor-only boards load it too).

The site file's ``cameras:`` list validates against :class:`CameraConfig`.
Unknown keys are errors.  Tagged unions (key ``type``):

- ``source``: ``url`` (RTSP/HTTP stream), ``v4l2`` (a local camera), ``file`` (a video, looping);
- ``detectors[]``: ``pose_fall`` (MediaPipe pose detector + fall logic).  The next
  plugin (``ssd_boxes``: SSD-style box detector with zones) adds a model to
  :data:`Detector` and an entry to ``inference.detectors.REGISTRY``.

docs/cameras.md describes every key.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal, Union
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from core.model import Id, Location, Strict

SOURCE_TYPES = ("url", "v4l2", "file")
DETECTOR_TYPES = ("pose_fall",)


# --------------------------------------------------------------------------- sources
class _SourceCommon(Strict):
    open_timeout: float = Field(10.0, gt=0, le=120, description="seconds to wait for a stream to open")
    read_timeout: float = Field(5.0, gt=0, le=120, description="seconds a read may block before the stream counts as dropped")
    backoff_initial: float = Field(1.0, gt=0, le=60, description="first delay before reopening a dropped source")
    backoff_max: float = Field(30.0, gt=0, le=3600, description="longest delay between reopen attempts (jittered, forever)")


class UrlSource(_SourceCommon):
    """An RTSP or HTTP(S) stream (MJPEG, H.264...), opened with OpenCV's FFmpeg backend."""

    type: Literal["url"]
    url: str = Field(min_length=8, max_length=2048, description="rtsp://, rtsps://, http:// or https:// URL; ${ENV} for secrets")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport (tcp survives lossy links)")

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        scheme = urlsplit(v).scheme.lower()
        if scheme not in ("rtsp", "rtsps", "http", "https"):
            raise ValueError(f"url must start with rtsp://, rtsps://, http:// or https:// (got {scheme or 'no scheme'}://)")
        return v

    def describe(self) -> str:
        """The URL without credentials (for logs, state and events)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return f"{parts.scheme}://{host}{parts.path}"


class V4l2Source(_SourceCommon):
    """A local camera through Video4Linux2."""

    type: Literal["v4l2"]
    device: str = Field(description="/dev/video0, /dev/v4l/by-id/... (stable), or an index such as 0")
    width: int | None = Field(None, ge=16, le=7680, description="requested capture width")
    height: int | None = Field(None, ge=16, le=4320, description="requested capture height")
    capture_fps: float | None = Field(None, gt=0, le=240, description="requested capture rate")
    fourcc: str | None = Field(None, pattern=r"^[A-Za-z0-9 ]{4}$", description="requested pixel format, e.g. MJPG or YUYV")

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v):
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        if isinstance(v, str) and (v.isdigit() or v.startswith("/dev/")):
            return v
        raise ValueError(f"device must be /dev/videoN, /dev/v4l/by-id/... or an index (got {v!r})")

    def describe(self) -> str:
        return f"v4l2:{self.device}"


class FileSource(_SourceCommon):
    """A video file (replay, the simulator's scenarios)."""

    type: Literal["file"]
    path: str = Field(min_length=1, description="video file, relative to the config file")
    loop: bool = Field(True, description="start again at the end; false: the camera ends with the file")
    realtime: bool = Field(True, description="play at the file's frame rate; false: as fast as analysis goes (replay, no drops)")

    def describe(self) -> str:
        return f"file:{os.path.basename(self.path)}"


Source = Annotated[Union[UrlSource, V4l2Source, FileSource], Field(discriminator="type")]


# --------------------------------------------------------------------------- motion gate
Point = tuple[float, float]


class MotionConfig(Strict):
    """Frame differencing on a small grey frame decides whether the detectors run."""

    enabled: bool = Field(True, description="false: run the detectors on every analysed frame")
    width: int = Field(160, ge=32, le=640, description="width of the downscaled frame the gate compares")
    threshold: int = Field(20, ge=1, le=255, description="grey-level change that counts a pixel as changed")
    min_area: float = Field(0.003, gt=0, le=1, description="share of the unmasked frame that must change")
    compensate_lighting: bool = Field(True, description="ignore a change of the whole frame's brightness (lights, clouds)")
    masks: list[list[Point]] = Field(default_factory=list,
                                     description="polygons ignored by the gate, points as [x, y] fractions of the frame (0..1)")
    recheck_seconds: float = Field(1.0, gt=0, le=60, description="run the detectors at least this often while somebody is in view")

    @field_validator("masks")
    @classmethod
    def _polygons(cls, v: list[list[Point]]) -> list[list[Point]]:
        for i, poly in enumerate(v):
            if len(poly) < 3:
                raise ValueError(f"mask {i} needs at least 3 points (got {len(poly)})")
            for x, y in poly:
                if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                    raise ValueError(f"mask {i}: point [{x}, {y}] is outside the frame; use fractions 0..1 of width and height")
        return v


# --------------------------------------------------------------------------- detectors
class FallLogic(Strict):
    """When a sequence of poses is a fall (docs/cameras.md, "Fall logic")."""

    upright_max_deg: float = Field(30.0, ge=5, le=60, description="body axis within this of vertical: upright")
    lying_min_deg: float = Field(60.0, ge=30, le=89, description="body axis at least this far from vertical: lying")
    transition_max_seconds: float = Field(1.0, gt=0, le=5, description="upright to lying within this: a fall, not lying down")
    min_drop: float = Field(0.5, ge=0, le=5, description="hip descent during the fall, in torso lengths")
    stillness_seconds: float = Field(5.0, ge=0.5, le=300, description="lying still this long after the fall: alert")
    still_tolerance: float = Field(0.35, gt=0, le=5, description="movement still counted as still, in torso lengths")
    recovery_seconds: float = Field(2.0, ge=0, le=300, description="upright this long after a fall: resolved")
    lost_seconds: float = Field(10.0, gt=0, le=600, description="a candidate is dropped after this long unseen while things move")
    min_confidence: float = Field(0.5, ge=0, le=1, description="alerts below this confidence are not raised")
    give_up_seconds: float = Field(60.0, gt=0, le=3600, description="a fall never followed by stillness is forgotten after this long")

    @model_validator(mode="after")
    def _order(self) -> "FallLogic":
        if self.lying_min_deg <= self.upright_max_deg:
            raise ValueError(f"lying_min_deg ({self.lying_min_deg:g}) must be larger than upright_max_deg ({self.upright_max_deg:g})")
        if self.give_up_seconds <= self.stillness_seconds:
            raise ValueError(f"give_up_seconds ({self.give_up_seconds:g}) must be longer than stillness_seconds ({self.stillness_seconds:g})")
        return self


class PoseFallDetector(Strict):
    """MediaPipe pose detector (hip and shoulder keypoints) on LiteRT, and the fall logic."""

    type: Literal["pose_fall"]
    id: Id = Field("fall", description="detector id, unique within the camera (part of the alert's subject)")
    model: str | None = Field(None, description="pose_detection.tflite path (relative to the config file); "
                                                 "default: the pinned model fetched by scripts/fetch_models.py")
    model_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$",
                                     description="refuse the model unless it has this sha256 (default model: always checked)")
    num_threads: int = Field(1, ge=1, le=8, description="LiteRT interpreter threads")
    score_threshold: float = Field(0.5, gt=0, lt=1, description="minimum detection score")
    min_person: float = Field(0.04, ge=0, le=1, description="ignore people whose torso is shorter than this share of the frame height")
    severity: Literal["critical", "warning", "info"] = "critical"
    fall: FallLogic = FallLogic()


Detector = Annotated[Union[PoseFallDetector], Field(discriminator="type")]


# --------------------------------------------------------------------------- privacy
class PrivacyConfig(Strict):
    """Nothing but metadata leaves the board unless ``send_evidence`` says otherwise."""

    evidence: bool = Field(False, description="keep a blurred snapshot of each fall on the board")
    evidence_dir: str = Field("evidence", description="folder for snapshots (relative to the outbox's folder), mode 0700")
    blur: Literal["person", "frame"] = Field("person", description="blur the whole person box, or the whole frame")
    retention_days: float = Field(7.0, gt=0, le=365, description="snapshots older than this are deleted")
    max_files: int = Field(200, ge=1, le=100000, description="at most this many snapshots per camera (oldest deleted)")
    send_evidence: bool = Field(False, description="also publish the blurred snapshot (a JPEG in an event); needs evidence: true")
    max_evidence_bytes: int = Field(48 * 1024, ge=4096, le=512 * 1024, description="largest snapshot sent (it is shrunk to fit)")

    @model_validator(mode="after")
    def _needs_evidence(self) -> "PrivacyConfig":
        if self.send_evidence and not self.evidence:
            raise ValueError("send_evidence needs evidence: true (only a blurred local snapshot can be sent)")
        return self


class WatchdogConfig(Strict):
    stall_seconds: float = Field(5.0, ge=1, le=300, description="no frame for this long: the stream is restarted")
    detector_timeout: float = Field(5.0, ge=0.5, le=300, description="an inference taking longer: the detector is restarted")
    backoff_initial: float = Field(1.0, gt=0, le=60, description="first delay before a restart")
    backoff_max: float = Field(60.0, gt=0, le=3600, description="longest delay between restarts")


class CameraConfig(Strict):
    id: Id
    enabled: bool = True
    source: Source
    fps: float = Field(10.0, ge=0.2, le=60, description="frames analysed per second (the rest are skipped undecoded)")
    buffer: int = Field(4, ge=1, le=256, description="analysed frames waiting; when full the oldest is dropped")
    motion: MotionConfig = MotionConfig()
    detectors: list[Detector] = Field(default_factory=lambda: [PoseFallDetector(type="pose_fall")], min_length=1,
                                      description="what runs on the frames (default: one pose_fall detector)")
    privacy: PrivacyConfig = PrivacyConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    location: Location | None = None

    @property
    def realtime(self) -> bool:
        """Frames carry their capture time: a live source, or a file played at its own rate (not a replay)."""
        return not isinstance(self.source, FileSource) or self.source.realtime

    @model_validator(mode="after")
    def _unique_detectors(self) -> "CameraConfig":
        seen: set[str] = set()
        for d in self.detectors:
            if d.id in seen:
                raise ValueError(f"detector id '{d.id}' is used twice on camera '{self.id}'")
            seen.add(d.id)
        return self


def validate_cameras(site, src, base_dir: str) -> list:
    """Cross-checks that need the whole site (gateway/config.py calls it); returns Problems (file:line:key)."""
    problems = []
    seen: dict[str, tuple] = {}
    device_ids = {dev.id for bus in getattr(site, "buses", []) for dev in bus.devices}
    for i, cam in enumerate(site.cameras):
        path = ("cameras", i)
        if cam.id in seen:
            problems.append(src.problem(path + ("id",), f"duplicate camera id '{cam.id}' (first at line {src.line_of(seen[cam.id])})"))
        elif cam.id in device_ids:
            problems.append(src.problem(path + ("id",), f"camera id '{cam.id}' is already a device id; ids must be unique"))
        seen.setdefault(cam.id, path + ("id",))
        s = cam.source
        if isinstance(s, FileSource):
            full = s.path if os.path.isabs(s.path) else os.path.join(base_dir, s.path)
            if not os.path.isfile(full):
                problems.append(src.problem(path + ("source", "path"), f"video file not found: {full}"))
        elif isinstance(s, V4l2Source) and s.device.startswith("/dev/") and not os.path.exists(s.device):
            pass  # a camera may be plugged in later: the source retries with backoff and reports it
        for j, det in enumerate(cam.detectors):
            if det.model is not None:
                full = det.model if os.path.isabs(det.model) else os.path.join(base_dir, det.model)
                if os.path.isdir(full):
                    problems.append(src.problem(path + ("detectors", j, "model"), f"is a folder, not a model file: {full}"))
    return problems
