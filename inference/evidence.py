"""Optional local evidence: a blurred snapshot of a fall, kept on the board with a retention limit.

Off by default (``privacy.evidence: false``).  The whole person box (or the
whole frame) is blurred beyond recognition before anything is written; files
are 0600 in a 0700 folder, deleted after ``retention_days`` or beyond
``max_files`` per camera.  Nothing here sends anything anywhere.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import cv2
import numpy as np

from inference.config import PrivacyConfig

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def blur(image: np.ndarray, box, mode: str = "person") -> np.ndarray:
    """Pixelate and blur the person box (or the whole frame) so nobody can be recognised."""
    out = image.copy()
    h, w = out.shape[:2]
    if mode == "frame" or box is None:
        x0, y0, x1, y1 = 0, 0, w, h
    else:
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(w, int(box[2]) + 1), min(h, int(box[3]) + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            x0, y0, x1, y1 = 0, 0, w, h
    roi = out[y0:y1, x0:x1]
    rh, rw = roi.shape[:2]
    small = cv2.resize(roi, (max(1, rw // 16), max(1, rh // 16)), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(small, (rw, rh), interpolation=cv2.INTER_NEAREST)
    k = max(3, (min(rw, rh) // 8) | 1)
    out[y0:y1, x0:x1] = cv2.GaussianBlur(coarse, (k, k), 0)
    return out


def save_evidence(root: str, camera: str, fall_id: str, image: np.ndarray, box, privacy: PrivacyConfig,
                  now: float | None = None) -> bytes | None:
    """Blur, write ``<root>/<camera>/<time>-<fall_id>.jpg`` (0600), apply retention; returns the JPEG bytes."""
    now = time.time() if now is None else now
    folder = Path(root) / _SAFE.sub("_", camera)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    img = blur(image, box, privacy.blur)
    if img.shape[1] > 640:
        img = cv2.resize(img, (640, round(img.shape[0] * 640 / img.shape[1])), interpolation=cv2.INTER_AREA)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        return None
    data = jpg.tobytes()
    name = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"-{_SAFE.sub('_', fall_id)}.jpg"
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    prune(folder, privacy.retention_days, privacy.max_files, now)
    return data


def prune(folder: str | os.PathLike, retention_days: float, max_files: int, now: float | None = None) -> int:
    """Delete snapshots past the retention time, then the oldest beyond ``max_files``; returns how many."""
    now = time.time() if now is None else now
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    files = sorted((p for p in folder.glob("*.jpg") if p.is_file()), key=lambda p: p.stat().st_mtime)
    removed = 0
    keep = []
    for p in files:
        if now - p.stat().st_mtime > retention_days * 86400:
            p.unlink(missing_ok=True)
            removed += 1
        else:
            keep.append(p)
    for p in keep[: max(0, len(keep) - max_files)]:
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def shrink_jpeg(data: bytes, max_bytes: int) -> bytes | None:
    """Re-encode smaller until it fits (for ``send_evidence``); None if it cannot."""
    if len(data) <= max_bytes:
        return data
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    for width, q in ((480, 70), (320, 60), (240, 50), (160, 40)):
        small = cv2.resize(img, (width, max(1, round(img.shape[0] * width / img.shape[1]))), interpolation=cv2.INTER_AREA)
        ok, jpg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok and len(jpg) <= max_bytes:
            return jpg.tobytes()
    return None
