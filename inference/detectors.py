"""Detector plugins: each has a typed config (inference.config) and two halves.

- ``load()`` and ``infer(frame, hint)`` run in the camera's worker thread
  (model, numpy, OpenCV);
- ``observe(t, result, moving)`` runs on the event loop and turns results into
  events with pure logic.

``REGISTRY`` maps the config's ``type`` tag to the plugin class.  A new plugin
(``ssd_boxes`` next) adds its config model to ``inference.config.Detector`` and
its class here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inference.artifacts import POSE_DETECTION
from inference.config import CameraConfig, PoseFallDetector
from inference.fall import FallParams, FallTracker, PoseSample


@dataclass(frozen=True, slots=True)
class PoseResult:
    sample: PoseSample  # the tracked person (its person box, in frame pixels, blurs evidence)
    people: int


class PoseFallPlugin:
    kind = "pose_fall"

    def __init__(self, cfg: PoseFallDetector, camera: CameraConfig, resolve=lambda p: p):
        self.cfg = cfg
        self.camera = camera
        if cfg.model is None:
            self.model_path = str(POSE_DETECTION.path)
            self.sha256 = cfg.model_sha256 or POSE_DETECTION.sha256
        else:
            self.model_path = resolve(cfg.model)
            self.sha256 = cfg.model_sha256
        self.tracker = FallTracker(FallParams(**cfg.fall.model_dump()))
        self.detector = None
        self.runtime: str | None = None

    @property
    def id(self) -> str:
        return self.cfg.id

    # -- worker thread -------------------------------------------------------------
    def load(self) -> None:
        from inference.pose import PoseDetector

        self.detector = PoseDetector(self.model_path, num_threads=self.cfg.num_threads,
                                     min_score=self.cfg.score_threshold, sha256=self.sha256)
        self.runtime = self.detector.runtime

    def infer(self, frame, hint: tuple[float, float] | None = None) -> PoseResult | None:
        """The tracked person: nearest to ``hint`` (the last hip) if close, else the best score."""
        h = frame.shape[0]
        poses = [p for p in self.detector.detect(frame) if p.torso >= self.cfg.min_person * h]
        if not poses:
            return None
        best = max(poses, key=lambda p: p.score)
        if hint is not None and len(poses) > 1:
            near = min(poses, key=lambda p: math.dist(p.hip, hint))
            if math.dist(near.hip, hint) <= 1.5 * near.torso:
                best = near
        sample = PoseSample(best.hip, best.shoulder, best.score, best.person_box(), float(h))
        return PoseResult(sample, len(poses))

    # -- event loop ----------------------------------------------------------------
    def hint(self) -> tuple[float, float] | None:
        p = self.tracker.last_pose
        return p.hip if p is not None else None

    def active(self) -> bool:
        """Somebody is being followed (periodic re-checks needed even without motion)."""
        return self.tracker.state != "idle"

    def observe(self, t: float, result: PoseResult | None, moving: bool) -> list:
        return self.tracker.update(t, result.sample if result is not None else None, moving)


REGISTRY = {"pose_fall": PoseFallPlugin}


def build(camera: CameraConfig, resolve=lambda p: p) -> list:
    return [REGISTRY[d.type](d, camera, resolve) for d in camera.detectors]
