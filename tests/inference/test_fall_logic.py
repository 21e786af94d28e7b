"""The fall logic on synthetic keypoint sequences (pure: no model, no video)."""

from __future__ import annotations

import math
import random

import pytest

from inference.fall import FallEvent, FallParams, FallResolved, FallTracker, PoseSample

STAND_HIP, FLOOR_HIP, TORSO = 240.0, 410.0, 110.0


def body(angle: float, hip_y: float, hip_x: float = 320.0, score: float = 0.97, noise: float = 0.0,
         rng: random.Random | None = None) -> PoseSample:
    a = math.radians(angle)
    hx, hy = hip_x, hip_y
    sx, sy = hx + math.sin(a) * TORSO, hy - math.cos(a) * TORSO
    if noise and rng:
        hx, hy = hx + rng.gauss(0, noise), hy + rng.gauss(0, noise)
        sx, sy = sx + rng.gauss(0, noise), sy + rng.gauss(0, noise)
    fx, fy = hx - (sx - hx) * 1.1, hy - (sy - hy) * 1.1
    xs, ys = (hx, sx, fx), (hy, sy - 0.5 * TORSO * math.cos(a), fy)
    box = (min(xs) - 30, min(ys) - 15, max(xs) + 30, max(ys) + 15)
    return PoseSample((hx, hy), (sx, sy), score, box, 480.0)


def run(keys, fps: float = 10.0, params: FallParams | None = None, noise: float = 0.0, seed: int = 1,
        missing=lambda t: False, moving=lambda t: True):
    """keys: [(t, angle, hip_y)] linearly interpolated; returns (tracker, [(t, event)])."""
    tr = FallTracker(params or FallParams())
    rng = random.Random(seed)
    out = []
    n = int(keys[-1][0] * fps) + 1
    for i in range(n):
        t = i / fps
        for (t0, a0, y0), (t1, a1, y1) in zip(keys, keys[1:]):
            if t0 <= t <= t1:
                u = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
                angle, hip = a0 + (a1 - a0) * u, y0 + (y1 - y0) * u
                break
        else:
            angle, hip = keys[-1][1], keys[-1][2]
        pose = None if missing(t) else body(angle, hip, noise=noise, rng=rng)
        for ev in tr.update(t, pose, moving(t)):
            out.append((t, ev))
    return tr, out


def falls(events):
    return [e for _, e in events if isinstance(e, FallEvent)]


def resolved(events):
    return [e for _, e in events if isinstance(e, FallResolved)]


FALL = [(0, 0, STAND_HIP), (3.0, 0, STAND_HIP), (3.5, 90, FLOOR_HIP), (12.0, 90, FLOOR_HIP)]


@pytest.mark.parametrize("fps", [5, 10, 15, 30])
def test_fast_fall_then_stillness_gives_one_event_when_the_window_closes(fps):
    tr, events = run(FALL, fps)
    assert len(falls(events)) == 1 and not resolved(events)
    t, ev = events[0]
    assert ev.lying_at <= 3.5 + 1e-9
    assert ev.at - ev.still_since >= 5.0 and t - ev.still_since < 5.0 + 1.0 / fps + 1e-6
    assert ev.transition_seconds <= 1.0 and ev.drop >= 0.5 and ev.angle >= 60
    assert 0.5 <= ev.confidence <= 1.0
    assert ev.aspect > 1.0 and ev.height_ratio < 1.0  # wider than tall, shorter than upright
    assert tr.state == "fallen"


def test_stays_lying_for_a_minute_still_one_event():
    _, events = run(FALL[:-1] + [(70.0, 90, FLOOR_HIP)])
    assert len(falls(events)) == 1


def test_standing_up_resolves_once_after_recovery_seconds():
    keys = FALL[:-1] + [(11.0, 90, FLOOR_HIP), (13.0, 0, STAND_HIP), (20.0, 0, STAND_HIP)]
    tr, events = run(keys)
    assert len(falls(events)) == 1
    (r,) = resolved(events)
    assert r.reason == "stood up"
    t_res = next(t for t, e in events if isinstance(e, FallResolved))
    # upright (<= 30 deg) from ~12.7 s; resolved recovery_seconds (2 s) later
    assert 14.0 <= t_res <= 15.2
    assert tr.state == "upright"


def test_two_falls_two_events():
    keys = FALL[:-1] + [(11.0, 90, FLOOR_HIP), (13.0, 0, STAND_HIP), (18.0, 0, STAND_HIP), (18.4, -90, FLOOR_HIP),
                        (26.0, -90, FLOOR_HIP)]
    _, events = run(keys)
    assert len(falls(events)) == 2 and len(resolved(events)) == 1


def test_lying_down_slowly_does_not_fire():
    keys = [(0, 0, STAND_HIP), (3, 0, STAND_HIP), (7, 90, FLOOR_HIP), (20, 90, FLOOR_HIP)]
    tr, events = run(keys)
    assert events == [] and tr.state == "lying"


def test_sitting_on_the_floor_then_reclining_does_not_fire():
    keys = [(0, 0, STAND_HIP), (3, 0, STAND_HIP), (4.5, 5, FLOOR_HIP), (6, 5, FLOOR_HIP), (7.5, 90, FLOOR_HIP),
            (20, 90, FLOOR_HIP)]
    _, events = run(keys)
    assert events == []  # reclining quickly, but the hip was already down


def test_sitting_down_fast_does_not_fire():
    keys = [(0, 0, STAND_HIP), (3, 0, STAND_HIP), (3.4, 8, STAND_HIP + 80), (20, 5, STAND_HIP + 80)]
    _, events = run(keys)
    assert events == []


def test_bending_over_and_holding_does_not_fire():
    keys = [(0, 0, STAND_HIP), (3, 0, STAND_HIP), (3.5, 85, STAND_HIP + 10), (15, 85, STAND_HIP + 10), (15.5, 0, STAND_HIP),
            (18, 0, STAND_HIP)]
    _, events = run(keys)
    assert events == []


def test_getting_up_before_the_window_closes_does_not_fire():
    keys = FALL[:-1] + [(5.0, 90, FLOOR_HIP), (6.0, 0, STAND_HIP), (15.0, 0, STAND_HIP)]
    tr, events = run(keys)
    assert events == [] and tr.state == "upright"


def test_moving_on_the_floor_restarts_the_window():
    # after the fall the person rolls for 3 s (hip moves), then lies still
    tr = FallTracker()
    out = []
    for i in range(0, 160):
        t = i / 10
        if t < 3.0:
            pose = body(0, STAND_HIP)
        elif t < 3.5:
            u = (t - 3.0) / 0.5
            pose = body(90 * u, STAND_HIP + (FLOOR_HIP - STAND_HIP) * u)
        elif t < 6.5:
            pose = body(90, FLOOR_HIP, hip_x=320 + 60 * math.sin(t * 3))  # rolling about
        else:
            pose = body(90, FLOOR_HIP, hip_x=320 + 60 * math.sin(6.5 * 3))
        out += [(t, e) for e in tr.update(t, pose, True)]
    (ev,) = falls(out)
    assert ev.still_since >= 6.0 and out[0][0] >= 11.0


def test_no_detections_while_nothing_moves_counts_as_still():
    # the motion gate skips the detector while the person lies still: poses are None, moving False
    _, events = run(FALL, missing=lambda t: t > 4.0, moving=lambda t: t <= 4.0)
    assert len(falls(events)) == 1


def test_person_gone_while_things_move_drops_the_candidate():
    p = FallParams(lost_seconds=2.0, stillness_seconds=5.0)
    _, events = run(FALL, params=p, missing=lambda t: t > 4.0, moving=lambda t: True)
    assert events == []


def test_low_confidence_is_not_raised():
    tr = FallTracker(FallParams(min_confidence=0.99))
    out = []
    for i in range(120):
        t = i / 10
        if t < 3:
            pose = body(0, STAND_HIP, score=0.6)
        elif t < 3.5:
            u = (t - 3) / 0.5
            pose = body(90 * u, STAND_HIP + (FLOOR_HIP - STAND_HIP) * u, score=0.6)
        else:
            pose = body(90, FLOOR_HIP, score=0.6)
        out += tr.update(t, pose, True)
    assert out == [] and tr.state == "lying"


@pytest.mark.parametrize("seed", range(5))
def test_keypoint_jitter_does_not_break_or_fake_a_fall(seed):
    _, events = run(FALL, noise=6.0, seed=seed)
    assert len(falls(events)) == 1
    _, events = run([(0, 0, STAND_HIP), (20, 0, STAND_HIP)], noise=6.0, seed=seed)
    assert events == []


def test_fall_to_either_side_and_head_down():
    for angle in (90, -90, 120):
        keys = [(0, 0, STAND_HIP), (3, 0, STAND_HIP), (3.5, angle, FLOOR_HIP), (12, angle, FLOOR_HIP)]
        _, events = run(keys)
        assert len(falls(events)) == 1, angle


def test_parameters_are_honoured():
    p = FallParams(stillness_seconds=2.0, transition_max_seconds=3.0)
    keys = [(0, 0, STAND_HIP), (3, 0, STAND_HIP), (5, 90, FLOOR_HIP), (9, 90, FLOOR_HIP)]  # 2 s: slow by default
    assert run(keys)[1] == []
    _, events = run(keys, params=p)
    (ev,) = falls(events)
    assert ev.at - ev.still_since == pytest.approx(2.0, abs=0.11)


def test_axis_angle():
    assert PoseSample((0, 100), (0, 0)).angle == pytest.approx(0)
    assert PoseSample((0, 0), (100, 0)).angle == pytest.approx(90)
    assert PoseSample((0, 0), (-100, 0)).angle == pytest.approx(90)
    assert PoseSample((0, 0), (0, 100)).angle == pytest.approx(180)
    assert PoseSample((0, 100), (100, 0)).angle == pytest.approx(45)


def test_hip_still_dropping_when_the_axis_is_already_lying():
    # the torso tips over first, the hip reaches the floor 0.4 s later (the drop is seen on a later frame)
    keys = [(0, 0, STAND_HIP), (3, 0, STAND_HIP), (3.3, 90, STAND_HIP + 20), (3.7, 90, FLOOR_HIP), (12, 90, FLOOR_HIP)]
    _, events = run(keys)
    (ev,) = falls(events)
    assert ev.lying_at > 3.3 and ev.drop >= 0.5


def test_a_candidate_that_never_settles_is_given_up():
    p = FallParams(give_up_seconds=8.0)
    tr = FallTracker(p)
    out = []
    for i in range(400):
        t = i / 10
        if t < 3:
            pose = body(0, STAND_HIP)
        elif t < 3.5:
            u = (t - 3) / 0.5
            pose = body(90 * u, STAND_HIP + (FLOOR_HIP - STAND_HIP) * u)
        else:
            pose = body(90, FLOOR_HIP, hip_x=320 + 80 * math.sin(t * 2))  # never still
        out += tr.update(t, pose, True)
    assert out == [] and tr.candidate is None
