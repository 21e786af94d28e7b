"""Local evidence: blurred, private files, retention."""

from __future__ import annotations

from tests.camera_support import require_camera_extra

require_camera_extra()

import os
import stat
import time

import cv2
import numpy as np

from inference.config import PrivacyConfig
from inference.evidence import blur, prune, save_evidence, shrink_jpeg


def picture() -> np.ndarray:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)  # full of detail
    cv2.putText(img, "FACE", (220, 260), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 8)
    return img


def detail(a: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_blur_wipes_the_person_box_and_only_it():
    img = picture()
    box = (200, 150, 460, 330)
    out = blur(img, box)
    inside, orig_inside = out[150:330, 200:460], img[150:330, 200:460]
    assert detail(inside) < 0.02 * detail(orig_inside)
    assert np.array_equal(out[:140], img[:140]) and np.array_equal(out[:, :190], img[:, :190])
    whole = blur(img, box, "frame")
    assert detail(whole) < 0.02 * detail(img)


def test_saved_snapshot_is_private_blurred_and_pruned(tmp_path):
    img = picture()
    p = PrivacyConfig(evidence=True, max_files=3)
    data = save_evidence(str(tmp_path), "hall", "hall-fall-1", img, (200, 150, 460, 330), p)
    folder = tmp_path / "hall"
    (f,) = folder.glob("*.jpg")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700 and stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert f.read_bytes() == data
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert detail(back[160:320, 210:450]) < 0.05 * detail(img[160:320, 210:450])
    for i in range(2, 7):
        save_evidence(str(tmp_path), "hall", f"hall-fall-{i}", img, None, p, now=time.time() + i)
    assert len(list(folder.glob("*.jpg"))) == 3
    old = folder / "19990101T000000-old.jpg"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 8 * 86400,) * 2)
    assert prune(folder, 7, 100) == 1 and not old.exists()


def test_shrink_to_fit():
    ok, jpg = cv2.imencode(".jpg", picture(), [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = jpg.tobytes()
    small = shrink_jpeg(data, 40_000)
    assert small is not None and len(small) <= 40_000
    assert shrink_jpeg(b"tiny", 10) is None or len(shrink_jpeg(b"tiny", 10)) <= 10
