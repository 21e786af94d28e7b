"""`python -m simulator camera`: scenario videos OpenCV can read, and their ground truth."""

from __future__ import annotations

from tests.camera_support import require_camera_extra

require_camera_extra()

import json
import subprocess
import sys

import cv2

from inference.artifacts import PERSON_PHOTO
from tests.camera_support import ROOT, require


def test_cli_writes_readable_videos_and_a_manifest(tmp_path):
    require(PERSON_PHOTO)
    out = subprocess.run([sys.executable, "-m", "simulator", "camera", "--out", str(tmp_path), "--scenario", "fall_left",
                          "--scenario", "empty_lighting", "--fps", "10", "--still", "2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    hello = json.loads(out.stdout.strip().splitlines()[-1])
    assert hello["simulator"] == "camera" and [v["scenario"] for v in hello["videos"]] == ["fall_left", "empty_lighting"]
    man = json.loads((tmp_path / "manifest.json").read_text())
    fall = man["videos"][0]
    assert fall["falls"] == 1 and fall["rest_at"] > 0 and man["videos"][1]["falls"] == 0
    cap = cv2.VideoCapture(str(tmp_path / "fall_left.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == 10 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 640
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == fall["frames"] and abs(n / 10 - (fall["rest_at"] + 2)) < 0.2


def test_mp4v_and_bad_arguments(tmp_path):
    require(PERSON_PHOTO)
    from simulator.camera import generate

    man = generate(tmp_path, ["sit_down"], fps=5, codec="mp4v", still=1)
    cap = cv2.VideoCapture(str(tmp_path / man["videos"][0]["file"]))
    assert man["videos"][0]["file"].endswith(".mp4") and cap.read()[0]
    bad = subprocess.run([sys.executable, "-m", "simulator", "camera", "--scenario", "moonwalk"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_missing_photo_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "simulator", "camera", "--out", str(tmp_path), "--photo", str(tmp_path / "x.jpg")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 1 and "cannot read the person photo" in out.stderr
