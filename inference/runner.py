"""One camera in the daemon: source thread -> bounded buffer -> worker thread -> fall logic -> records.

Threads, never the event loop, touch pixels:

- the **reader** (``inference.sources``, one daemon thread per camera) opens the
  source, reconnects, samples and decodes frames into the bounded
  ``inference.framebuffer.FrameBuffer``;
- the **worker** (``inference.worker``, one daemon thread per camera, holding the
  LiteRT interpreter) runs the motion gate and, when something moved, the detectors;
- the event loop (this module) runs the pure fall logic and hands records to the
  service; ``inference.watchdog`` decides when a stalled reader or a hung worker
  is restarted, and this module restarts it.

This module is the wiring: it owns the threads, the camera's status and its
state snapshot.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import cv2

from core.backoff import Backoff
from inference.config import CameraConfig
from inference.evidence import save_evidence
from inference.fall import FallEvent, FallResolved
from inference.fall_records import detected_fields, resolved_fields
from inference.framebuffer import FrameBuffer
from inference.pipeline import Analysis, CameraCore, Frame
from inference.pose import ModelError
from inference.sources import Feed, Reader
from inference.watchdog import Watchdog
from inference.worker import Worker

log = logging.getLogger("canopy.camera")
cv2.setNumThreads(1)  # one worker thread per camera does the pixel work; OpenCV's own pool would only compete

MODEL_RETRY_MAX = 300.0  # a missing model is retried at least this rarely (seconds)


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
        self.counters = collections.Counter()
        self.watchdog = Watchdog(cfg.watchdog, cfg.source.open_timeout)
        self.model_backoff = Backoff(cfg.watchdog.backoff_initial, max(cfg.watchdog.backoff_max, MODEL_RETRY_MAX))
        self.infer_ms: collections.deque = collections.deque(maxlen=300)
        self.analysed_at: collections.deque = collections.deque(maxlen=100)
        self.last_frame_mono: float | None = None
        self.last_ratio = 0.0
        self.latency: dict | None = None  # the last fall alarm: how long it took to commit (set by the service)
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

    def _changed(self) -> None:
        if self.on_change:
            self.on_change()

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
        self._changed()

    # -- reader --------------------------------------------------------------------------
    def _start_reader(self, delay: float = 0.0) -> None:
        self.reader_gen += 1
        feed = Feed(self.buffer, self._reader_report, self.next_seq, self.counters, self.mono0, self.wall0)
        self.reader = Reader(self.cfg, self.clock, self.resolve, feed, self.reader_gen, delay)
        self.reader.start()

    def _abandon_reader(self) -> None:
        r = self.reader
        if r is None:
            return
        r.stop_event.set()
        self.watchdog.abandon(r)
        self.reader = None

    def _reader_report(self, gen: int, status: str, detail: str | None) -> None:
        """Called in the reader thread."""
        self.from_thread(self.on_reader_status, gen, status, detail)

    def on_reader_status(self, gen: int, status: str, detail: str | None) -> None:
        if gen != self.reader_gen or self._stopping:
            return  # an abandoned reader's last words
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
        watchdog = asyncio.create_task(self._watch(), name=f"camera-{self.cfg.id}-watchdog")
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
            try:
                a: Analysis = await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                await self._detector_hung(timeout)
                return True
            except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the camera
                self.counters["analysis_errors"] += 1
                if self.counters["analysis_errors"] <= 5:
                    log.warning("camera %s: analysis failed: %s: %s", self.cfg.id, type(exc).__name__, exc)
                continue
            self._account(a)
            for plugin, ev in core.observe(frame.ts, a):
                self._on_detection(plugin, ev, frame)
        return False

    async def _watch(self) -> None:
        """Restart a stalled stream; reset the restart backoffs once frames flow again."""
        wd = self.watchdog
        while not self._stopping:
            await self.clock.sleep(wd.tick)
            wd.prune()
            r = self.reader
            if r is None or self.detector_status != "ok":
                continue
            silent = wd.check(r.state, r.heartbeat, self.last_frame_mono, time.monotonic())
            if silent is not None:
                self._stream_stalled(silent)

    def _stream_stalled(self, silent: float) -> None:
        delay = self.watchdog.stream_restart(time.monotonic())
        restarts = self.watchdog.restarts["stream"]
        log.error("camera %s (%s): no frame for %.1f s; restarting the stream in %.1f s (restart %d)",
                  self.cfg.id, self.source_name, silent, delay, restarts)
        self._event("camera.watchdog", what="stream_stalled", after_seconds=round(silent, 1), action="restart",
                    restarts=restarts, retry_in=round(delay, 1), source=self.source_name)
        self._set_status("stalled", f"no frame for {silent:.0f} s")
        self._abandon_reader()
        self._start_reader(delay)

    async def _detector_hung(self, timeout: float) -> None:
        wd = self.watchdog
        old = self.worker
        old.close()  # it exits when (if) the stuck call returns
        wd.abandon(old.thread)
        delay = wd.detector_restart(time.monotonic())
        restarts = wd.restarts["detector"]
        log.error("camera %s: the detector did not answer within %.1f s; restarting it in %.1f s (restart %d)",
                  self.cfg.id, timeout, delay, restarts)
        self._event("camera.watchdog", what="detector_hung", after_seconds=timeout, action="restart",
                    restarts=restarts, retry_in=round(delay, 1))
        self._set_status("restarting", "detector hung")
        self.buffer.clear()
        wd.prune()
        await self.clock.sleep(delay + wd.penalty())
        if self.status == "restarting":
            self._set_status("running" if self.reader and self.reader.state == "running" else "connecting")

    # -- accounting and detections ---------------------------------------------------------
    def _account(self, a: Analysis) -> None:
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
        key = f"{self.cfg.id}/{plugin.id}"
        if isinstance(ev, FallEvent):
            fields = detected_fields(self.cfg, plugin, ev, frame, self.location)
            evidence = None
            if self.cfg.privacy.evidence:
                evidence = self._evidence(fields["fall_id"], frame.image, ev)
                fields["evidence"] = "kept on the board"
            self.open_falls[key] = {"fall_id": fields["fall_id"], "since": fields["lying_at"], "confidence": ev.confidence}
            self.counters["falls"] += 1
            log.warning("camera %s: FALL detected (confidence %.2f, lying since %.1f s ago)",
                        self.cfg.id, ev.confidence, ev.at - ev.lying_at)
            self.sink.fall_detected(self, fields, frame, evidence)
            self._changed()
        elif isinstance(ev, FallResolved):
            info = self.open_falls.pop(key, {})
            self.counters["resolved"] += 1
            log.info("camera %s: fall resolved (%s)", self.cfg.id, ev.reason)
            self.sink.fall_resolved(self, resolved_fields(self.cfg, plugin, ev, frame, self.location, info.get("fall_id")))
            self._changed()

    def _evidence(self, fall_id: str, image, ev: FallEvent) -> asyncio.Future:
        """Write a blurred snapshot in the background; returns the task (its result: the JPEG bytes or None)."""
        return asyncio.ensure_future(asyncio.to_thread(save_evidence, self.evidence_root, self.cfg.id, fall_id, image,
                                                       ev.pose.box, self.cfg.privacy))

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
            "restarts": dict(self.watchdog.restarts),
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
