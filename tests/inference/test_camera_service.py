"""CameraService in one event loop: model errors, missing OpenCV, evidence and what leaves the board."""

from __future__ import annotations

from tests.camera_support import require_camera_extra

require_camera_extra()

import asyncio
import base64
import sys
import time

import orjson
import pytest
import yaml

from core.clock import Clock
from gateway.config.load import load_config
from inference.service import CameraService
from tests.camera_support import camera_dict, require_model, scenario_dir


class Sink:
    def __init__(self):
        self.records: list[tuple[str, dict]] = []

    async def emit(self, lane, body, topic=None):
        self.records.append((lane, orjson.loads(body)))

    def of(self, type_):
        return [r for _, r in self.records if r["type"] == type_]


def make(tmp_path, cameras, alerts=None):
    p = tmp_path / "site.yaml"
    p.write_text(yaml.safe_dump({"site": "s", "gateway": "g", "store": {"path": str(tmp_path / "o.sqlite")},
                                 "cameras": cameras}))
    sink = Sink()
    return CameraService(load_config(p), Clock(), sink.emit, alerts=alerts, state_dir=str(tmp_path)), sink


async def wait_for(cond, timeout, what):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def stop(svc, task):
    await svc.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_missing_model_keeps_the_service_up_and_says_why(tmp_path):
    (tmp_path / "v.avi").write_bytes(b"")
    svc, sink = make(tmp_path, [{"id": "hall", "source": {"type": "file", "path": "v.avi"},
                                 "detectors": [{"type": "pose_fall", "model": "gone.tflite"}]},
                                {"id": "off", "enabled": False, "source": {"type": "file", "path": "v.avi"}}])
    task = asyncio.create_task(svc.run())
    try:
        await wait_for(lambda: sink.of("camera.detector"), 5, "the model error event")
        assert not task.done()
        snap = svc.snapshot()
        assert snap["hall"]["status"] == "model_error" and "gone.tflite" in snap["hall"]["detector"]["error"]
        assert snap["off"] == {"status": "disabled"}
        (ev,) = sink.of("camera.detector")
        assert ev["camera"] == "hall" and ev["status"] == "error" and "model file not found" in ev["detail"]
    finally:
        await stop(svc, task)


async def test_without_opencv_every_camera_is_unavailable_and_nothing_crashes(tmp_path, monkeypatch):
    (tmp_path / "v.avi").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "inference.runner", None)  # as if the camera extra were not installed
    svc, sink = make(tmp_path, [{"id": "hall", "source": {"type": "file", "path": "v.avi"}}])
    task = asyncio.create_task(svc.run())
    try:
        await wait_for(lambda: sink.of("camera.status"), 5, "the unavailable event")
        assert svc.snapshot()["hall"]["status"] == "unavailable"
        assert "canopy-gateway[camera]" in sink.of("camera.status")[0]["detail"]
        assert not task.done()
    finally:
        await stop(svc, task)


@pytest.mark.parametrize("send", [False, True])
async def test_evidence_is_local_and_blurred_unless_sending_is_enabled(tmp_path, send):
    require_model()
    video = scenario_dir() / "fall_right.avi"
    cam = camera_dict(video, realtime=False, stillness=3.0,
                      privacy={"evidence": True, "send_evidence": send, "max_evidence_bytes": 20000})
    svc, sink = make(tmp_path, [cam])
    task = asyncio.create_task(svc.run())
    try:
        await wait_for(lambda: sink.of("fall.detected") and (not send or sink.of("fall.evidence")), 30, "the fall")
        await asyncio.sleep(0.3)
    finally:
        await stop(svc, task)
    (fall,) = sink.of("fall.detected")
    assert [lane for lane, r in sink.records if r["type"] == "fall.detected"] == ["alarm"]
    assert fall["evidence"] == "kept on the board"
    files = list((tmp_path / "evidence" / "hall").glob("*.jpg"))
    assert len(files) == 1 and fall["fall_id"] in files[0].name
    if send:
        (ev,) = sink.of("fall.evidence")
        jpg = base64.b64decode(ev["jpeg_base64"])
        assert ev["blurred"] is True and jpg[:3] == b"\xff\xd8\xff" and len(jpg) <= 20000
    else:
        assert sink.of("fall.evidence") == []
        for _, r in sink.records:
            assert len(orjson.dumps(r)) < 2048


async def test_replay_as_fast_as_it_goes_sees_every_frame(tmp_path):
    require_model()
    video = scenario_dir() / "fall_recover.avi"
    svc, sink = make(tmp_path, [camera_dict(video, realtime=False)])
    task = asyncio.create_task(svc.run())
    try:
        await wait_for(lambda: svc.snapshot()["hall"]["status"] == "ended", 30, "the end of the file")
        await asyncio.sleep(0.2)
        snap = svc.snapshot()["hall"]
    finally:
        await stop(svc, task)
    assert snap["frames"]["dropped"] == 0
    assert len(sink.of("fall.detected")) == 1 and len(sink.of("fall.resolved")) == 1
    res = sink.of("fall.resolved")[0]
    assert res["fall_id"] == sink.of("fall.detected")[0]["fall_id"] and res["reason"] == "stood up"
    assert snap["falls"] == {"detected": 1, "resolved": 1, "open": []}
