"""The camera runner's parts without a camera: restart policy, frame sampling, the frame buffer, fall records."""

from __future__ import annotations

from tests.camera_support import require_camera_extra

require_camera_extra()

import asyncio
import threading

import numpy as np
import pytest

from inference.config import CameraConfig, WatchdogConfig
from inference.fall import FallEvent, PoseSample
from inference.fall_records import alert_args, detected_fields, subject
from inference.framebuffer import FrameBuffer
from inference.pipeline import Frame, FrameSampler
from inference.watchdog import MAX_ABANDONED, STABLE_SECONDS, Watchdog


def test_a_connecting_reader_gets_the_open_timeout_on_top_of_the_stall_limit():
    wd = Watchdog(WatchdogConfig(stall_seconds=5.0), open_timeout=10.0)
    assert wd.check("running", heartbeat=0.0, last_frame=None, now=5.5) == pytest.approx(5.5)
    assert wd.check("connecting", heartbeat=0.0, last_frame=None, now=5.5) is None
    assert wd.check("connecting", heartbeat=0.0, last_frame=None, now=15.5) == pytest.approx(15.5)
    assert wd.check("backoff", heartbeat=0.0, last_frame=None, now=100.0) is None  # the reader is waiting on purpose


def test_restart_backoffs_start_again_once_frames_flowed_long_enough():
    wd = Watchdog(WatchdogConfig(backoff_initial=1.0, backoff_max=60.0), open_timeout=10.0)
    wd.stream_restart(now=100.0)
    wd.stream_restart(now=100.0)
    assert wd.restarts == {"stream": 2, "detector": 0} and wd.stream_backoff.attempts == 2
    wd.check("running", heartbeat=101.0, last_frame=101.0, now=101.0 + STABLE_SECONDS - 2)
    assert wd.stream_backoff.attempts == 2  # not yet
    wd.check("running", heartbeat=111.0, last_frame=111.0, now=111.0)
    assert wd.stream_backoff.attempts == 0 and wd.restarted_at is None


def test_too_many_wedged_threads_add_the_longest_wait():
    wd = Watchdog(WatchdogConfig(backoff_max=42.0), open_timeout=1.0)
    release = threading.Event()
    threads = [threading.Thread(target=release.wait, daemon=True) for _ in range(MAX_ABANDONED)]
    for t in threads:
        t.start()
        wd.abandon(t)
    assert wd.penalty() == 42.0
    release.set()
    for t in threads:
        t.join(5)
    wd.prune()
    assert wd.abandoned == [] and wd.penalty() == 0.0


def test_the_sampler_keeps_about_one_frame_per_step():
    s = FrameSampler(0.1)
    kept = [i for i in range(100) if s.due(i / 30)]  # 30 fps in, 10 fps analysed
    assert 32 <= len(kept) <= 35 and kept[0] == 0


async def test_a_full_buffer_drops_its_oldest_frame():
    buf = FrameBuffer(2, asyncio.get_running_loop())
    img = np.zeros((2, 2, 3), np.uint8)
    for seq in range(1, 5):
        buf.put(Frame(seq, float(seq), float(seq), img))
    assert buf.dropped == 2
    assert [(await buf.get()).seq for _ in range(2)] == [3, 4]


def test_fall_records_carry_epoch_times_and_one_subject():
    cam = CameraConfig.model_validate({"id": "hall", "source": {"type": "file", "path": "v.avi"}})
    plugin = type("P", (), {"id": "fall", "cfg": cam.detectors[0]})()
    pose = PoseSample((300.0, 400.0), (400.0, 400.0), 0.9, (250.0, 350.0, 450.0, 450.0), 480.0)
    ev = FallEvent(fell_at=10.0, lying_at=10.6, still_since=10.6, at=15.6, confidence=0.8, transition_seconds=0.6,
                   drop=1.0, angle=90.0, aspect=2.0, height_ratio=0.3, score=0.9, pose=pose)
    frame = Frame(7, ts=15.6, wall=1_000_015.6, image=np.zeros((480, 640, 3), np.uint8))
    f = detected_fields(cam, plugin, ev, frame, {"site": "s", "zone": "hall"})
    assert f["fall_id"] == "hall-fall-1000010600" and f["lying_at"] == pytest.approx(1_000_010.6)
    assert f["window_closed_at"] == pytest.approx(1_000_015.6) and f["zone"] == "hall" and f["frame_seq"] == 7
    assert f["keypoints"]["box"] == [0.391, 0.729, 0.703, 0.938]
    args = alert_args(cam, f)
    assert args["subject"] == subject("hall", "fall") == "hall" and args["rule"] == "camera.fall"
    assert subject("hall", "second") == "hall/second"
