"""Frame sources: open a URL, V4L2 or file source with OpenCV and feed sampled frames to the buffer.

One ``Reader`` thread per camera (OpenCV blocks).  It reconnects with
jittered backoff for ever, skips the frames it does not analyse without
decoding them (``grab``), decodes the sampled ones (``retrieve``) and hands
them to the :class:`~inference.framebuffer.FrameBuffer`.  It knows nothing of
the runner: what it needs is in a :class:`Feed`, and it reports its state with
``Feed.report`` (the runner hops that onto the event loop).
"""

from __future__ import annotations

import collections
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import cv2

from core.backoff import Backoff
from inference.config import CameraConfig, FileSource, UrlSource, V4l2Source
from inference.framebuffer import FrameBuffer
from inference.pipeline import Frame, FrameSampler

DEFAULT_FILE_FPS = 25.0  # a file that does not say (or says nonsense)


def open_capture(src, resolve) -> cv2.VideoCapture:
    """An OpenCV capture for the source (not necessarily opened: check ``isOpened()``)."""
    if isinstance(src, UrlSource):
        if src.url.lower().startswith("rtsp") and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{src.transport}"
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(src.open_timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(src.read_timeout * 1000)]
        return cv2.VideoCapture(src.url, cv2.CAP_FFMPEG, params)
    if isinstance(src, V4l2Source):
        dev = int(src.device) if src.device.isdigit() else src.device
        cap = cv2.VideoCapture(dev, cv2.CAP_V4L2)
        if cap.isOpened():
            if src.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*src.fourcc))
            if src.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, src.width)
            if src.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, src.height)
            if src.capture_fps:
                cap.set(cv2.CAP_PROP_FPS, src.capture_fps)
        return cap
    path = resolve(src.path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    return cv2.VideoCapture(path)


class FileTimeline:
    """Media time of a video file's frames; a loop starts the file again and time keeps increasing."""

    def __init__(self, cap: cv2.VideoCapture, src: FileSource):
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and math.isfinite(fps) and 0 < fps <= 240 else DEFAULT_FILE_FPS
        self.loop = src.loop
        self.realtime = src.realtime
        self.index = 0  # frame index within the file
        self.offset = 0.0  # media seconds of the loops before this one
        self.start_mono = time.monotonic()
        self.base_ts: float | None = None  # replay: the camera time of media time 0

    def rewind(self) -> None:
        self.offset += self.index / self.fps
        self.index = 0

    def next_media(self) -> float:
        media = self.offset + self.index / self.fps
        self.index += 1
        return media


@dataclass(frozen=True, slots=True)
class Feed:
    """Everything a reader needs of its camera, so that it needs nothing else."""

    buffer: FrameBuffer
    report: Callable[[int, str, str | None], None]  # (generation, status, detail), called in the reader thread
    next_seq: Callable[[], int]
    counters: collections.Counter
    mono0: float  # the camera's clock at start (monotonic, epoch): replays derive wall time from them
    wall0: float


class Reader(threading.Thread):
    """Opens the source and feeds sampled frames into the buffer until told to stop or abandoned."""

    def __init__(self, cfg: CameraConfig, clock, resolve, feed: Feed, gen: int, initial_delay: float = 0.0):
        super().__init__(name=f"camera-{cfg.id}-reader-{gen}", daemon=True)
        self.cfg = cfg
        self.clock = clock
        self.resolve = resolve
        self.feed = feed
        self.gen = gen
        self.initial_delay = initial_delay
        self.stop_event = threading.Event()
        self.heartbeat = time.monotonic()
        self.state = "starting"  # starting, connecting, running, backoff, ended, stopped
        self.frames_read = 0
        self.frames_sampled = 0

    def alive_and_current(self) -> bool:
        return not self.stop_event.is_set()

    def _waiting(self) -> bool:
        """While a replay waits for buffer space it is not stalled (the analysis is the slow side)."""
        self.heartbeat = time.monotonic()
        return self.alive_and_current()

    def _status(self, status: str, detail: str | None = None) -> None:
        self.state = status
        self.heartbeat = time.monotonic()
        self.feed.report(self.gen, status, detail)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; False if stopped."""
        return not self.stop_event.wait(seconds)

    # -- connect, read, reconnect ------------------------------------------------------
    def run(self) -> None:
        src = self.cfg.source
        backoff = Backoff(src.backoff_initial, src.backoff_max)
        if self.initial_delay and not self._sleep(self.initial_delay):
            return
        while self.alive_and_current():
            self._status("connecting")
            cap, err = self._open(src)
            if cap is None:
                if not self.alive_and_current():
                    return
                delay = backoff.next()
                self._status("backoff", f"{err}; retrying in {delay:.1f} s")
                if not self._sleep(delay):
                    return
                continue
            try:
                outcome = self._read(cap, src)
            finally:
                cap.release()
            if outcome == "stopped" or not self.alive_and_current():
                return
            if outcome == "ended":
                self._status("ended", "end of the video file")
                return
            if outcome == "ok":  # it delivered frames: start the backoff again from the beginning
                backoff.reset()
            delay = backoff.next()
            self._status("backoff", f"stream dropped; reconnecting in {delay:.1f} s")
            if not self._sleep(delay):
                return

    def _open(self, src) -> tuple[cv2.VideoCapture | None, str]:
        """An opened capture, or None and why not (released)."""
        try:
            cap = open_capture(src, self.resolve)
            if cap.isOpened():
                return cap, ""
        except Exception as exc:  # noqa: BLE001 - any failure to open is retried
            return None, f"{type(exc).__name__}: {exc}"
        cap.release()
        return None, f"cannot open {src.describe()}"

    # -- the per-frame path -------------------------------------------------------------
    def _read(self, cap: cv2.VideoCapture, src) -> str:
        """Frames until the source ends ("ended"), drops ("ok" after frames, else "failed") or we stop ("stopped")."""
        timeline = FileTimeline(cap, src) if isinstance(src, FileSource) else None
        sampler = FrameSampler(1.0 / self.cfg.fps)
        delivered = 0
        self._status("running")
        while self.alive_and_current():
            ok = cap.grab()
            self.heartbeat = time.monotonic()
            if not ok:
                outcome = self._grab_failed(cap, timeline, delivered)
                if outcome is not None:
                    return outcome
            self.frames_read += 1
            ts = self._frame_time(timeline)
            if ts is None:
                return "stopped"
            if not sampler.due(ts):
                continue  # not analysed: never decoded
            ok, image = cap.retrieve()
            if not ok or image is None:
                self.feed.counters["decode_errors"] += 1
                continue
            self._deliver(ts, image)
            delivered += 1
        return "stopped"

    def _grab_failed(self, cap: cv2.VideoCapture, timeline: FileTimeline | None, delivered: int) -> str | None:
        """The outcome of a failed grab, or None when a looping file started again (a frame is grabbed)."""
        if timeline is None:
            return "ok" if delivered else "failed"
        if not (timeline.loop and timeline.index > 0):
            return "ended"
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # replay from the start; timestamps keep increasing
        timeline.rewind()
        return None if cap.grab() else "failed"

    def _frame_time(self, timeline: FileTimeline | None) -> float | None:
        """The grabbed frame's time on the camera's timeline; None if stopped while pacing a file."""
        if timeline is None:
            return self.clock.monotonic()
        media = timeline.next_media()
        if not timeline.realtime:
            if timeline.base_ts is None:
                timeline.base_ts = self.clock.monotonic()
            return timeline.base_ts + media
        wait = timeline.start_mono + media - time.monotonic()
        if wait > 0 and not self._sleep(wait):
            return None
        return self.clock.monotonic()

    def _deliver(self, ts: float, image) -> None:
        self.frames_sampled += 1
        realtime = self.cfg.realtime
        wall = self.clock.time() if realtime else (self.feed.wall0 + (ts - self.feed.mono0))
        frame = Frame(self.feed.next_seq(), ts, wall, image)
        self.feed.buffer.put(frame, block=not realtime, alive=self._waiting)
        self.heartbeat = time.monotonic()
