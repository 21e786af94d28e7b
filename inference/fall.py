"""Fall logic over a sequence of pose observations.  Pure: no numpy, no OpenCV, no clock.

Input, per analysed frame: the time ``t`` (seconds on one monotonic timeline),
the tracked person's pose (or None: the detector did not run, or saw nobody)
and whether the motion gate saw anything move.

A fall is:
1. a **fast transition** from upright to lying: the last upright observation
   (body axis hip->shoulder within ``upright_max_deg`` of vertical) is at most
   ``transition_max_seconds`` before the first lying one (axis at least
   ``lying_min_deg`` from vertical);
2. with the **hip dropping** by at least ``min_drop`` torso lengths on the way
   (a person who bends over keeps the hip up);
3. followed by **stillness**: lying for ``stillness_seconds`` without the hip or
   the shoulders moving more than ``still_tolerance`` torso lengths (no pose
   because nothing moved counts as still).

Then exactly one ``FallEvent``; the tracker stays "fallen" until the person has
been upright again for ``recovery_seconds``, which gives one ``FallResolved``.
Lying down slowly (no fast transition), sitting down (axis stays upright) and
bending (no hip drop, no stillness) do not fire.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

TIME_EPS = 0.02  # capture-time jitter: a window "closes" on the frame taken at (about) its end


@dataclass(frozen=True, slots=True)
class FallParams:
    upright_max_deg: float = 30.0
    lying_min_deg: float = 60.0
    transition_max_seconds: float = 1.0
    min_drop: float = 0.5
    stillness_seconds: float = 5.0
    still_tolerance: float = 0.35
    recovery_seconds: float = 2.0
    lost_seconds: float = 10.0
    min_confidence: float = 0.5
    give_up_seconds: float = 60.0  # a candidate never still enough is dropped after this long (after lying_at)


def axis_angle(hip: tuple[float, float], shoulder: tuple[float, float]) -> float:
    """Angle of the hip->shoulder axis from vertical-up (image y grows downwards), in degrees:
    0 upright, 90 lying, 180 head-down."""
    vx, vy = shoulder[0] - hip[0], shoulder[1] - hip[1]
    if vx == 0 and vy == 0:
        return 0.0
    return math.degrees(math.atan2(abs(vx), -vy))


@dataclass(frozen=True, slots=True)
class PoseSample:
    """One person's pose in frame pixels (any consistent unit; angles need square pixels)."""

    hip: tuple[float, float]
    shoulder: tuple[float, float]
    score: float = 1.0
    box: tuple[float, float, float, float] | None = None  # person box x0, y0, x1, y1
    frame_h: float = 1.0  # frame height, to report the height feature as a share of the frame

    @property
    def angle(self) -> float:
        """Body axis from vertical-up in degrees: 0 upright, 90 lying, 180 head-down."""
        return axis_angle(self.hip, self.shoulder)

    @property
    def torso(self) -> float:
        return max(math.dist(self.hip, self.shoulder), 1e-6)

    @property
    def aspect(self) -> float | None:
        if self.box is None:
            return None
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return w / h if h > 0 else None

    @property
    def height(self) -> float | None:
        return (self.box[3] - self.box[1]) / self.frame_h if self.box is not None else None

    def summary(self, width: float, height: float) -> dict:
        """Metadata only: keypoints and person box as fractions of the frame, the axis, the score."""
        def n(x: float, size: float) -> float:
            return round(min(max(x / size, -1.0), 2.0), 3)

        d = {"score": round(self.score, 3), "hip": [n(self.hip[0], width), n(self.hip[1], height)],
             "shoulder": [n(self.shoulder[0], width), n(self.shoulder[1], height)], "axis_deg": round(self.angle, 1)}
        if self.box is not None:
            d["box"] = [n(self.box[0], width), n(self.box[1], height), n(self.box[2], width), n(self.box[3], height)]
        return d


@dataclass(frozen=True, slots=True)
class FallEvent:
    fell_at: float  # time of the last upright observation before the fall
    lying_at: float  # first lying observation
    still_since: float  # start of the stillness window that closed
    at: float  # when the window closed (the observation that confirmed it)
    confidence: float
    transition_seconds: float
    drop: float  # hip descent in torso lengths
    angle: float  # body axis while lying
    aspect: float | None  # person box width/height while lying (upright people are < 1)
    height_ratio: float | None  # person box height lying / upright
    score: float  # mean detector score over the window
    pose: PoseSample  # the pose when confirmed (for the keypoint summary)


@dataclass(frozen=True, slots=True)
class FallResolved:
    at: float
    fell_at: float
    lying_seconds: float
    reason: str  # "stood up"


@dataclass
class _Candidate:
    fell_at: float
    lying_at: float
    upright: PoseSample
    transition: float
    drop: float
    anchor: PoseSample
    still_since: float
    scores: list = field(default_factory=list)
    last_seen: float = 0.0
    moved_unseen: bool = False


class FallTracker:
    """States: ``idle`` -> ``upright``/``lying`` (observed) -> ``candidate`` -> ``fallen`` -> (resolved)."""

    def __init__(self, params: FallParams | None = None):
        self.p = params or FallParams()
        self.state = "idle"
        self.last_upright: PoseSample | None = None
        self.last_upright_t: float | None = None
        self.upright_history: deque[tuple[float, PoseSample]] = deque()
        self.candidate: _Candidate | None = None
        self.fallen: FallEvent | None = None
        self.upright_since: float | None = None
        self._fast_since: float | None = None  # first lying observation after a fast transition (drop not yet seen)
        self.last_pose: PoseSample | None = None
        self.last_pose_t: float | None = None
        self.falls = 0
        self.resolved = 0

    # ------------------------------------------------------------------ classification
    def _upright(self, s: PoseSample) -> bool:
        return s.angle <= self.p.upright_max_deg

    def _lying(self, s: PoseSample) -> bool:
        return s.angle >= self.p.lying_min_deg

    def update(self, t: float, pose: PoseSample | None, moving: bool = False) -> list:
        """Feed one analysed frame; returns the events it completes (FallEvent / FallResolved)."""
        out: list = []
        if pose is not None:
            self.last_pose, self.last_pose_t = pose, t
        if self.fallen is not None:
            self._while_fallen(t, pose, out)
            return out
        if self.candidate is not None:
            self._while_candidate(t, pose, moving, out)
            if self.candidate is not None or self.fallen is not None:
                return out
        if pose is None:
            if self.last_upright_t is not None and t - self.last_upright_t > self.p.lost_seconds:
                self.state = "idle"
            return out
        if self._upright(pose):
            self.state = "upright"
            self.last_upright, self.last_upright_t = pose, t
            self.upright_history.append((t, pose))
        elif self._lying(pose):
            if self.state != "lying":
                self._fast_since = t
                self._maybe_candidate(t, pose)
            elif self._fast_since is not None and t - self._fast_since <= self.p.transition_max_seconds:
                self._maybe_candidate(t, pose)  # the hip may still be on its way down
            if self.candidate is None:
                self.state = "lying"
        else:
            self.state = "between" if self.state != "lying" else "lying"
        horizon = t - self.p.transition_max_seconds - 1.0
        while self.upright_history and self.upright_history[0][0] < horizon:
            self.upright_history.popleft()
        return out

    def _maybe_candidate(self, t: float, pose: PoseSample) -> None:
        if self.last_upright is None or self.last_upright_t is None:
            self._fast_since = None
            return
        transition = (self._fast_since if self._fast_since is not None else t) - self.last_upright_t
        if transition > self.p.transition_max_seconds:
            self._fast_since = None
            return  # slow: lying down on purpose
        # the hip drop, against the highest hip seen upright shortly before (torso of that pose)
        ref = min((s for ts, s in self.upright_history if t - ts <= self.p.transition_max_seconds + 1.0),
                  key=lambda s: s.hip[1], default=self.last_upright)
        drop = (pose.hip[1] - ref.hip[1]) / ref.torso
        if drop < self.p.min_drop:
            return  # bending over: the hip stays where it was
        self._fast_since = None
        self.candidate = _Candidate(fell_at=self.last_upright_t, lying_at=t, upright=ref, transition=transition,
                                    drop=drop, anchor=pose, still_since=t, scores=[pose.score], last_seen=t)
        self.state = "candidate"

    def _while_candidate(self, t: float, pose: PoseSample | None, moving: bool, out: list) -> None:
        c = self.candidate
        if pose is None:
            if moving:
                c.moved_unseen = True
            if c.moved_unseen and t - c.last_seen > self.p.lost_seconds:
                self.candidate, self.state = None, "idle"  # something moved and nobody is seen: gone
                return
        else:
            c.last_seen, c.moved_unseen = t, False
            if self._upright(pose):
                # got up again before the window closed: no alert
                self.candidate, self.state = None, "upright"
                self.last_upright, self.last_upright_t = pose, t
                self.upright_history.append((t, pose))
                return
            tol = self.p.still_tolerance * c.upright.torso
            if (not self._lying(pose) or math.dist(pose.hip, c.anchor.hip) > tol
                    or math.dist(pose.shoulder, c.anchor.shoulder) > tol):
                c.anchor, c.still_since, c.scores = pose, t, []  # still moving: the window starts again
            c.scores.append(pose.score)
        if t - c.still_since < self.p.stillness_seconds and t - c.lying_at > self.p.give_up_seconds:
            self.candidate, self.state = None, "lying"  # never still: not the kind of fall this detects
            return
        if t - c.still_since >= self.p.stillness_seconds - TIME_EPS:
            ev = self._confirm(t, c)
            self.candidate = None
            if ev.confidence >= self.p.min_confidence:
                self.fallen, self.state = ev, "fallen"
                self.upright_since = None
                self.falls += 1
                out.append(ev)
            else:
                self.state = "lying"

    def _confirm(self, t: float, c: _Candidate) -> FallEvent:
        p = self.p
        pose = c.anchor
        score = sum(c.scores) / len(c.scores) if c.scores else pose.score
        speed = _clamp(1.0 - c.transition / max(p.transition_max_seconds, 1e-6) * 0.5)
        drop_f = _clamp(c.drop / (2 * p.min_drop)) if p.min_drop > 0 else 1.0
        ang = pose.angle
        angle_f = _clamp((min(ang, 180 - ang if ang > 90 else ang) - p.upright_max_deg) / max(90 - p.upright_max_deg, 1e-6))
        aspect = pose.aspect
        up_h, h = c.upright.height, pose.height
        height_ratio = h / up_h if (h is not None and up_h) else None
        shape_f = 1.0
        if aspect is not None:
            shape_f = _clamp(aspect)  # wider than tall when lying
        if height_ratio is not None:
            shape_f = 0.5 * shape_f + 0.5 * _clamp(1.5 - height_ratio)
        conf = _clamp(0.35 * score + 0.2 * speed + 0.15 * drop_f + 0.15 * angle_f + 0.15 * shape_f)
        return FallEvent(fell_at=c.fell_at, lying_at=c.lying_at, still_since=c.still_since, at=t,
                         confidence=round(conf, 3), transition_seconds=round(c.transition, 3), drop=round(c.drop, 2),
                         angle=round(ang, 1), aspect=round(aspect, 2) if aspect is not None else None,
                         height_ratio=round(height_ratio, 2) if height_ratio is not None else None,
                         score=round(score, 3), pose=pose)

    def _while_fallen(self, t: float, pose: PoseSample | None, out: list) -> None:
        if pose is None:
            return  # still lying, or not seen: the alert stays open until somebody is seen standing
        if self._upright(pose):
            if self.upright_since is None:
                self.upright_since = t
            if t - self.upright_since >= self.p.recovery_seconds - TIME_EPS:
                ev = self.fallen
                out.append(FallResolved(at=t, fell_at=ev.fell_at, lying_seconds=round(self.upright_since - ev.lying_at, 3),
                                        reason="stood up"))
                self.fallen, self.state = None, "upright"
                self.resolved += 1
                self.last_upright, self.last_upright_t = pose, t
                self.upright_history.clear()
                self.upright_history.append((t, pose))
                self.upright_since = None
        else:
            self.upright_since = None

    def snapshot(self) -> dict:
        return {"state": self.state, "falls": self.falls, "resolved": self.resolved}


def _clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if x < lo else hi if x > hi else x
