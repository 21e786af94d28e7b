"""Acceptance on the simulator's scenario set with the real model: every fall video raises exactly one
fall event (and its resolution when the person gets up); no negative raises anything."""

from __future__ import annotations

from tests.camera_support import require_camera_extra

require_camera_extra()

import pytest

from inference.config import CameraConfig
from inference.fall import FallEvent, FallResolved
from inference.pipeline import CameraCore, analyse_video
from tests.camera_support import manifest, require_model, scenario_videos  # noqa: F401 - fixture

SCENARIOS = ["walk_in", "fall_left", "fall_right", "fall_recover", "lie_down_slowly", "sit_down", "bend", "empty_lighting"]


def camera(**kw) -> CameraConfig:
    return CameraConfig.model_validate({"id": "hall", "source": {"type": "file", "path": "unused.avi"}, **kw})


@pytest.fixture(scope="module")
def core():
    require_model()
    return None


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name, scenario_videos, core):  # noqa: F811
    video = next(v for v in manifest(scenario_videos)["videos"] if v["scenario"] == name)
    cam = camera()
    res = analyse_video(str(scenario_videos / video["file"]), cam, CameraCore(cam))
    falls = [(t, e) for t, _, e in res.events if isinstance(e, FallEvent)]
    resolved = [(t, e) for t, _, e in res.events if isinstance(e, FallResolved)]
    assert len(falls) == video["falls"], f"{name}: {len(falls)} fall event(s), expected {video['falls']}: {res.events}"
    assert len(resolved) == video["resolves"], f"{name}: {resolved}"
    stillness = cam.detectors[0].fall.stillness_seconds
    for t, ev in falls:
        assert abs(ev.lying_at - video["rest_at"]) < 1.0, (ev.lying_at, video["rest_at"])
        window_closed = ev.still_since + stillness
        assert -0.021 <= t - window_closed <= 1.0 / cam.fps + 1e-6, "raised on the first analysed frame after the window"
        assert ev.confidence >= 0.8
    assert res.frames_analysed >= video["seconds"] * cam.fps * 0.95
    # the gate keeps the detector off most frames of a still scene
    if name in ("fall_left", "sit_down", "empty_lighting"):
        assert res.inferences < 0.6 * res.frames_analysed, (res.inferences, res.frames_analysed)


@pytest.mark.parametrize("name", ["fall_right", "bend", "lie_down_slowly"])
def test_without_motion_gate_and_at_5_fps(name, scenario_videos, core):  # noqa: F811
    video = next(v for v in manifest(scenario_videos)["videos"] if v["scenario"] == name)
    cam = camera(fps=5, motion={"enabled": False})
    res = analyse_video(str(scenario_videos / video["file"]), cam, CameraCore(cam))
    assert res.inferences == res.frames_analysed
    assert len([e for _, _, e in res.events if isinstance(e, FallEvent)]) == video["falls"]
