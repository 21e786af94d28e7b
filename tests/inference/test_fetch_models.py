"""scripts/fetch_models.py: idempotent, verified, and clear when offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from inference.artifacts import ALL, PERSON_PHOTO, POSE_DETECTION
from tests.camera_support import ROOT, require
from tests.support import free_port

SCRIPT = str(ROOT / "scripts" / "fetch_models.py")


def run(artifacts, *args, offline=True):
    env = {**os.environ, "CANOPY_ARTIFACTS": str(artifacts)}
    if offline:  # a closed port on loopback: any download fails at once
        env |= {"PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple", "PIP_NO_CACHE_DIR": "1",
                "PIP_FIND_LINKS": "", "PIP_RETRIES": "0"}
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=120)


def test_check_reports_missing(tmp_path):
    out = run(tmp_path, "--check")
    assert out.returncode == 1
    assert out.stdout.count("MISSING") == len(ALL)


def test_offline_without_artefacts_is_a_clear_error(tmp_path):
    out = run(tmp_path, "--only", "pose_detection.tflite")
    assert out.returncode == 1
    assert "cannot download mediapipe==0.10.21" in out.stderr and "Fix:" in out.stderr
    assert POSE_DETECTION.sha256 in out.stderr
    assert not (tmp_path / "models" / "pose_detection.tflite").exists()


def test_present_and_verified_needs_no_network_and_a_corrupt_one_is_refetched(tmp_path):
    require(POSE_DETECTION, PERSON_PHOTO)
    for a in ALL:
        (tmp_path / a.relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(a.path, tmp_path / a.relpath)
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("present and verified") == len(ALL)
    (tmp_path / PERSON_PHOTO.relpath).write_bytes(b"not the photo")
    out = run(tmp_path)  # offline: it notices, tries to fetch again, and says why it cannot
    assert out.returncode == 1 and "does not match its pinned sha256" in out.stdout
    assert "cannot download matplotlib" in out.stderr
