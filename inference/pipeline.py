"""The per-frame work shared by the daemon (inference.runner) and offline replay (tests, bench).

``CameraCore`` holds one camera's motion gate and detector plugins.  Its
``analyse`` half runs in the camera's worker thread (OpenCV, LiteRT); its
``want_detect``/``observe`` half runs on the event loop (pure logic).
:func:`analyse_video` runs both halves in the calling thread over a video file,
sampled at the camera's analysis rate on the file's own clock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from inference.config import CameraConfig
from inference.detectors import build
from inference.motion import MotionGate


@dataclass(slots=True)
class Frame:
    seq: int
    ts: float  # seconds on the camera's monotonic timeline (capture time, or media time for replays)
    wall: float  # epoch seconds when captured
    image: np.ndarray


@dataclass(slots=True)
class FrameSampler:
    """Which frames get analysed: about one per ``step`` seconds of frame time (the rest are never decoded)."""

    step: float
    next_at: float = -math.inf

    def due(self, ts: float) -> bool:
        if ts + 1e-6 < self.next_at:
            return False
        self.next_at = max(self.next_at + self.step, ts + self.step * 0.5)
        return True


@dataclass(slots=True)
class Analysis:
    moving: bool
    ratio: float
    ran: bool  # the detectors ran on this frame
    results: dict = field(default_factory=dict)  # detector id -> result (None: nobody)
    infer_ms: float | None = None
    total_ms: float = 0.0


class CameraCore:
    def __init__(self, camera: CameraConfig, resolve=lambda p: p, plugins: list | None = None):
        self.camera = camera
        self.plugins = plugins if plugins is not None else build(camera, resolve)
        self.gate = MotionGate(camera.motion)
        self.last_run = -math.inf

    # -- worker thread ---------------------------------------------------------------
    def load(self) -> None:
        for p in self.plugins:
            p.load()

    def analyse(self, image: np.ndarray, want: bool, hints: dict) -> Analysis:
        t0 = time.perf_counter()
        if self.camera.motion.enabled:
            moving, ratio = self.gate(image)
        else:
            moving, ratio = True, 1.0
        a = Analysis(moving, ratio, False)
        if moving or want:
            t1 = time.perf_counter()
            a.results = {p.id: p.infer(image, hints.get(p.id)) for p in self.plugins}
            a.infer_ms = (time.perf_counter() - t1) * 1000
            a.ran = True
        a.total_ms = (time.perf_counter() - t0) * 1000
        return a

    # -- event loop ------------------------------------------------------------------
    def want_detect(self, ts: float) -> bool:
        """Run the detectors even without motion: somebody is in view and the last check is old."""
        if not self.camera.motion.enabled:
            return True
        return any(p.active() for p in self.plugins) and ts - self.last_run >= self.camera.motion.recheck_seconds

    def hints(self) -> dict:
        return {p.id: p.hint() for p in self.plugins}

    def observe(self, ts: float, a: Analysis) -> list[tuple[object, object]]:
        """Feed the analysis to every plugin's logic; returns (plugin, event) pairs."""
        if a.ran:
            self.last_run = ts
        out = []
        for p in self.plugins:
            result = a.results.get(p.id) if a.ran else None
            for ev in p.observe(ts, result, a.moving):
                out.append((p, ev))
        return out


@dataclass
class ReplayResult:
    frames_read: int = 0
    frames_analysed: int = 0
    inferences: int = 0
    events: list = field(default_factory=list)  # (media seconds, detector id, event)
    infer_ms: list = field(default_factory=list)
    analyse_ms: list = field(default_factory=list)
    decode_ms: list = field(default_factory=list)
    seconds: float = 0.0  # media duration
    wall_seconds: float = 0.0


def analyse_video(path: str, camera: CameraConfig, core: CameraCore | None = None, *, resolve=lambda p: p,
                  on_event=None) -> ReplayResult:
    """Replay a video file through the camera pipeline as fast as it goes (media time drives the logic)."""
    import cv2

    core = core or CameraCore(camera, resolve)
    if any(getattr(p, "detector", None) is None for p in core.plugins):
        core.load()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
    sampler = FrameSampler(1.0 / camera.fps, next_at=0.0)
    res = ReplayResult()
    t_start = time.perf_counter()
    i = 0
    try:
        while True:
            t0 = time.perf_counter()
            if not cap.grab():
                break
            t = i / fps
            i += 1
            res.frames_read += 1
            if not sampler.due(t):
                continue
            ok, img = cap.retrieve()
            if not ok:
                break
            res.decode_ms.append((time.perf_counter() - t0) * 1000)
            want = core.want_detect(t)
            a = core.analyse(img, want, core.hints())
            res.frames_analysed += 1
            res.analyse_ms.append(a.total_ms)
            if a.ran:
                res.inferences += 1
                res.infer_ms.append(a.infer_ms)
            for plugin, ev in core.observe(t, a):
                res.events.append((t, plugin.id, ev))
                if on_event is not None:
                    on_event(t, plugin, ev, img)
    finally:
        cap.release()
    res.seconds = max(0, i - 1) / fps
    res.wall_seconds = time.perf_counter() - t_start
    return res
