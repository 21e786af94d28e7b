"""Camera service: started by the runtime only when cameras are configured.

Seam (gateway/runtime.py):
- ``CameraService(cfg, clock, emit, alerts=None, state_dir)``; ``run()`` as a task;
  ``await stop()``; ``snapshot()`` goes into …/state under "cameras";
- ``emit(lane, body, topic=None)`` commits one record durably; the service calls
  ``emit(lane, body)`` (default topics): fall alarms go to the ``alarm`` lane,
  everything else to ``event``;
- ``on_change`` (optional, set by the runtime) is called when something worth
  republishing …/state happened.

Records (docs/cameras.md): ``fall.detected`` (alarm, metadata only: camera,
location, confidence, times, keypoint summary), ``fall.resolved``,
``camera.status``, ``camera.watchdog``, ``camera.detector`` (events), and
``fall.evidence`` only for a camera with ``privacy.send_evidence: true``.

This module imports neither OpenCV nor LiteRT: ``run()`` does, so a board
without the camera extra reports every camera as unavailable (state and one
event each) and the rest of the gateway keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import os
import time

from core.records import event_body
from inference.fall_records import ALERT_RULE, alert_args, subject

log = logging.getLogger("canopy.camera")

EVENT_RETRIES = 3


class CameraService:
    def __init__(self, cfg, clock, emit, alerts=None, state_dir: str = "."):
        self.cfg = cfg
        self.clock = clock
        self.emit = emit
        self.alerts = alerts
        self.state_dir = state_dir
        site = cfg.site
        self.site_id = site.site
        self.cameras = list(site.cameras)
        self.runners: dict = {}
        self.unavailable: str | None = None
        self.on_change = None
        self._alarms: collections.deque = collections.deque()
        self._events: collections.deque = collections.deque()
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.counters = collections.Counter()
        self.latency: dict = {}

    # ------------------------------------------------------------------ records
    def _location(self, cam) -> dict:
        loc = cam.location.model_dump(exclude_none=True) if cam.location else {}
        return {"site": self.site_id, **loc}

    def _queue(self, lane: str, body: bytes, critical: bool, meta: dict | None = None) -> None:
        (self._alarms if critical else self._events).append([lane, body, meta or {}, 0])
        if self._wake is not None:
            self._wake.set()

    def camera_event(self, runner, type_: str, fields: dict) -> None:
        self._queue("event", event_body(self.clock.time(), type_, camera=runner.cfg.id, **fields), False)

    def fall_detected(self, runner, fields: dict, frame, evidence) -> None:
        """Raise the fall alarm: through the alert engine (lifecycle, escalation, recipient groups) when there is
        one, with a detailed ``fall.detected`` event beside it; else ``fall.detected`` on the alarm lane itself."""
        cam = runner.cfg
        meta = {"camera": cam.id, "frame_mono": frame.ts if cam.realtime else None,
                "window_closed_at": fields["window_closed_at"], "fall_id": fields["fall_id"],
                "detected_mono": time.monotonic()}
        raise_alert = getattr(self.alerts, "raise_alert", None) if self.alerts is not None else None
        if raise_alert is not None:
            try:
                aid = raise_alert(**alert_args(cam, fields))
            except Exception:  # noqa: BLE001 - never lose the alarm: fall back to our own record
                log.exception("camera %s: the alert engine refused the fall; sending the alarm record directly", cam.id)
            else:
                self.counters["alerts_raised"] += 1
                self._queue("event", event_body(fields["detected_at"], "fall.detected", camera=cam.id, alert=aid or None,
                                                **fields), False, meta)
                return self._evidence_later(cam, fields, evidence)
        self._queue("alarm", event_body(fields["detected_at"], "fall.detected", camera=cam.id, **fields), True, meta)
        self._evidence_later(cam, fields, evidence)

    def _evidence_later(self, cam, fields: dict, evidence) -> None:
        if evidence is not None and cam.privacy.send_evidence:
            evidence.add_done_callback(lambda t: self._send_evidence(cam, fields, t))

    def _send_evidence(self, cam, fields: dict, task: asyncio.Future) -> None:
        from inference.evidence import shrink_jpeg

        if task.cancelled() or task.exception() is not None or task.result() is None:
            return
        data = shrink_jpeg(task.result(), cam.privacy.max_evidence_bytes)
        if data is None:
            log.warning("camera %s: evidence snapshot too large to send; kept on the board only", cam.id)
            return
        self._queue("event", event_body(self.clock.time(), "fall.evidence", camera=cam.id, fall_id=fields["fall_id"],
                                        blurred=True, content_type="image/jpeg",
                                        jpeg_base64=base64.b64encode(data).decode()), False)

    def fall_resolved(self, runner, fields: dict) -> None:
        resolve_alert = getattr(self.alerts, "resolve_alert", None) if self.alerts is not None else None
        if resolve_alert is not None:
            try:
                resolve_alert(ALERT_RULE, subject(runner.cfg.id, fields["detector"]), by=fields["reason"])
            except Exception:  # noqa: BLE001 - the event below still says it
                log.exception("camera %s: the alert engine could not resolve the fall alert", runner.cfg.id)
        self._queue("event", event_body(fields["resolved_at"], "fall.resolved", camera=runner.cfg.id, **fields), False)

    async def _sender(self) -> None:
        """Commit queued records in order, alarms first; an alarm is retried until it is committed."""
        while True:
            if not self._alarms and not self._events:
                self._wake.clear()
                await self._wake.wait()
                continue
            q = self._alarms if self._alarms else self._events
            item = q[0]
            lane, body, meta, tries = item
            try:
                await self.emit(lane, body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the outbox is closing or failing: keep it, retry
                item[3] += 1
                self.counters["emit_errors"] += 1
                if q is self._events and item[3] >= EVENT_RETRIES:
                    q.popleft()
                    self.counters["events_dropped"] += 1
                    log.warning("camera record dropped after %d failed commits: %s", item[3], exc)
                else:
                    log.error("cannot commit camera %s record (%s: %s); retrying", lane, type(exc).__name__, exc)
                    await asyncio.sleep(min(5.0, 0.5 * item[3]))
                continue
            q.popleft()
            self.counters[f"{lane}_records"] += 1
            if "fall_id" in meta:
                self._account_fall(meta)

    def _account_fall(self, meta: dict) -> None:
        now_mono, now_wall = time.monotonic(), self.clock.time()
        d = {"fall_id": meta["fall_id"],
             "window_to_commit_ms": round((now_wall - meta["window_closed_at"]) * 1000, 1),
             "detect_to_commit_ms": round((now_mono - meta["detected_mono"]) * 1000, 1)}
        if meta.get("frame_mono") is not None:
            d["frame_to_commit_ms"] = round((now_mono - meta["frame_mono"]) * 1000, 1)
        self.latency = d
        r = self.runners.get(meta.get("camera"))
        if r is not None:
            r.latency = d
        if self.on_change:
            self.on_change()

    # ------------------------------------------------------------------ tasks
    async def run(self) -> None:
        self._wake = asyncio.Event()
        sender = asyncio.create_task(self._sender(), name="cameras-sender")
        self._tasks.append(sender)
        try:
            from inference.runner import CameraRunner  # OpenCV, numpy (LiteRT is imported when a model loads)
        except ImportError as exc:
            self.unavailable = (f"camera support is not installed ({exc}); install the camera extra: "
                                "pip install 'canopy-gateway[camera]'")
            log.error("cameras: %s; %d camera(s) off, the rest of the gateway keeps running", self.unavailable,
                      len(self.cameras))
            for cam in self.cameras:
                if cam.enabled:
                    self._queue("event", event_body(self.clock.time(), "camera.status", camera=cam.id, status="unavailable",
                                                    previous="starting", detail=self.unavailable), False)
            await asyncio.gather(sender)
            return
        evidence_root = os.path.join(self.state_dir, "evidence")
        for cam in self.cameras:
            if not cam.enabled:
                continue
            root = evidence_root
            if cam.privacy.evidence_dir != "evidence":
                root = cam.privacy.evidence_dir if os.path.isabs(cam.privacy.evidence_dir) \
                    else os.path.join(self.state_dir, cam.privacy.evidence_dir)
            r = CameraRunner(cam, self.clock, self.cfg.resolve, self, self._location(cam), root)
            r.on_change = self._changed
            self.runners[cam.id] = r
            if cam.privacy.send_evidence:
                log.warning("camera %s: privacy.send_evidence is on: blurred snapshots of falls leave the board", cam.id)
            self._tasks.append(asyncio.create_task(self._run_camera(r), name=f"camera-{cam.id}"))
        await asyncio.gather(*self._tasks)

    async def _run_camera(self, r) -> None:
        try:
            await r.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one camera's bug must not stop the others or the gateway
            log.exception("camera %s: pipeline failed; it is off until restart", r.cfg.id)
            r.status = "failed"
            self.camera_event(r, "camera.status", {"status": "failed", "previous": "running",
                                                   "detail": "internal error (see the log)"})

    def _changed(self) -> None:
        if self.on_change:
            try:
                self.on_change()
            except Exception:  # noqa: BLE001
                log.exception("on_change hook failed")

    async def stop(self) -> None:
        """Stop the cameras, then commit what is queued (alarms first) for up to 1.5 s."""
        self._stopping = True
        for r in self.runners.values():
            r.stop()
        sender = self._tasks[0] if self._tasks else None
        others = [t for t in self._tasks if t is not sender]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if sender is not None:
            deadline = time.monotonic() + 1.5
            while (self._alarms or self._events) and time.monotonic() < deadline and not sender.done():
                await asyncio.sleep(0.02)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        if self._alarms:
            log.error("cameras: %d fall alarm(s) could not be committed before shutdown", len(self._alarms))

    def snapshot(self) -> dict:
        out = {}
        for cam in self.cameras:
            r = self.runners.get(cam.id)
            if not cam.enabled:
                out[cam.id] = {"status": "disabled"}
            elif r is None:
                out[cam.id] = {"status": "unavailable" if self.unavailable else "starting",
                               **({"detail": self.unavailable} if self.unavailable else {})}
            else:
                out[cam.id] = r.snapshot()
        return out

