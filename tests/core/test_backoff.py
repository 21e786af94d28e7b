"""Backoff (retry pacing) and FailureLog (one loud line per outage)."""

from __future__ import annotations

import logging
import random

from core.backoff import Backoff, FailureLog


def test_grows_exponentially_up_to_the_cap():
    b = Backoff(0.5, 10.0, jitter=0.0)
    assert [b.next() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_custom_factor():
    b = Backoff(1.0, 100.0, factor=3.0, jitter=0.0)
    assert [b.next() for _ in range(5)] == [1.0, 3.0, 9.0, 27.0, 81.0]


def test_reset_starts_over():
    b = Backoff(1.0, 60.0, jitter=0.0)
    for _ in range(6):
        b.next()
    b.reset()
    assert b.next() == 1.0
    assert b.next() == 2.0


def test_jitter_stays_within_bounds_and_actually_varies():
    b = Backoff(1.0, 8.0, jitter=0.5, rng=random.Random(42))
    samples: dict[float, list[float]] = {}
    for _ in range(300):
        for base in (1.0, 2.0, 4.0, 8.0, 8.0):
            samples.setdefault(base, []).append(b.next())
        b.reset()
    for base, values in samples.items():
        assert all(base * 0.5 <= v <= base * 1.5 for v in values), f"base {base}: {min(values)}..{max(values)}"
        # spread over most of the range: a fleet does not reconnect in lock-step
        assert min(values) < base * 0.6 and max(values) > base * 1.4, f"base {base}: {min(values)}..{max(values)}"


def test_jitter_never_goes_negative():
    b = Backoff(1.0, 4.0, jitter=2.0, rng=random.Random(1))
    assert all(b.next() >= 0.0 for _ in range(200))


def test_two_gateways_with_different_rngs_do_not_retry_in_lock_step():
    a = Backoff(1.0, 60.0, rng=random.Random(1))
    c = Backoff(1.0, 60.0, rng=random.Random(2))
    assert [a.next() for _ in range(5)] != [c.next() for _ in range(5)]


def test_retries_for_ever_without_overflow():
    b = Backoff(1.0, 60.0)
    delays = [b.next() for _ in range(5000)]
    assert all(0.0 <= d <= 90.0 for d in delays)


# --------------------------------------------------------------------------- FailureLog


def test_failure_log_first_warning_then_debug_then_info_on_recovery(caplog):
    caplog.set_level(logging.DEBUG, logger="test.link")
    fl = FailureLog(logging.getLogger("test.link"), "broker 10.0.0.1:8883")
    fl.failed("connection refused")
    fl.failed("connection refused")
    fl.failed("timed out")
    fl.recovered()
    recs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "test.link"]
    assert [lvl for lvl, _ in recs] == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.INFO]
    assert "broker 10.0.0.1:8883" in recs[0][1] and "connection refused" in recs[0][1]
    assert "timed out" in recs[2][1]
    assert "3 failure" in recs[3][1]


def test_failure_log_is_loud_again_for_the_next_outage(caplog):
    caplog.set_level(logging.DEBUG, logger="test.link")
    fl = FailureLog(logging.getLogger("test.link"), "port /dev/ttyUSB0")
    fl.failed("gone")
    fl.recovered()
    fl.failed("gone again")
    levels = [r.levelno for r in caplog.records if r.name == "test.link"]
    assert levels == [logging.WARNING, logging.INFO, logging.WARNING]


def test_recovery_without_failure_logs_nothing(caplog):
    caplog.set_level(logging.DEBUG, logger="test.link")
    fl = FailureLog(logging.getLogger("test.link"), "x")
    fl.recovered()
    fl.recovered()
    assert [r for r in caplog.records if r.name == "test.link"] == []
