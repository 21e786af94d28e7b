"""cameras: in the site file: typed, strict, errors with file:line:key."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from core.yamlsrc import ConfigError, load_yaml
from gateway.config.load import load_config
from inference.config import DETECTOR_TYPES, SOURCE_TYPES, CameraConfig, FileSource, PoseFallDetector, UrlSource, validate_cameras


def site(tmp_path, cameras, **top):
    p = tmp_path / "site.yaml"
    p.write_text(yaml.safe_dump({"site": "s", "gateway": "g", "cameras": cameras, **top}, sort_keys=False))
    return p


def test_defaults_are_private_and_sensible(tmp_path):
    (tmp_path / "v.avi").write_bytes(b"x")
    cfg = load_config(site(tmp_path, [{"id": "hall", "source": {"type": "file", "path": "v.avi"}}]))
    (cam,) = cfg.site.cameras
    assert isinstance(cam.source, FileSource) and cam.source.loop and cam.source.realtime
    assert cam.fps == 10 and cam.buffer == 4 and cam.motion.enabled
    (det,) = cam.detectors
    assert isinstance(det, PoseFallDetector) and det.model is None and det.num_threads == 1
    assert det.fall.stillness_seconds == 5.0
    assert cam.privacy.evidence is False and cam.privacy.send_evidence is False
    assert cam.watchdog.stall_seconds <= 10 and cam.watchdog.detector_timeout <= 10
    assert SOURCE_TYPES == ("url", "v4l2", "file") and DETECTOR_TYPES == ("pose_fall",)


def test_every_source_kind(tmp_path):
    cams = [{"id": "a", "source": {"type": "url", "url": "rtsp://user:secret@10.0.0.9:554/stream1"}},
            {"id": "b", "source": {"type": "v4l2", "device": 0, "width": 640, "height": 480, "fourcc": "MJPG"}},
            {"id": "c", "source": {"type": "v4l2", "device": "/dev/video2"}}]
    cfg = load_config(site(tmp_path, cams))
    a, b, c = cfg.site.cameras
    assert isinstance(a.source, UrlSource) and a.source.describe() == "rtsp://10.0.0.9:554/stream1"  # no credentials
    assert b.source.device == "0" and b.source.describe() == "v4l2:0" and c.source.device == "/dev/video2"


@pytest.mark.parametrize("cam, key, words", [
    ({"id": "a", "source": {"type": "ftp", "url": "x"}}, "cameras[0].source.type", "expected one of: 'url', 'v4l2', 'file'"),
    ({"id": "a", "source": {"type": "url", "url": "ftp://cam/x"}}, "cameras[0].source.url", "rtsp://"),
    ({"id": "a", "source": {"type": "url", "url": "rtsp://h/x"}, "detectors": [{"type": "ssd"}]},
     "cameras[0].detectors[0].type", "'pose_fall'"),
    ({"id": "a", "source": {"type": "url", "url": "rtsp://h/x"}, "detectors": [{"type": "pose_fall", "treshold": 1}]},
     "cameras[0].detectors[0].treshold", "unknown key"),
    ({"id": "a", "source": {"type": "url", "url": "rtsp://h/x"}, "motion": {"masks": [[[0, 0], [2, 0], [0, 1]]]}},
     "cameras[0].motion.masks", "outside the frame"),
    ({"id": "a", "source": {"type": "url", "url": "rtsp://h/x"}, "privacy": {"send_evidence": True}},
     "cameras[0].privacy", "needs evidence: true"),
    ({"id": "a", "source": {"type": "url", "url": "rtsp://h/x"},
      "detectors": [{"type": "pose_fall", "fall": {"upright_max_deg": 50, "lying_min_deg": 40}}]},
     "cameras[0].detectors[0].fall", "larger than upright_max_deg"),
    ({"id": "a", "source": {"type": "url", "url": "rtsp://h/x"}, "fps": 0}, "cameras[0].fps", "greater than or equal"),
    ({"id": "a/b", "source": {"type": "url", "url": "rtsp://h/x"}}, "cameras[0].id", "pattern"),
    ({"id": "a", "source": {"type": "v4l2", "device": "video0"}}, "cameras[0].source.device", "/dev/videoN"),
])
def test_errors_name_the_line_and_key(tmp_path, cam, key, words):
    with pytest.raises(ConfigError) as exc:
        load_config(site(tmp_path, [cam]))
    text = str(exc.value)
    assert f": {key}: " in text and words in text, text
    assert "site.yaml:" in text


def test_two_detectors_need_two_ids():
    with pytest.raises(ValidationError, match="used twice"):
        CameraConfig.model_validate({"id": "a", "source": {"type": "url", "url": "rtsp://h/x"},
                                     "detectors": [{"type": "pose_fall"}, {"type": "pose_fall"}]})


def test_cross_checks(tmp_path):
    cams = [{"id": "a", "source": {"type": "file", "path": "missing.avi"}},
            {"id": "a", "source": {"type": "url", "url": "rtsp://h/x"}, "detectors": [{"type": "pose_fall", "model": "."}]}]
    p = site(tmp_path, cams)
    src = load_yaml(p)
    cfg_site = type("S", (), {"cameras": [CameraConfig.model_validate(c) for c in cams], "buses": []})()
    problems = [str(x) for x in validate_cameras(cfg_site, src, str(tmp_path))]
    assert any("cameras[0].source.path: video file not found" in x for x in problems), problems
    assert any("cameras[1].id: duplicate camera id 'a'" in x for x in problems), problems
    assert any("cameras[1].detectors[0].model: is a folder" in x for x in problems), problems
