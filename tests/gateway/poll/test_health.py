"""Per-device health: one event per change, honest counters, a stable snapshot for …/state."""

from __future__ import annotations

import logging

import pytest

from gateway.poll.health import DeviceStatus, Health


class Changes:
    def __init__(self):
        self.calls: list[tuple[str, str, str]] = []  # (device, previous, new)

    def __call__(self, st: DeviceStatus, previous: str) -> None:
        self.calls.append((st.id, previous, st.status))


@pytest.fixture
def changes():
    return Changes()


@pytest.fixture
def health(changes):
    h = Health(on_change=changes)
    h.register("soil-1", "field")
    h.register("smoke-1", "shed")
    return h


def test_on_change_is_called_once_per_transition(health, changes):
    health.ok("soil-1", 100.0, 12.0)
    assert changes.calls == [("soil-1", "unknown", "ok")]
    health.failed("soil-1", "timeout", "no reply within 0.30s")
    health.failed("soil-1", "timeout", "no reply within 0.30s")
    health.failed("soil-1", "timeout", "no reply within 0.30s")
    health.ok("soil-1", 103.0, 11.0)
    health.ok("soil-1", 104.0, 11.0)
    assert changes.calls == [
        ("soil-1", "unknown", "ok"),
        ("soil-1", "ok", "timeout"),
        ("soil-1", "timeout", "ok"),
    ]


def test_a_change_of_failure_kind_is_a_transition(health, changes):
    health.failed("smoke-1", "unreachable", "cannot connect")
    health.failed("smoke-1", "timeout", "no reply")
    health.failed("smoke-1", "timeout", "no reply")
    assert changes.calls == [("smoke-1", "unknown", "unreachable"), ("smoke-1", "unreachable", "timeout")]
    assert health.devices["smoke-1"].detail == "no reply"


def test_transitions_of_one_device_do_not_touch_another(health, changes):
    health.ok("soil-1", 1.0, 5.0)
    health.failed("smoke-1", "timeout", "x")
    assert health.devices["soil-1"].status == "ok"
    assert health.devices["smoke-1"].status == "timeout"
    assert [c[0] for c in changes.calls] == ["soil-1", "smoke-1"]


def test_counters(health):
    health.ok("soil-1", 10.0, 20.0)
    health.failed("soil-1", "timeout", "no reply")
    health.failed("soil-1", "timeout", "no reply")
    health.failed("soil-1", "exception", "exception 2 (illegal data address) on read")
    st = health.devices["soil-1"]
    assert (st.polls, st.failures, st.consecutive_failures) == (4, 3, 3)
    assert st.errors_by_status == {"timeout": 2, "exception": 1}
    assert st.detail == "exception 2 (illegal data address) on read"
    assert st.last_ok == 10.0  # a failure does not pretend the device answered
    health.ok("soil-1", 14.0, 25.0)
    assert (st.polls, st.failures, st.consecutive_failures) == (5, 3, 0)
    assert st.detail == "", "a recovered device still shows the old error"
    assert st.last_ok == 14.0 and st.last_latency_ms == 25.0
    assert st.errors_by_status == {"timeout": 2, "exception": 1}, "history of errors is kept after recovery"


def test_snapshot_shape(health):
    health.ok("soil-1", 1_700_000_000.12345, 12.345)
    health.failed("smoke-1", "timeout", "no reply within 0.30s")
    health.devices["soil-1"].overruns = 2
    snap = health.snapshot()
    assert snap == {
        "soil-1": {"bus": "field", "status": "ok", "polls": 1, "failures": 0, "last_ok": 1_700_000_000.123,
                   "overruns": 2, "latency_ms": 12.3},
        "smoke-1": {"bus": "shed", "status": "timeout", "polls": 1, "failures": 1, "last_ok": None,
                    "detail": "no reply within 0.30s", "errors": {"timeout": 1}},
    }


def test_snapshot_of_a_device_never_polled(health):
    assert health.snapshot()["soil-1"] == {"bus": "field", "status": "unknown", "polls": 0, "failures": 0, "last_ok": None}


def test_snapshot_is_a_copy(health):
    health.failed("smoke-1", "timeout", "x")
    snap = health.snapshot()
    snap["smoke-1"]["errors"]["timeout"] = 99
    assert health.devices["smoke-1"].errors_by_status == {"timeout": 1}


def test_without_on_change_transitions_still_update_state():
    h = Health()
    h.register("d", "b")
    h.failed("d", "timeout", "x")
    h.ok("d", 1.0, 1.0)
    assert h.devices["d"].status == "ok"


def test_dead_device_logs_once_then_quietly_then_recovery(health, caplog):
    caplog.set_level(logging.DEBUG, logger="canopy.devices")
    for _ in range(5):
        health.failed("soil-1", "timeout", "no reply")
    health.ok("soil-1", 1.0, 1.0)
    recs = [r for r in caplog.records if r.name == "canopy.devices"]
    assert [r.levelno for r in recs] == [logging.WARNING] + [logging.DEBUG] * 4 + [logging.INFO]
    assert "soil-1" in recs[0].getMessage() and "timeout" in recs[0].getMessage()
