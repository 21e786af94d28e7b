"""Scenario videos for the camera pipeline: a real person photo animated in a room.

``python -m simulator camera --out DIR`` writes one video per scenario (MJPG
``.avi`` by default, ``mp4v`` ``.mp4`` with ``--codec mp4v``) and ``manifest.json``
with the ground truth (how many falls each video must raise).

The person is the photo fetched at setup (``scripts/fetch_models.py``:
``grace_hopper.jpg`` from matplotlib's sample data): her head and shoulders are
cut out, a navy uniform jacket is extended down to the hip and legs are drawn,
so the figure is a whole person the pose detector sees as one.  The figure is
posed by a few parameters per frame (hip position, torso angle, leg angle,
thigh foreshortening, walking phase) and composited on a drawn room with sensor
noise.  Scenarios:

- ``walk_in``: walks in, stands, walks about, walks out (no fall);
- ``fall_left`` / ``fall_right``: walks in, stands, falls sideways in 0.6 s, lies still;
- ``fall_recover``: falls, lies still, gets up slowly and stands (one fall, resolved);
- ``lie_down_slowly``: sits down on the floor, then reclines over 5 s (no fall);
- ``sit_down``: sits down on a chair and stays (no fall);
- ``bend``: bends over twice to pick something up (no fall);
- ``empty_lighting``: nobody; lights dim, switch on and off, a sun patch moves (no fall).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

W, H = 640, 480
FLOOR_Y = 470  # where standing feet are
SCALE = 0.23  # sprite pixels -> frame pixels
HIP_ANCHOR = (256.0, 890.0)  # in sprite pixels (the photo is 512 x 600; the jacket is extended to the hip)
THIGH, SHIN, LEG_W = 500.0, 480.0, 150.0  # sprite pixels
NAVY = (52, 30, 28)  # BGR, the uniform
SHOE = (20, 20, 24)


@dataclass(frozen=True)
class Pose:
    x: float | None  # hip x in the frame; None: nobody in the room
    y: float = 0.0  # hip y
    torso: float = 0.0  # degrees from vertical-up; + leans to the image right
    legs: float = 0.0  # degrees, same convention for the leg axis (0: straight down)
    thigh: float = 1.0  # thigh length factor (sitting facing the camera: foreshortened)
    knee: float = 0.0  # shin angle relative to the thigh, degrees
    swing: float = 0.0  # walking: leg swing amplitude, degrees (alternating)


STAND_Y = FLOOR_Y - (THIGH + SHIN) * SCALE - 8  # hip height standing
LIE_Y = FLOOR_Y - 62  # hip height lying on the floor (half the body's thickness above it)


# --------------------------------------------------------------------------- the figure
def _person_sprite(photo: np.ndarray) -> np.ndarray:
    """BGRA sprite: head and shoulders from the photo, the jacket extended to the hip."""
    ph, pw = photo.shape[:2]
    if (pw, ph) != (512, 600):
        photo = cv2.resize(photo, (512, 600), interpolation=cv2.INTER_AREA)
    sprite = np.zeros((int(HIP_ANCHOR[1]) + 40, 512, 4), np.uint8)
    mask = np.zeros((600, 512), np.uint8)
    head_and_shoulders = np.array([(150, 70), (200, 22), (330, 22), (372, 80), (382, 200), (368, 292), (340, 330),
                                   (450, 365), (505, 430), (512, 600), (0, 600), (8, 440), (60, 365), (188, 330),
                                   (158, 292), (142, 200)], np.int32)
    cv2.fillPoly(mask, [head_and_shoulders], 255)
    mask = cv2.GaussianBlur(mask, (7, 7), 0)
    sprite[:600, :, :3] = photo
    sprite[:600, :, 3] = mask
    jacket = np.array([(0, 590), (512, 590), (470, 905), (42, 905)], np.int32)
    cv2.fillPoly(sprite, [jacket], (*NAVY, 255))
    cv2.line(sprite, (48, 872), (464, 872), (30, 22, 20, 255), 14)  # a belt line
    for y in (640, 720, 800):  # jacket buttons
        cv2.circle(sprite, (256, y), 9, (40, 170, 200, 255), -1)
    return sprite


def _room(seed: int, chair: bool = False) -> np.ndarray:
    """A living room: wall, window, picture, door, floor boards, a sofa, a rug (BGR)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.uint8)
    horizon = 300
    wall = np.linspace(205, 180, horizon)[:, None]
    img[:horizon] = np.dstack([wall * 0.86, wall * 0.93, wall]).astype(np.uint8)
    floor = np.linspace(95, 130, H - horizon)[:, None]
    img[horizon:] = np.dstack([floor * 0.55, floor * 0.75, floor]).astype(np.uint8)
    for x in range(-400, W + 400, 70):  # floor boards in perspective
        cv2.line(img, (W // 2 + (x - W // 2) // 3, horizon), (x, H), (50, 70, 95), 1)
    cv2.line(img, (0, horizon), (W, horizon), (120, 130, 140), 3)  # skirting board
    cv2.rectangle(img, (420, 60), (580, 200), (235, 225, 210), -1)  # window
    cv2.rectangle(img, (420, 60), (580, 200), (90, 100, 110), 4)
    cv2.line(img, (500, 60), (500, 200), (90, 100, 110), 3)
    cv2.rectangle(img, (60, 80), (170, 160), (60, 90, 140), -1)  # picture
    cv2.rectangle(img, (60, 80), (170, 160), (40, 50, 60), 3)
    cv2.rectangle(img, (250, 70), (330, 300), (90, 120, 150), -1)  # door
    cv2.circle(img, (318, 190), 5, (40, 160, 200), -1)
    cv2.rectangle(img, (0, 230), (110, 330), (70, 60, 120), -1)  # sofa
    cv2.rectangle(img, (0, 200), (95, 240), (80, 70, 135), -1)
    cv2.ellipse(img, (380, 420), (190, 40), 0, 0, 360, (60, 80, 150), -1)  # rug
    if chair:
        cv2.rectangle(img, (360, 250), (470, 262), (40, 60, 90), -1)  # back rest
        cv2.rectangle(img, (360, 262), (372, 385), (40, 60, 90), -1)
        cv2.rectangle(img, (458, 262), (470, 385), (40, 60, 90), -1)
        cv2.rectangle(img, (350, 370), (480, 385), (45, 70, 100), -1)  # seat
        cv2.line(img, (356, 385), (356, 470), (35, 50, 80), 8)
        cv2.line(img, (474, 385), (474, 470), (35, 50, 80), 8)
    texture = rng.normal(0, 3, (H, W, 1))
    return np.clip(img.astype(np.float32) + texture, 0, 255).astype(np.uint8)


def _quad(p0, p1, width: float) -> np.ndarray:
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy) or 1.0
    ox, oy = -dy / n * width / 2, dx / n * width / 2
    return np.array([(p0[0] + ox, p0[1] + oy), (p1[0] + ox, p1[1] + oy), (p1[0] - ox, p1[1] - oy),
                     (p0[0] - ox, p0[1] - oy)], np.int32)


def _draw_legs(img: np.ndarray, pose: Pose, phase: float) -> None:
    s = SCALE
    psi = math.radians(pose.legs)  # leg axis: (-sin, cos), straight down when 0
    n = (math.cos(psi), math.sin(psi))  # across the legs
    for side, sign in (("l", -1), ("r", 1)):
        swing = math.radians(pose.swing * math.sin(phase) * sign)
        a = psi + swing
        d1 = (-math.sin(a), math.cos(a))
        joint = (pose.x + n[0] * sign * 95 * s, pose.y + n[1] * sign * 95 * s)
        knee = (joint[0] + d1[0] * THIGH * s * pose.thigh, joint[1] + d1[1] * THIGH * s * pose.thigh)
        k = a + math.radians(pose.knee)
        d2 = (-math.sin(k), math.cos(k)) if pose.knee else d1
        ankle = (knee[0] + d2[0] * SHIN * s, knee[1] + d2[1] * SHIN * s)
        cv2.fillConvexPoly(img, _quad(joint, knee, LEG_W * s), NAVY, cv2.LINE_AA)
        cv2.fillConvexPoly(img, _quad(knee, ankle, LEG_W * s * 0.85), NAVY, cv2.LINE_AA)
        cv2.circle(img, (int(knee[0]), int(knee[1])), int(LEG_W * s * 0.45), NAVY, -1, cv2.LINE_AA)
        foot = (ankle[0] + d2[0] * 10 + n[0] * sign * 8, ankle[1] + d2[1] * 10 + n[1] * sign * 8)
        ang = math.degrees(math.atan2(d2[1], d2[0])) + 90
        cv2.ellipse(img, (int(foot[0]), int(foot[1])), (16, 9), ang, 0, 360, SHOE, -1, cv2.LINE_AA)


def _draw_torso(img: np.ndarray, sprite: np.ndarray, pose: Pose) -> None:
    m = cv2.getRotationMatrix2D(HIP_ANCHOR, -pose.torso, SCALE)
    m[0, 2] += pose.x - HIP_ANCHOR[0]
    m[1, 2] += pose.y - HIP_ANCHOR[1]
    # only warp into the bounding box of the rotated sprite (cheaper than the whole frame)
    sh, sw = sprite.shape[:2]
    corners = np.array([[0, 0, 1], [sw, 0, 1], [0, sh, 1], [sw, sh, 1]], np.float64) @ m.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if x1 <= x0 or y1 <= y0:
        return
    m2 = m.copy()
    m2[0, 2] -= x0
    m2[1, 2] -= y0
    patch = cv2.warpAffine(sprite, m2, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    alpha = patch[:, :, 3:4].astype(np.float32) / 255.0
    roi = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = (patch[:, :, :3].astype(np.float32) * alpha + roi * (1 - alpha)).astype(np.uint8)


def render(room: np.ndarray, sprite: np.ndarray, pose: Pose, phase: float = 0.0) -> np.ndarray:
    img = room.copy()
    if pose.x is None:
        return img
    _draw_legs(img, pose, phase)
    _draw_torso(img, sprite, pose)
    return img


# --------------------------------------------------------------------------- timelines
def _ease(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return u * u * (3 - 2 * u)


def _lerp(a: float, b: float, u: float) -> float:
    return a + (b - a) * u


def _mix(p: Pose, q: Pose, u: float) -> Pose:
    if p.x is None or q.x is None:
        return q if u >= 0.5 else p
    return Pose(_lerp(p.x, q.x, u), _lerp(p.y, q.y, u), _lerp(p.torso, q.torso, u), _lerp(p.legs, q.legs, u),
                _lerp(p.thigh, q.thigh, u), _lerp(p.knee, q.knee, u), _lerp(p.swing, q.swing, u))


class Timeline:
    """Keyframes (time, pose, easing of the segment that ends there)."""

    def __init__(self):
        self.keys: list[tuple[float, Pose, str]] = []

    def at(self, t: float, pose: Pose, ease: str = "smooth") -> "Timeline":
        self.keys.append((t, pose, ease))
        return self

    @property
    def duration(self) -> float:
        return self.keys[-1][0]

    def pose(self, t: float) -> Pose:
        keys = self.keys
        if t <= keys[0][0]:
            return keys[0][1]
        for (t0, p0, _), (t1, p1, ease) in zip(keys, keys[1:]):
            if t0 <= t <= t1:
                u = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
                if ease == "fall":  # accelerating, like gravity
                    u = u * u
                elif ease == "linear":
                    pass
                elif ease == "hold":
                    u = 0.0 if u < 1.0 else 1.0
                else:
                    u = _ease(u)
                return _mix(p0, p1, u)
        return keys[-1][1]


NOBODY = Pose(None)


def _standing(x: float, swing: float = 0.0) -> Pose:
    return Pose(x, STAND_Y, 0.0, 0.0, 1.0, 0.0, swing)


def _walk_in(tl: Timeline, t0: float, x_from: float, x_to: float, seconds: float) -> float:
    tl.at(t0, NOBODY, "hold")
    tl.at(t0 + 0.01, _standing(x_from, 18.0), "hold")
    tl.at(t0 + seconds, _standing(x_to, 18.0), "linear")
    tl.at(t0 + seconds + 0.3, _standing(x_to), "smooth")
    return t0 + seconds + 0.3


def _lying(x: float, side: int) -> Pose:
    return Pose(x, LIE_Y, 90.0 * side, 90.0 * side, 1.0, 0.0, 0.0)


@dataclass(frozen=True)
class Scenario:
    name: str
    timeline: Timeline
    falls: int  # fall events it must raise
    resolves: int  # of which resolved by standing up
    rest_at: float | None  # when the fallen person comes to rest
    chair: bool = False
    lights: str | None = None
    description: str = ""


def scenarios(still: float = 8.0) -> dict[str, Scenario]:
    out: dict[str, Scenario] = {}

    tl = Timeline()
    t = _walk_in(tl, 0.0, -60, 300, 2.6)
    tl.at(t + 2.0, _standing(300))
    tl.at(t + 3.5, _standing(420, 18.0), "linear")
    tl.at(t + 4.0, _standing(420))
    tl.at(t + 6.0, _standing(420))
    tl.at(t + 8.5, _standing(720, 18.0), "linear")
    tl.at(t + 8.51, NOBODY, "hold")
    tl.at(t + 10.0, NOBODY, "hold")
    out["walk_in"] = Scenario("walk_in", tl, 0, 0, None, description="walks in, stands, walks about, walks out")

    for name, side, x_stand in (("fall_left", -1, 400), ("fall_right", 1, 230)):
        tl = Timeline()
        t = _walk_in(tl, 0.8, -60 if side > 0 else 700, x_stand, 2.4)
        tl.at(t + 1.2, _standing(x_stand))
        t += 1.2
        lie_x = x_stand + side * 40
        tl.at(t + 0.6, _lying(lie_x, side), "fall")
        tl.at(t + 0.75, Pose(lie_x, LIE_Y - 6, 86.0 * side, 88.0 * side), "smooth")  # a small bounce
        tl.at(t + 0.9, _lying(lie_x, side), "smooth")
        rest = t + 0.9
        tl.at(rest + still, _lying(lie_x, side), "hold")
        out[name] = Scenario(name, tl, 1, 0, rest, description=f"falls to the {name.split('_')[1]} in 0.6 s and lies still")

    tl = Timeline()
    t = _walk_in(tl, 0.8, -60, 260, 2.4)
    tl.at(t + 1.0, _standing(260))
    t += 1.0
    tl.at(t + 0.55, _lying(300, 1), "fall")
    tl.at(t + 0.8, _lying(300, 1), "smooth")
    rest = t + 0.8
    tl.at(rest + still, _lying(300, 1), "hold")
    tl.at(rest + still + 1.5, Pose(270, LIE_Y - 40, 45.0, 90.0, 0.5, -60.0), "smooth")  # on one knee
    tl.at(rest + still + 3.0, _standing(260), "smooth")
    tl.at(rest + still + 7.0, _standing(260), "hold")
    out["fall_recover"] = Scenario("fall_recover", tl, 1, 1, rest, description="falls, lies still, gets up and stands")

    tl = Timeline()
    t = _walk_in(tl, 0.8, 700, 330, 2.4)
    tl.at(t + 1.0, _standing(330))
    t += 1.0
    sit = Pose(330, LIE_Y - 5, 0.0, 0.0, 0.15, 0.0)  # sitting on the floor, torso upright
    tl.at(t + 2.5, sit, "smooth")
    tl.at(t + 3.5, sit, "hold")
    tl.at(t + 8.5, _lying(300, 1), "smooth")  # reclines over 5 s
    tl.at(t + 8.5 + still, _lying(300, 1), "hold")
    out["lie_down_slowly"] = Scenario("lie_down_slowly", tl, 0, 0, None,
                                      description="sits down on the floor, then reclines slowly and lies still")

    tl = Timeline()
    t = _walk_in(tl, 0.8, -60, 415, 2.8)
    tl.at(t + 1.0, _standing(415))
    t += 1.0
    seated = Pose(415, STAND_Y + THIGH * SCALE * 0.6, 0.0, 0.0, 0.25, 0.0)
    tl.at(t + 0.9, seated, "smooth")
    tl.at(t + 0.9 + still, seated, "hold")
    out["sit_down"] = Scenario("sit_down", tl, 0, 0, None, chair=True, description="sits down on a chair and stays")

    tl = Timeline()
    t = _walk_in(tl, 0.8, 700, 320, 2.4)
    tl.at(t + 1.0, _standing(320))
    t += 1.0
    for _ in range(2):
        bent = Pose(315, STAND_Y + 6, 80.0, 0.0, 1.0, 0.0)
        tl.at(t + 0.6, bent, "smooth")
        tl.at(t + 2.4, bent, "hold")
        tl.at(t + 3.1, _standing(320), "smooth")
        tl.at(t + 4.5, _standing(320), "hold")
        t += 4.5
    tl.at(t + 1.0, _standing(320), "hold")
    out["bend"] = Scenario("bend", tl, 0, 0, None, description="bends over twice to pick something up")

    tl = Timeline().at(0.0, NOBODY).at(14.0, NOBODY, "hold")
    out["empty_lighting"] = Scenario("empty_lighting", tl, 0, 0, None, lights="changing",
                                     description="empty room: lights dim, switch on and off, a sun patch moves")
    return out


def _light(frame: np.ndarray, t: float) -> np.ndarray:
    """Lighting for the empty room: dimming, a lamp switched on/off, a moving sun patch."""
    gain = 1.0
    if 1.0 <= t < 4.0:
        gain = 1.0 - 0.35 * (t - 1.0) / 3.0  # dusk
    elif 4.0 <= t < 7.0:
        gain = 0.65
    elif 7.0 <= t < 9.0:
        gain = 1.15  # lamp on
    elif 9.0 <= t < 9.4:
        gain = 0.6 if int(t * 10) % 2 else 1.1  # flicker
    out = frame.astype(np.float32) * gain
    if 10.0 <= t < 14.0:
        x = int(80 + (t - 10.0) * 90)
        patch = np.array([(x, 320), (x + 120, 320), (x + 170, 460), (x + 40, 460)], np.int32)
        sun = np.zeros(frame.shape[:2], np.uint8)
        cv2.fillPoly(sun, [patch], 255)
        sun = cv2.GaussianBlur(sun, (31, 31), 0).astype(np.float32)[:, :, None] / 255.0
        out = out * (1 + 0.45 * sun)
    return np.clip(out, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- writing
def write_video(sc: Scenario, photo: np.ndarray, path: Path, fps: float = 15.0, codec: str = "mjpg",
                seed: int = 1, quality: int = 85) -> dict:
    fourcc = {"mjpg": "MJPG", "mp4v": "mp4v", "xvid": "XVID"}[codec]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {codec} to {path}")
    try:
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, quality)
    except Exception:  # pragma: no cover - not every backend has it
        pass
    sprite = _person_sprite(photo)
    room = _room(seed, chair=sc.chair)
    rng = np.random.default_rng(seed)
    noise = [rng.normal(0, 2.0, (H, W, 1)).astype(np.float32) for _ in range(6)]
    n = int(round(sc.timeline.duration * fps)) + 1
    phase = 0.0
    for i in range(n):
        t = i / fps
        pose = sc.timeline.pose(t)
        if pose.swing:
            phase += 2 * math.pi * 1.8 / fps  # ~1.8 strides per second
        frame = render(room, sprite, pose, phase)
        if sc.lights:
            frame = _light(frame, t)
        frame = np.clip(frame.astype(np.float32) + noise[i % len(noise)], 0, 255).astype(np.uint8)
        writer.write(frame)
    writer.release()
    return {"scenario": sc.name, "file": path.name, "frames": n, "fps": fps, "seconds": round((n - 1) / fps, 3),
            "width": W, "height": H, "falls": sc.falls, "resolves": sc.resolves,
            "rest_at": sc.rest_at, "description": sc.description}


def default_photo() -> Path:
    from inference.artifacts import PERSON_PHOTO

    return PERSON_PHOTO.path


def load_photo(path: str | os.PathLike | None = None) -> np.ndarray:
    from inference.artifacts import PERSON_PHOTO, missing_reason, verified

    p = Path(path) if path else PERSON_PHOTO.path
    if path is None and not verified(PERSON_PHOTO):
        raise FileNotFoundError(missing_reason(PERSON_PHOTO))
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read the person photo {p}")
    return img


def generate(out: str | os.PathLike, names: list[str] | None = None, *, fps: float = 15.0, codec: str = "mjpg",
             still: float = 8.0, photo: str | None = None, seed: int = 1) -> dict:
    """Write the scenario videos and manifest.json into ``out``; returns the manifest."""
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    img = load_photo(photo)
    all_sc = scenarios(still)
    names = names or list(all_sc)
    unknown = [n for n in names if n not in all_sc]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {', '.join(all_sc)}")
    ext = ".mp4" if codec == "mp4v" else ".avi"
    videos = [write_video(all_sc[n], img, outdir / f"{n}{ext}", fps, codec, seed) for n in names]
    manifest = {"simulator": "camera", "width": W, "height": H, "fps": fps, "codec": codec, "still_seconds": still,
                "videos": videos}
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulator camera",
                                 description="Write scenario videos (a real person photo animated in a room) for the camera pipeline.")
    ap.add_argument("--out", default="sim-videos", help="folder for the videos and manifest.json")
    ap.add_argument("--scenario", action="append", choices=sorted(scenarios()), help="only these (repeatable); default: all")
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--codec", default="mjpg", choices=["mjpg", "mp4v", "xvid"], help="mjpg/xvid write .avi, mp4v .mp4")
    ap.add_argument("--still", type=float, default=8.0, help="seconds a fallen person lies still")
    ap.add_argument("--photo", help="person photo (default: the verified one from scripts/fetch_models.py)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if not 1 <= args.fps <= 60:
        ap.error("--fps must be 1..60")
    try:
        manifest = generate(args.out, args.scenario, fps=args.fps, codec=args.codec, still=args.still,
                            photo=args.photo, seed=args.seed)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"simulator": "camera", "out": str(Path(args.out).resolve()),
                      "videos": [{k: v[k] for k in ("scenario", "file", "frames", "falls")} for v in manifest["videos"]]},
                     separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
