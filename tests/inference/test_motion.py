"""Motion gate: noise, motion, lighting changes, masks."""

from __future__ import annotations

from tests.camera_support import require_camera_extra

require_camera_extra()

import numpy as np

from inference.config import MotionConfig
from inference.motion import MotionGate


def scene(rng, box=None, gain=1.0):
    img = np.full((480, 640, 3), 140, np.float32)
    img[300:] = 90
    img[100:200, 400:550] = 220
    if box is not None:
        x, y = box
        img[y:y + 120, x:x + 60] = 30
    img = img * gain + rng.normal(0, 2.5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_still_noisy_scene_is_not_motion_and_a_person_moving_is():
    rng = np.random.default_rng(1)
    g = MotionGate(MotionConfig())
    assert g(scene(rng))[0] is True  # the first frame has nothing to compare with
    for _ in range(5):
        moving, ratio = g(scene(rng))
        assert not moving and ratio < 0.001
    g(scene(rng, (100, 200)))
    moving, ratio = g(scene(rng, (140, 200)))
    assert moving and ratio > 0.003


def test_lighting_change_is_compensated():
    rng = np.random.default_rng(2)
    g = MotionGate(MotionConfig())
    g(scene(rng))
    assert not g(scene(rng, gain=0.7))[0]
    assert not g(scene(rng, gain=1.1))[0]
    raw = MotionGate(MotionConfig(compensate_lighting=False))
    raw(scene(rng))
    assert raw(scene(rng, gain=0.7))[0]


def test_masks_hide_motion_inside_them():
    rng = np.random.default_rng(3)
    mask = [[0.1, 0.35], [0.35, 0.35], [0.35, 0.75], [0.1, 0.75]]  # around x 64-224, y 168-360
    g = MotionGate(MotionConfig(masks=[mask]))
    g(scene(rng, (100, 200)))
    assert not g(scene(rng, (120, 210)))[0]
    assert g(scene(rng, (400, 300)))[0]


def test_min_area_is_a_share_of_the_unmasked_frame():
    rng = np.random.default_rng(4)
    g = MotionGate(MotionConfig(min_area=0.5))
    g(scene(rng, (100, 200)))
    moving, ratio = g(scene(rng, (300, 200)))
    assert not moving and 0.003 < ratio < 0.5
