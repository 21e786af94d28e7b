"""Motion gate: frame differencing on a small grey frame, with masks and lighting compensation.

Runs in the camera's worker thread.  The detectors only run when something
moved (or when the service asks for a periodic re-check), which is what makes
a Pi-class CPU enough: an empty or still room costs ~0.3 ms per frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from inference.config import MotionConfig


class MotionGate:
    def __init__(self, cfg: MotionConfig):
        self.cfg = cfg
        self.prev: np.ndarray | None = None
        self.keep: np.ndarray | None = None  # True where pixels count (not masked)
        self.keep_count = 0
        self.size: tuple[int, int] | None = None  # the small frame compared (width, height)
        self._src: tuple[int, int] | None = None  # the camera frame size it was prepared for
        self.last_ratio = 0.0

    def _prepare(self, w: int, h: int) -> None:
        sw = min(self.cfg.width, w)
        sh = max(8, round(h * sw / w))
        self.size = (sw, sh)
        keep = np.full((sh, sw), 255, np.uint8)
        for poly in self.cfg.masks:
            pts = np.array([[round(x * (sw - 1)), round(y * (sh - 1))] for x, y in poly], np.int32)
            cv2.fillPoly(keep, [pts], 0)
        self.keep = keep > 0
        self.keep_count = int(self.keep.sum())
        self.prev = None

    def small(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        if self.size is None or self._src != (w, h):
            self._src = (w, h)
            self._prepare(w, h)
        small = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        grey = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def __call__(self, frame: np.ndarray) -> tuple[bool, float]:
        """(moving, share of the unmasked frame that changed) against the previous analysed frame."""
        cur = self.small(frame)
        prev, self.prev = self.prev, cur
        if prev is None or self.keep_count == 0:
            self.last_ratio = 1.0 if self.keep_count else 0.0
            return self.keep_count > 0, self.last_ratio
        if self.cfg.compensate_lighting:
            # a change of the whole scene's brightness (lights, clouds, auto-exposure) is not motion:
            # scale the previous frame to the current one's mean over the unmasked area
            m_cur = float(cur.mean(where=self.keep)) if self.keep_count < self.keep.size else float(cur.mean())
            m_prev = float(prev.mean(where=self.keep)) if self.keep_count < self.keep.size else float(prev.mean())
            if m_prev > 1.0:
                prev = cv2.convertScaleAbs(prev, alpha=m_cur / m_prev)
        diff = cv2.absdiff(cur, prev)
        changed = diff > self.cfg.threshold
        if self.keep_count < self.keep.size:
            changed &= self.keep
        ratio = float(np.count_nonzero(changed)) / self.keep_count
        self.last_ratio = ratio
        return ratio >= self.cfg.min_area, ratio
