"""pose_detection decoding: anchors, letterbox, decode + NMS, preprocessing, model errors, the real model."""

from __future__ import annotations

from tests.camera_support import require_camera_extra

require_camera_extra()

import math
import sys
import types

import cv2
import numpy as np
import pytest

from inference.artifacts import PERSON_PHOTO
from inference.fall import axis_angle
from inference.pose import (
    ANCHORS,
    INPUT_SIZE,
    NUM_ANCHORS,
    ModelError,
    PoseDetector,
    decode,
    load_interpreter_class,
    make_anchors,
    preprocess,
)
from tests.camera_support import require, require_model


def test_anchor_layout():
    a = make_anchors()
    assert a.shape == (NUM_ANCHORS, 2) == (28 * 28 * 2 + 14 * 14 * 2 + 7 * 7 * 6, 2)
    assert np.allclose(a[0], [0.5 / 28, 0.5 / 28]) and np.allclose(a[1], a[0])  # two anchors per cell
    assert np.allclose(a[2], [1.5 / 28, 0.5 / 28])
    assert np.allclose(a[1568], [0.5 / 14, 0.5 / 14])  # stride 16 starts after 28*28*2
    assert np.allclose(a[1568 + 392], [0.5 / 7, 0.5 / 7])  # the shared stride-32 layers: 6 per cell
    assert np.allclose(a[1568 + 392: 1568 + 392 + 6], a[1568 + 392])
    assert np.allclose(a[-1], [6.5 / 7, 6.5 / 7])


def _raw(entries):
    """Model outputs with the given anchors 'firing': {index: (logit, [12 offsets in 224 px])}."""
    boxes = np.zeros((1, NUM_ANCHORS, 12), np.float32)
    scores = np.full((1, NUM_ANCHORS, 1), -20.0, np.float32)
    for i, (logit, offs) in entries.items():
        boxes[0, i] = offs
        scores[0, i, 0] = logit
    return boxes, scores


def test_decode_maps_offsets_from_the_anchor_through_the_letterbox():
    frame = np.zeros((480, 640, 3), np.uint8)
    _, lb = preprocess(frame)
    assert lb.scale == pytest.approx(224 / 640) and lb.pad_x == 0 and lb.pad_y == 28
    i = 28 * 2 * 14 + 2 * 10  # row 14, column 10 of the stride-8 grid
    ax, ay = ANCHORS[i] * INPUT_SIZE
    offs = [4, -6, 20, 30, 0, 40, 0, 100, 0, -30, 0, -50]  # box dx dy w h; hip, body, shoulder, upper
    boxes, scores = _raw({i: (3.0, offs)})
    (p,) = decode(boxes, scores, lb)
    assert p.score == pytest.approx(1 / (1 + math.exp(-3.0)), rel=1e-5)

    def frame_xy(x224, y224):
        return ((x224 - lb.pad_x) / lb.scale, (y224 - lb.pad_y) / lb.scale)

    cx, cy = frame_xy(ax + 4, ay - 6)
    assert (p.box[0] + p.box[2]) / 2 == pytest.approx(cx, abs=1e-3)
    assert (p.box[1] + p.box[3]) / 2 == pytest.approx(cy, abs=1e-3)
    assert p.box[2] - p.box[0] == pytest.approx(20 / lb.scale, abs=1e-3)
    assert p.hip == pytest.approx(frame_xy(ax, ay + 40), abs=1e-3)
    assert p.shoulder == pytest.approx(frame_xy(ax, ay - 30), abs=1e-3)
    assert p.body_radius == pytest.approx(60 / lb.scale, abs=1e-3)
    assert axis_angle(p.hip, p.shoulder) == pytest.approx(0.0)


def test_weighted_nms_merges_overlaps_and_keeps_separate_people():
    _, lb = preprocess(np.zeros((224, 224, 3), np.uint8))
    offs = [0, 0, 40, 40, 0, 30, 0, 60, 0, -20, 0, -40]
    near = {0: (4.0, offs), 1: (2.0, [2, 0, 40, 40, 0, 30, 0, 60, 0, -20, 0, -40])}  # same cell: merged
    far = {NUM_ANCHORS - 1: (3.0, offs)}
    poses = decode(*_raw(near | far), lb)
    assert len(poses) == 2
    merged = max(poses, key=lambda p: p.score)
    w4, w2 = 1 / (1 + math.exp(-4)), 1 / (1 + math.exp(-2))
    assert (merged.box[0] + merged.box[2]) / 2 == pytest.approx(ANCHORS[0][0] * 224 + 2 * w2 / (w4 + w2), abs=1e-3)
    assert decode(*_raw(near), lb, min_score=0.99) == []


def test_preprocess_letterboxes_rgb_in_minus_one_to_one():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :] = (255, 0, 0)  # blue in BGR
    t, lb = preprocess(frame)
    assert t.shape == (1, 224, 224, 3) and t.dtype == np.float32
    assert t.min() >= -1.0 and t.max() <= 1.0
    mid = t[0, 112, 112]
    assert mid[2] == pytest.approx(1.0) and mid[0] == pytest.approx(-1.0)  # RGB order
    assert np.all(t[0, :lb.pad_y] == -1.0) and np.all(t[0, 224 - lb.pad_y:] == -1.0)  # black bars


def test_missing_corrupt_and_unexpected_models_give_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="model file not found.*fetch_models"):
        PoseDetector(str(tmp_path / "nope.tflite"))
    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelError, match="cannot load model .*corrupt"):
        PoseDetector(str(bad))
    with pytest.raises(ModelError, match="sha256"):
        PoseDetector(str(bad), sha256="0" * 64)


def test_fallback_to_tflite_runtime(monkeypatch):
    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = object
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    cls, name = load_interpreter_class()
    assert cls is object and name == "tflite_runtime"
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(ModelError, match="camera extra"):
        load_interpreter_class()


@pytest.fixture(scope="module")
def detector():
    return PoseDetector(require_model(), num_threads=1)


def _scene(angle: float) -> np.ndarray:
    require(PERSON_PHOTO)
    photo = cv2.imread(str(PERSON_PHOTO.path))
    small = cv2.resize(photo, (128, 150))
    frame = np.full((480, 640, 3), 170, np.uint8)
    tile = np.full((300, 300, 3), 170, np.uint8)
    tile[75:225, 86:214] = small
    m = cv2.getRotationMatrix2D((150, 150), angle, 1.0)
    frame[100:400, 200:500] = cv2.warpAffine(tile, m, (300, 300), borderValue=(170, 170, 170))
    return frame


def test_real_model_finds_the_person_and_the_body_axis(detector):
    assert detector.runtime == "ai_edge_litert"
    (p,) = detector.detect(_scene(0))
    assert p.score > 0.8
    assert p.hip[1] > p.shoulder[1] and axis_angle(p.hip, p.shoulder) < 15
    lying = max(detector.detect(_scene(90)), key=lambda q: q.score)
    assert axis_angle(lying.hip, lying.shoulder) > 60
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_real_model_is_fast_enough(detector):
    import time

    frame = _scene(0)
    detector.detect(frame)
    t0 = time.perf_counter()
    for _ in range(10):
        detector.detect(frame)
    ms = (time.perf_counter() - t0) / 10 * 1000
    assert ms < 60, f"{ms:.1f} ms per inference"
