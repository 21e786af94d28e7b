"""MediaPipe pose_detection.tflite (BlazePose detector) on LiteRT: preprocessing, anchors, decoding, NMS.

The model takes a 224x224 RGB image (the frame letterboxed, scaled to [-1, 1])
and predicts, for each of 2254 SSD anchors, a face box and four keypoints as
offsets from the anchor centre in pixels of 224, plus a score logit:

- keypoint 0: hip centre;            keypoint 1: a point on the full-body circle (its radius: body scale);
- keypoint 2: shoulder centre;        keypoint 3: a point on the upper-body circle.

Everything here is synchronous and runs in the camera's worker thread.
numpy/cv2 are imported here, never by inference.config.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

INPUT_SIZE = 224
NUM_ANCHORS = 2254
NUM_COORDS = 12


class ModelError(RuntimeError):
    """The model file is missing, unreadable, corrupt or not the expected kind."""


def make_anchors() -> np.ndarray:
    """Anchor centres [2254, 2] (x, y normalised), as MediaPipe's SsdAnchorsCalculator builds them.

    Layers with strides 8, 16, 32, 32, 32 (the last three share one 7x7 grid);
    two anchors per layer per cell (fixed size 1x1), so 28²x2 + 14²x2 + 7²x6.
    """
    strides = [8, 16, 32, 32, 32]
    out = []
    layer = 0
    while layer < len(strides):
        n = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            n += 2  # aspect ratio 1.0 plus the interpolated scale
            last += 1
        size = math.ceil(INPUT_SIZE / strides[layer])
        ys, xs = np.mgrid[0:size, 0:size]
        centres = np.stack([(xs + 0.5) / size, (ys + 0.5) / size], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, n, axis=1).reshape(-1, 2))
        layer = last
    anchors = np.concatenate(out).astype(np.float32)
    assert anchors.shape == (NUM_ANCHORS, 2), anchors.shape
    return anchors


ANCHORS = make_anchors()


@dataclass(frozen=True, slots=True)
class Letterbox:
    scale: float  # model pixels per frame pixel
    pad_x: int
    pad_y: int
    width: int  # frame size
    height: int


def preprocess(frame_bgr: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """Letterbox a BGR frame to 224x224 RGB float32 in [-1, 1] (shape [1, 224, 224, 3])."""
    h, w = frame_bgr.shape[:2]
    scale = INPUT_SIZE / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    pad_x, pad_y = (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2
    resized = cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    if out is None:
        out = np.empty((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    np.multiply(rgb, 1.0 / 127.5, out=out[0], casting="unsafe")
    out -= 1.0
    # the padding is black in the frame, i.e. -1 after scaling: MediaPipe pads with zeros *before* scaling too
    return out, Letterbox(scale, pad_x, pad_y, w, h)


@dataclass(frozen=True, slots=True)
class Pose:
    """One detected person in frame pixels."""

    score: float
    box: tuple[float, float, float, float]  # face box x0, y0, x1, y1
    hip: tuple[float, float]
    body: tuple[float, float]  # point on the full-body circle around the hip
    shoulder: tuple[float, float]
    upper: tuple[float, float]  # point on the upper-body circle around the shoulder

    @property
    def body_radius(self) -> float:
        return math.dist(self.hip, self.body)

    @property
    def torso(self) -> float:
        return math.dist(self.hip, self.shoulder)

    def person_box(self) -> tuple[float, float, float, float]:
        """A box around the whole person: face box, shoulder and hip, extended past the hip by one torso length
        along the body axis (where the legs are).  Used for the aspect feature and to blur evidence."""
        hx, hy = self.hip
        sx, sy = self.shoulder
        fx, fy = hx + (hx - sx) * 1.1, hy + (hy - sy) * 1.1  # feet, roughly, on the axis
        pad = 0.35 * self.torso
        xs = [self.box[0], self.box[2], hx, sx, fx]
        ys = [self.box[1], self.box[3], hy, sy, fy]
        return (min(xs) - pad, min(ys) - pad * 0.5, max(xs) + pad, max(ys) + pad * 0.5)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, lb: Letterbox, *, min_score: float = 0.5,
           iou_threshold: float = 0.3, max_poses: int = 4) -> list[Pose]:
    """Decode [1,2254,12] offsets + [1,2254,1] logits to poses in frame pixels (weighted NMS)."""
    scores = sigmoid(raw_scores.reshape(NUM_ANCHORS))
    idx = np.nonzero(scores >= min_score)[0]
    if idx.size == 0:
        return []
    raw = raw_boxes.reshape(NUM_ANCHORS, NUM_COORDS)[idx].astype(np.float64)
    anc = ANCHORS[idx].astype(np.float64)
    s = scores[idx].astype(np.float64)
    pts = raw / INPUT_SIZE  # normalised offsets (anchor size is 1)
    cx, cy = pts[:, 0] + anc[:, 0], pts[:, 1] + anc[:, 1]
    w, h = pts[:, 2], pts[:, 3]
    dets = np.empty((idx.size, 12))
    dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3] = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    for k in range(4):
        dets[:, 4 + 2 * k] = pts[:, 4 + 2 * k] + anc[:, 0]
        dets[:, 5 + 2 * k] = pts[:, 5 + 2 * k] + anc[:, 1]
    # from the 224 letterbox to frame pixels
    dets[:, 0::2] = (dets[:, 0::2] * INPUT_SIZE - lb.pad_x) / lb.scale
    dets[:, 1::2] = (dets[:, 1::2] * INPUT_SIZE - lb.pad_y) / lb.scale
    poses = []
    order = np.argsort(-s)
    remaining = order
    while remaining.size and len(poses) < max_poses:
        best = remaining[0]
        ious = _iou(dets[best, :4], dets[remaining, :4])
        group = remaining[ious > iou_threshold]
        if group.size == 0:
            group = remaining[:1]
        wts = s[group]
        merged = (dets[group] * wts[:, None]).sum(axis=0) / wts.sum()
        m = merged.tolist()
        poses.append(Pose(float(s[best]), (m[0], m[1], m[2], m[3]), (m[4], m[5]), (m[6], m[7]), (m[8], m[9]), (m[10], m[11])))
        remaining = remaining[ious <= iou_threshold]
    return poses


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    a = (box[2] - box[0]) * (box[3] - box[1])
    b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(a + b - inter, 1e-9)


def load_interpreter_class():
    """``Interpreter`` from ai_edge_litert, else from tflite_runtime (the fallback)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore

        return Interpreter, "ai_edge_litert"
    except ImportError as first:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore

            return Interpreter, "tflite_runtime"
        except ImportError:
            raise ModelError("no TFLite runtime: install the camera extra (pip install 'canopy-gateway[camera]', "
                             f"which brings ai-edge-litert) ({first})") from None


class PoseDetector:
    """One interpreter; call from one thread only (the camera's worker)."""

    def __init__(self, model_path: str, num_threads: int = 1, min_score: float = 0.5, iou_threshold: float = 0.3,
                 max_poses: int = 4, sha256: str | None = None):
        self.model_path = model_path
        if not os.path.isfile(model_path):
            raise ModelError(f"model file not found: {model_path} (run `python scripts/fetch_models.py`, or fix the "
                             "camera's detector model path)")
        if sha256:
            from inference.artifacts import sha256_of

            got = sha256_of(model_path)
            if got != sha256.lower():
                raise ModelError(f"model file {model_path} has sha256 {got}, expected {sha256} (corrupt or a different "
                                 "model; fetch it again with `python scripts/fetch_models.py --force`)")
        Interpreter, self.runtime = load_interpreter_class()
        try:
            self.interp = Interpreter(model_path=model_path, num_threads=num_threads)
            self.interp.allocate_tensors()
        except Exception as exc:  # corrupt flatbuffer, unsupported op, wrong file...
            raise ModelError(f"cannot load model {model_path}: {type(exc).__name__}: {str(exc).strip()[:300]} "
                             "(corrupt or not a TFLite model?)") from None
        inp = self.interp.get_input_details()
        outs = self.interp.get_output_details()
        if len(inp) != 1 or tuple(inp[0]["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3) or inp[0]["dtype"] != np.float32:
            raise ModelError(f"{model_path} is not a pose_detection model: input {[tuple(i['shape']) for i in inp]}, "
                             f"expected [1, {INPUT_SIZE}, {INPUT_SIZE}, 3] float32")
        shapes = {tuple(o["shape"]): o["index"] for o in outs}
        if (1, NUM_ANCHORS, NUM_COORDS) not in shapes or (1, NUM_ANCHORS, 1) not in shapes:
            raise ModelError(f"{model_path} is not a pose_detection model: outputs {[tuple(o['shape']) for o in outs]}, "
                             f"expected [1, {NUM_ANCHORS}, {NUM_COORDS}] and [1, {NUM_ANCHORS}, 1]")
        self._in = inp[0]["index"]
        self._boxes = shapes[(1, NUM_ANCHORS, NUM_COORDS)]
        self._scores = shapes[(1, NUM_ANCHORS, 1)]
        self._buf = np.empty((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        self.min_score, self.iou_threshold, self.max_poses = min_score, iou_threshold, max_poses

    def detect(self, frame_bgr: np.ndarray) -> list[Pose]:
        tensor, lb = preprocess(frame_bgr, self._buf)
        self.interp.set_tensor(self._in, tensor)
        self.interp.invoke()
        boxes = self.interp.get_tensor(self._boxes)
        scores = self.interp.get_tensor(self._scores)
        return decode(boxes, scores, lb, min_score=self.min_score, iou_threshold=self.iou_threshold, max_poses=self.max_poses)
