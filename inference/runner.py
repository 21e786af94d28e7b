"""One camera in the daemon: source thread -> bounded buffer -> worker thread -> fall logic -> records.

Threads, never the event loop, touch pixels:

- the **reader** (one daemon thread per camera) opens the source, reconnects
  with jittered backoff, skips frames it does not analyse without decoding them
  (``grab``), decodes the sampled ones (``retrieve``) and puts them in a bounded
  buffer that drops the oldest frame when full;
- the **worker** (one daemon thread per camera, holding the LiteRT interpreter)
  runs the motion gate and, when something moved, the detectors;
- the event loop runs the pure fall logic and emits records.

The watchdog restarts a reader that delivers nothing for ``stall_seconds`` and a
worker whose inference takes longer than ``detector_timeout`` (a wedged thread
cannot be killed in Python: it is abandoned — it is a daemon thread — and a new
one with a new interpreter takes over; at most ``MAX_ABANDONED`` are tolerated).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import queue
import threading
import time

import cv2

from core.backoff import Backoff
from inference.config import CameraConfig, FileSource, UrlSource, V4l2Source
from inference.pipeline import Analysis, CameraCore, Frame
from inference.pose import ModelError

log = logging.getLogger("canopy.camera")
cv2.setNumThreads(1)  # one worker thread per camera does the pixel work; OpenCV's own pool would only compete

MAX_ABANDONED = 3  # wedged threads tolerated per camera before giving up on restarts for a while
STABLE_SECONDS = 10.0  # frames flowing this long after a restart resets the backoff


# --------------------------------------------------------------------------- worker thread
class Worker:
    """A daemon thread that runs jobs in order and resolves asyncio futures."""

    def __init__(self, name: str):
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn, *args) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.q.put((fn, args, fut, loop))
        return fut

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            fn, args, fut, loop = item
            try:
                result, exc = fn(*args), None
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                result, exc = None, e
            try:
                loop.call_soon_threadsafe(_resolve, fut, result, exc)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def close(self) -> None:
        self.q.put(None)


def _resolve(fut: asyncio.Future, result, exc) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


# --------------------------------------------------------------------------- frame buffer
class FrameBuffer:
    """Bounded, thread-safe; a full buffer drops its oldest frame (live) or makes the reader wait (replay)."""

    def __init__(self, maxlen: int, loop: asyncio.AbstractEventLoop):
        self.q: collections.deque = collections.deque()
        self.maxlen = maxlen
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)
        self.loop = loop
        self.event = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, frame: Frame, block: bool = False, alive=lambda: True) -> None:
        with self.lock:
            if block:
                while len(self.q) >= self.maxlen and not self.closed and alive():
                    self.space.wait(0.2)
            while len(self.q) >= self.maxlen:
                self.q.popleft()
                self.dropped += 1
            self.q.append(frame)
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # loop closed during shutdown
            pass

    async def get(self) -> Frame:
        while True:
            with self.lock:
                if self.q:
                    frame = self.q.popleft()
                    self.space.notify()
                    return frame
                self.event.clear()
            await self.event.wait()

    def clear(self) -> None:
        with self.lock:
            self.q.clear()
            self.space.notify_all()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.space.notify_all()

    def __len__(self) -> int:
        return len(self.q)


# --------------------------------------------------------------------------- sources
def open_capture(src, resolve) -> cv2.VideoCapture:
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


class Reader(threading.Thread):
    """Opens the source and feeds sampled frames into the buffer until told to stop or abandoned."""

    def __init__(self, runner: "CameraRunner", gen: int, initial_delay: float = 0.0):
        super().__init__(name=f"camera-{runner.cfg.id}-reader-{gen}", daemon=True)
        self.r = runner
        self.gen = gen
        self.initial_delay = initial_delay
        self.stop_event = threading.Event()
        self.heartbeat = time.monotonic()
        self.state = "starting"  # starting, connecting, running, backoff, ended, stopped
        self.frames_read = 0
        self.frames_sampled = 0

    def alive_and_current(self) -> bool:
        return not self.stop_event.is_set() and self.r.reader_gen == self.gen

    def _waiting(self) -> bool:
        """While a replay waits for buffer space it is not stalled (the analysis is the slow side)."""
        self.heartbeat = time.monotonic()
        return self.alive_and_current()

    def _status(self, status: str, detail: str | None = None) -> None:
        self.state = status
        self.heartbeat = time.monotonic()
        self.r.from_thread(self.r.on_reader_status, self.gen, status, detail)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; False if stopped."""
        return not self.stop_event.wait(seconds)

    def run(self) -> None:
        src = self.r.cfg.source
        backoff = Backoff(src.backoff_initial, src.backoff_max)
        if self.initial_delay and not self._sleep(self.initial_delay):
            return
        while self.alive_and_current():
            self._status("connecting")
            try:
                cap = open_capture(src, self.r.resolve)
                opened = cap.isOpened()
            except Exception as exc:  # noqa: BLE001 - any failure to open is retried
                cap, opened = None, False
                err = f"{type(exc).__name__}: {exc}"
            else:
                err = f"cannot open {self.r.source_name}"
            if not opened:
                if cap is not None:
                    cap.release()
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

    def _read(self, cap: cv2.VideoCapture, src) -> str:
        is_file = isinstance(src, FileSource)
        realtime = not is_file or src.realtime
        file_fps = cap.get(cv2.CAP_PROP_FPS) if is_file else 0.0
        if not file_fps or not math.isfinite(file_fps) or file_fps <= 0 or file_fps > 240:
            file_fps = 25.0
        step = 1.0 / self.r.cfg.fps
        clock = self.r.clock
        delivered = 0
        index = 0  # frame index within the file (media time = index / file_fps)
        loop_offset = 0.0
        base_ts = None
        start_mono = time.monotonic()
        next_sample = -math.inf
        self._status("running")
        while self.alive_and_current():
            ok = cap.grab()
            self.heartbeat = time.monotonic()
            if not ok:
                if is_file and src.loop and index > 0:
                    # replay from the start; timestamps keep increasing
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    loop_offset += index / file_fps
                    index = 0
                    if not cap.grab():
                        return "failed"
                else:
                    return "ended" if is_file else ("ok" if delivered else "failed")
            self.frames_read += 1
            if is_file:
                media = loop_offset + index / file_fps
                index += 1
                if realtime:
                    due = start_mono + media
                    wait = due - time.monotonic()
                    if wait > 0 and not self._sleep(wait):
                        return "stopped"
                    ts = clock.monotonic()
                else:
                    if base_ts is None:
                        base_ts = clock.monotonic()
                    ts = base_ts + media
            else:
                ts = clock.monotonic()
            if ts + 1e-6 < next_sample:
                continue  # not analysed: never decoded
            next_sample = max(next_sample + step, ts + step * 0.5)
            ok, image = cap.retrieve()
            if not ok or image is None:
                self.r.counters["decode_errors"] += 1
                continue
            self.frames_sampled += 1
            wall = clock.time() if realtime else (self.r.wall0 + (ts - self.r.mono0))
            frame = Frame(self.r.next_seq(), ts, wall, image)
            self.r.buffer.put(frame, block=not realtime, alive=self._waiting)
            self.heartbeat = time.monotonic()
            delivered += 1
        return "stopped"


# --------------------------------------------------------------------------- the camera
class CameraRunner:
    def __init__(self, cfg: CameraConfig, clock, resolve, sink, location: dict, evidence_root: str):
        self.cfg = cfg
        self.clock = clock
        self.resolve = resolve
        self.sink = sink  # the service: camera_event / fall_detected / fall_resolved
        self.location = location
        self.evidence_root = evidence_root
        self.source_name = cfg.source.describe()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.buffer: FrameBuffer | None = None
        self.core: CameraCore | None = None
        self.worker: Worker | None = None
        self.reader: Reader | None = None
        self.reader_gen = 0
        self.status = "starting"
        self.detail: str | None = None
        self.detector_status = "loading"
        self.detector_error: str | None = None
        self.runtime: str | None = None
        self.seq = 0
        self.abandoned: list[threading.Thread] = []
        self.counters = collections.Counter()
        self.restarts = {"stream": 0, "detector": 0}
        self.infer_ms: collections.deque = collections.deque(maxlen=300)
        self.analysed_at: collections.deque = collections.deque(maxlen=100)
        self.last_frame_mono: float | None = None
        self.last_ratio = 0.0
        self.stream_backoff = Backoff(cfg.watchdog.backoff_initial, cfg.watchdog.backoff_max)
        self.detector_backoff = Backoff(cfg.watchdog.backoff_initial, cfg.watchdog.backoff_max)
        self.model_backoff = Backoff(cfg.watchdog.backoff_initial, max(cfg.watchdog.backoff_max, 300.0))
        self.inflight_since: float | None = None
        self.restarted_at: float | None = None
        self.latency: dict | None = None  # the last fall alarm: how long it took to commit
        self.mono0 = clock.monotonic()
        self.wall0 = clock.time()
        self.open_falls: dict[str, dict] = {}
        self.on_change = None
        self._stopping = False

    # -- helpers -----------------------------------------------------------------------
    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def from_thread(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone (shutdown)
            pass

    def _event(self, type_: str, **fields) -> None:
        self.sink.camera_event(self, type_, fields)

    def _set_status(self, status: str, detail: str | None = None) -> None:
        if status == self.status and detail == self.detail:
            return
        previous, self.status, self.detail = self.status, status, detail
        if previous == "starting" and status in ("connecting", "running"):
            return
        if status == "connecting" and previous in ("backoff", "restarting"):
            return  # retries are reported once, as backoff
        if status == "backoff" and previous == "backoff":
            return
        level = logging.INFO if status in ("running", "connecting") else logging.WARNING
        log.log(level, "camera %s (%s): %s%s", self.cfg.id, self.source_name, status, f" ({detail})" if detail else "")
        if self.counters["status_events"] < 10 or status in ("running", "ended", "stalled"):
            self.counters["status_events"] += 1
            self._event("camera.status", status=status, previous=previous, detail=detail, source=self.source_name)
        if self.on_change:
            self.on_change()

    # -- reader --------------------------------------------------------------------------
    def _start_reader(self, delay: float = 0.0) -> None:
        self.reader_gen += 1
        self.reader = Reader(self, self.reader_gen, delay)
        self.reader.start()

    def _abandon_reader(self) -> None:
        r = self.reader
        if r is None:
            return
        r.stop_event.set()
        if r.is_alive():
            self.abandoned.append(r)
        self.reader = None

    def on_reader_status(self, gen: int, status: str, detail: str | None) -> None:
        if gen != self.reader_gen or self._stopping:
            return
        if status == "running":
            self._set_status("running")
        elif status in ("connecting", "backoff", "ended"):
            self._set_status(status, detail)

    # -- worker / detectors --------------------------------------------------------------
    async def _load(self) -> bool:
        """A new worker thread and a new interpreter; retried with backoff on a model error."""
        while not self._stopping:
            self.worker = Worker(f"camera-{self.cfg.id}-worker")
            self.core = CameraCore(self.cfg, self.resolve)
            self.detector_status = "loading"
            try:
                await self.worker.submit(self.core.load)
            except ModelError as exc:
                self.worker.close()
                self.detector_status, self.detector_error = "error", str(exc)
                delay = self.model_backoff.next()
                if self.model_backoff.attempts == 1:
                    log.error("camera %s: %s; the camera is off until this is fixed (retrying in %.0f s; the rest of the "
                              "gateway keeps running)", self.cfg.id, exc, delay)
                    self._event("camera.detector", status="error", detail=str(exc))
                else:
                    log.debug("camera %s: model still not loadable: %s", self.cfg.id, exc)
                self._set_status("model_error", str(exc))
                await self.clock.sleep(delay)
                continue
            except Exception as exc:  # noqa: BLE001 - unexpected: report and retry like a model error
                self.worker.close()
                self.detector_status, self.detector_error = "error", f"{type(exc).__name__}: {exc}"
                log.exception("camera %s: detector failed to load", self.cfg.id)
                self._set_status("model_error", self.detector_error)
                await self.clock.sleep(self.model_backoff.next())
                continue
            if self.detector_status == "error":
                log.info("camera %s: model loaded after all", self.cfg.id)
                self._event("camera.detector", status="ok", detail=None)
            self.model_backoff.reset()
            self.detector_status, self.detector_error = "ok", None
            self.runtime = next((p.runtime for p in self.core.plugins if getattr(p, "runtime", None)), None)
            return True
        return False

    # -- the tasks -----------------------------------------------------------------------
    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.buffer = FrameBuffer(self.cfg.buffer, self.loop)
        watchdog = asyncio.create_task(self._watchdog(), name=f"camera-{self.cfg.id}-watchdog")
        try:
            while not self._stopping:
                if not await self._load():
                    return
                if self.reader is None:
                    self._start_reader()
                hung = await self._analyse()
                if not hung:
                    return
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)

    async def _analyse(self) -> bool:
        """Analyse frames until stopped (False) or the detector hangs (True)."""
        timeout = self.cfg.watchdog.detector_timeout
        while not self._stopping:
            frame = await self.buffer.get()
            core = self.core
            want = core.want_detect(frame.ts)
            fut = self.worker.submit(core.analyse, frame.image, want, core.hints())
            self.inflight_since = time.monotonic()
            try:
                a: Analysis = await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                self.inflight_since = None
                await self._detector_hung(timeout)
                return True
            except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the camera
                self.inflight_since = None
                self.counters["analysis_errors"] += 1
                if self.counters["analysis_errors"] <= 5:
                    log.warning("camera %s: analysis failed: %s: %s", self.cfg.id, type(exc).__name__, exc)
                continue
            self.inflight_since = None
            self._account(frame, a)
            for plugin, ev in core.observe(frame.ts, a):
                self._on_detection(plugin, ev, frame)
        return False

    async def _detector_hung(self, timeout: float) -> None:
        self.restarts["detector"] += 1
        old = self.worker
        old.close()  # it exits when (if) the stuck call returns
        self.abandoned.append(old.thread)
        delay = self.detector_backoff.next()
        log.error("camera %s: the detector did not answer within %.1f s; restarting it in %.1f s (restart %d)",
                  self.cfg.id, timeout, delay, self.restarts["detector"])
        self._event("camera.watchdog", what="detector_hung", after_seconds=timeout, action="restart",
                    restarts=self.restarts["detector"], retry_in=round(delay, 1))
        self._set_status("restarting", "detector hung")
        self.restarted_at = time.monotonic()
        self.buffer.clear()
        self._prune_abandoned()
        await self.clock.sleep(delay + self._abandoned_penalty())
        if self.status == "restarting":
            self._set_status("running" if self.reader and self.reader.state == "running" else "connecting")

    def _abandoned_penalty(self) -> float:
        return self.cfg.watchdog.backoff_max if len(self.abandoned) >= MAX_ABANDONED else 0.0

    def _prune_abandoned(self) -> None:
        self.abandoned = [t for t in self.abandoned if t.is_alive()]

    async def _watchdog(self) -> None:
        wd = self.cfg.watchdog
        tick = min(1.0, wd.stall_seconds / 4)
        while not self._stopping:
            await self.clock.sleep(tick)
            now = time.monotonic()
            self._prune_abandoned()
            r = self.reader
            if r is not None and self.detector_status == "ok":
                limit = wd.stall_seconds
                if r.state == "connecting":
                    limit += self.cfg.source.open_timeout
                if r.state in ("running", "connecting") and now - r.heartbeat > limit:
                    await self._stream_stalled(now - r.heartbeat)
                    continue
                if (self.restarted_at is not None and self.last_frame_mono is not None
                        and self.last_frame_mono > self.restarted_at and now - self.restarted_at > STABLE_SECONDS):
                    self.stream_backoff.reset()
                    self.detector_backoff.reset()
                    self.restarted_at = None

    async def _stream_stalled(self, silent: float) -> None:
        self.restarts["stream"] += 1
        delay = self.stream_backoff.next() + self._abandoned_penalty()
        log.error("camera %s (%s): no frame for %.1f s; restarting the stream in %.1f s (restart %d)",
                  self.cfg.id, self.source_name, silent, delay, self.restarts["stream"])
        self._event("camera.watchdog", what="stream_stalled", after_seconds=round(silent, 1), action="restart",
                    restarts=self.restarts["stream"], retry_in=round(delay, 1), source=self.source_name)
        self._set_status("stalled", f"no frame for {silent:.0f} s")
        self._abandon_reader()
        self.restarted_at = time.monotonic()
        self._start_reader(delay)

    # -- accounting and events -----------------------------------------------------------
    def _account(self, frame: Frame, a: Analysis) -> None:
        self.counters["analysed"] += 1
        self.last_frame_mono = time.monotonic()
        self.analysed_at.append(self.last_frame_mono)
        self.last_ratio = a.ratio
        if a.ran:
            self.counters["inferences"] += 1
            if a.infer_ms is not None:
                self.infer_ms.append(a.infer_ms)
        else:
            self.counters["gated"] += 1

    def _on_detection(self, plugin, ev, frame: Frame) -> None:
        from inference.fall import FallEvent, FallResolved

        offset = frame.wall - frame.ts  # camera timeline -> epoch

        def wall(t: float) -> float:
            return round(t + offset, 3)

        key = f"{self.cfg.id}/{plugin.id}"
        if isinstance(ev, FallEvent):
            fall_id = f"{self.cfg.id}-{plugin.id}-{int(wall(ev.lying_at) * 1000)}"
            h = frame.image.shape[0]
            w = frame.image.shape[1]
            stillness = plugin.cfg.fall.stillness_seconds
            pose_summary = ev.pose.summary(w, h)
            fields = dict(
                fall_id=fall_id, detector=plugin.id, subject=self.cfg.id if plugin.id == "fall" else key,
                severity=plugin.cfg.severity,
                location=self.location, zone=self.location.get("zone"), confidence=ev.confidence,
                fell_at=wall(ev.fell_at), lying_at=wall(ev.lying_at), still_since=wall(ev.still_since),
                stillness_seconds=stillness, window_closed_at=wall(ev.still_since + stillness),
                detected_at=wall(ev.at), transition_seconds=ev.transition_seconds, drop_torso=ev.drop,
                axis_deg=ev.angle, aspect=ev.aspect, height_ratio=ev.height_ratio, score=ev.score,
                keypoints=pose_summary, frame_seq=frame.seq,
            )
            evidence = None
            if self.cfg.privacy.evidence:
                evidence = self._evidence(fall_id, frame.image, ev)
                fields["evidence"] = "kept on the board"
            self.open_falls[key] = {"fall_id": fall_id, "since": wall(ev.lying_at), "confidence": ev.confidence}
            self.counters["falls"] += 1
            log.warning("camera %s: FALL detected (confidence %.2f, lying since %.1f s ago)",
                        self.cfg.id, ev.confidence, ev.at - ev.lying_at)
            self.sink.fall_detected(self, fields, frame, evidence)
            if self.on_change:
                self.on_change()
        elif isinstance(ev, FallResolved):
            info = self.open_falls.pop(key, {})
            self.counters["resolved"] += 1
            log.info("camera %s: fall resolved (%s)", self.cfg.id, ev.reason)
            self.sink.fall_resolved(self, dict(fall_id=info.get("fall_id"), detector=plugin.id,
                                               subject=self.cfg.id if plugin.id == "fall" else key,
                                               location=self.location, resolved_at=wall(ev.at), fell_at=wall(ev.fell_at),
                                               lying_seconds=ev.lying_seconds, reason=ev.reason))
            if self.on_change:
                self.on_change()

    def _evidence(self, fall_id: str, image, ev):
        """Write a blurred snapshot in the background; returns the task (its result: the JPEG bytes or None)."""
        from inference.evidence import save_evidence

        box = ev.pose.box
        return asyncio.ensure_future(asyncio.to_thread(save_evidence, self.evidence_root, self.cfg.id, fall_id, image, box,
                                                       self.cfg.privacy))

    # -- shutdown and views ----------------------------------------------------------------
    def stop(self) -> None:
        self._stopping = True
        if self.reader is not None:
            self.reader.stop_event.set()
        if self.buffer is not None:
            self.buffer.close()
        if self.worker is not None:
            self.worker.close()

    def snapshot(self) -> dict:
        now = time.monotonic()
        recent = [t for t in self.analysed_at if now - t <= 10.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 and recent[-1] > recent[0] else 0.0
        ms = sorted(self.infer_ms)
        r = self.reader
        d = {
            "status": self.status,
            "source": self.source_name,
            "fps_analysed": round(fps, 1),
            "frames": {"read": r.frames_read if r else 0, "analysed": self.counters["analysed"],
                       "inferred": self.counters["inferences"], "gated": self.counters["gated"],
                       "dropped": self.buffer.dropped if self.buffer else 0},
            "inference_ms": {"p50": _pct(ms, 0.5), "p95": _pct(ms, 0.95)},
            "motion": round(self.last_ratio, 4),
            "last_frame_age": round(now - self.last_frame_mono, 1) if self.last_frame_mono else None,
            "restarts": dict(self.restarts),
            "detector": {"status": self.detector_status, "runtime": self.runtime, "error": self.detector_error},
            "falls": {"detected": self.counters["falls"], "resolved": self.counters["resolved"],
                      "open": list(self.open_falls.values())},
        }
        if self.latency:
            d["last_fall_latency"] = self.latency
        if self.detail:
            d["detail"] = self.detail
        if self.core is not None:
            d["trackers"] = {p.id: p.tracker.snapshot() for p in self.core.plugins}
        return d


def _pct(sorted_values: list, q: float) -> float | None:
    if not sorted_values:
        return None
    return round(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))], 2)
