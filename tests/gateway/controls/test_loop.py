"""The pure decisions of one control: hysteresis, short-cycling guards, max run, safe state, override, hours."""

from __future__ import annotations

from datetime import datetime, timezone

from gateway.alerts.timeutil import parse_window
from gateway.controls.loop import LoopSpec, LoopState, Override, Timetable, confirm, decide

T = 1_700_000_000.0
FAN = LoopSpec(on_when="above", setpoint=30.0, hysteresis=2.0, stale_after=60.0)


def run(spec: LoopSpec, st: LoopState, now: float, value: float | None = None):
    """Feed a value (read at ``now``), decide, and apply a switch the way the service does."""
    if value is not None:
        st.value, st.value_ts = value, now
    d = decide(spec, st, now)
    if d.on is not None and d.on != st.commanded:
        st.commanded, st.switched_at, st.reason = d.on, now, d.reason
    st.mode = d.mode
    return d


def test_on_above_the_setpoint_off_below_setpoint_minus_hysteresis_and_the_band_keeps_the_state():
    st = LoopState(started=T)
    assert run(FAN, st, T, 25.0) == decide(FAN, LoopState(started=T, value=25.0, value_ts=T), T)
    assert st.commanded is False and st.reason == "start"
    for v in (29.9, 30.0):  # not above
        assert run(FAN, st, T + 1, v).on is None
    d = run(FAN, st, T + 2, 30.1)
    assert (d.on, d.reason, d.mode) == (True, "setpoint", "auto")
    for v in (29.0, 28.0):  # inside the band, and at its edge: stays on
        assert run(FAN, st, T + 3, v).on is None and st.commanded is True
    d = run(FAN, st, T + 4, 27.9)
    assert (d.on, d.reason) == (False, "hysteresis")


def test_on_when_below_is_the_mirror_image_for_heaters_and_misters():
    heater = LoopSpec(on_when="below", setpoint=12.0, hysteresis=1.5)
    st = LoopState(started=T)
    assert run(heater, st, T, 15.0).on is False
    assert run(heater, st, T + 1, 11.9).on is True
    assert run(heater, st, T + 2, 13.4).on is None
    assert (run(heater, st, T + 3, 13.6).on, st.reason) == (False, "hysteresis")


def test_minimum_on_and_off_times_hold_a_noisy_sensor_back():
    spec = LoopSpec(on_when="above", setpoint=30.0, hysteresis=0.2, min_on=60, min_off=120, stale_after=600)
    st = LoopState(started=T)
    switches = []
    for i in range(601):  # ten minutes of a sensor flickering 29.5 / 30.5 every second
        d = run(spec, st, T + i, 30.5 if i % 2 else 29.5)
        if d.on is not None and (not switches or switches[-1][1] != d.on):
            switches.append((i, d.on))
    gaps = [b[0] - a[0] for a, b in zip(switches[1:], switches[2:])]
    assert switches[0] == (0, False) and switches[1] == (1, True), "the first command after a start holds nothing back"
    assert all(g >= 60 for g in gaps[0::2]) and all(g >= 120 for g in gaps[1::2]), switches
    assert len(switches) <= 2 + 600 // 180 * 2


def test_max_run_switches_off_and_min_off_is_the_rest():
    spec = LoopSpec(on_when="above", setpoint=30.0, hysteresis=2.0, min_off=300, max_run=3600, stale_after=120)
    st = LoopState(started=T)
    run(spec, st, T, 35.0)
    assert st.commanded is True
    assert run(spec, st, T + 3599, 35.0).on is None
    d = run(spec, st, T + 3600, 35.0)
    assert (d.on, d.reason) == (False, "max_run")
    assert run(spec, st, T + 3899, 35.0).on is None  # resting
    assert (run(spec, st, T + 3900, 35.0).on, st.reason) == (True, "setpoint")


def test_a_stale_sensor_sends_the_output_to_its_safe_state_at_once_and_back_to_auto():
    for safe, want in (("off", False), ("on", True), ("hold", True)):
        spec = LoopSpec(on_when="above", setpoint=30.0, hysteresis=2.0, min_on=600, stale_after=60, safe_state=safe)
        st = LoopState(started=T)
        run(spec, st, T, 31.0)
        assert st.commanded is True
        assert run(spec, st, T + 59).mode == "auto"
        d = run(spec, st, T + 60)
        assert (d.mode, d.reason) == ("safe", "sensor_stale") and st.commanded is want, safe  # min_on does not hold it
        d = run(spec, st, T + 70, 31.0)
        assert d.mode == "auto"
        if not want:
            assert (d.on, d.reason) == (True, "sensor_back")


def test_no_reading_since_the_start_is_stale_after_stale_after():
    st = LoopState(started=T)
    assert run(FAN, st, T + 59) == decide(FAN, st, T + 59) and (st.mode, st.commanded) == ("auto", None)
    d = run(FAN, st, T + 60)
    assert (d.mode, d.on, d.reason) == ("safe", False, "sensor_stale")


def test_an_override_wins_until_its_time_then_auto_resumes_with_its_reason():
    spec = LoopSpec(on_when="above", setpoint=30.0, hysteresis=2.0, min_off=600, stale_after=60)
    st = LoopState(started=T)
    run(spec, st, T, 35.0)
    st.override = Override(False, T + 1800, "li", T + 10)
    d = run(spec, st, T + 10, 35.0)
    assert (d.mode, d.on, d.reason) == ("override", False, "override")
    st.override = None  # the service ends it at its time
    d = run(spec, st, T + 1800, 35.0)
    assert (d.mode, d.on, d.reason) == ("auto", True, "override_ended")  # min_off (600 s) was over long ago


def test_an_override_holds_even_with_a_stale_sensor():
    st = LoopState(started=T, override=Override(True, T + 3600, "li"))
    assert run(FAN, st, T + 300) == decide(FAN, st, T + 300)
    assert st.mode == "override" and st.commanded is True


def test_after_an_output_fault_the_safe_state_holds_until_retry_after():
    spec = LoopSpec(on_when="above", setpoint=30.0, hysteresis=2.0, retry_after=300, stale_after=60)
    st = LoopState(started=T)
    run(spec, st, T, 35.0)
    st.fault_until = T + 310
    d = run(spec, st, T + 10, 35.0)
    assert (d.mode, d.on, d.reason) == ("fault", False, "output_fault")
    d = run(spec, st, T + 310, 35.0)
    assert (d.mode, d.on, d.reason) == ("auto", True, "fault_retry")


def utc(h: int, m: int = 0) -> float:
    return datetime(2024, 3, 5, h, m, tzinfo=timezone.utc).timestamp()


def test_active_hours_and_setpoint_windows_in_local_time():
    tt = Timetable([parse_window("06:00-20:00")], [(parse_window({"from": "12:00", "to": "16:00"}), 26.0)], timezone.utc)
    spec = LoopSpec(on_when="above", setpoint=30.0, hysteresis=1.0, stale_after=600, timetable=tt)
    st = LoopState(started=utc(5))
    assert run(spec, st, utc(5), 35.0).mode == "idle" and st.commanded is False
    assert (run(spec, st, utc(7), 28.0).on, st.mode) == (None, "auto")  # 28 < 30
    assert run(spec, st, utc(12, 30), 28.0).on is True  # 28 > 26 in the afternoon
    assert tt.setpoint(utc(12, 30), 30.0) == 26.0 and tt.setpoint(utc(17), 30.0) == 30.0
    d = run(spec, st, utc(20, 30), 35.0)
    assert (d.mode, d.on, d.reason) == ("idle", False, "outside_hours")


def test_confirm_needs_feedback_that_agrees():
    assert confirm(True, True) == "confirmed"
    assert confirm(True, False) == "pending"
    assert confirm(False, None) == "pending"
