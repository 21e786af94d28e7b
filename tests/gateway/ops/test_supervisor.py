"""Supervision: READY, WATCHDOG keep-alives only while the loop and the outbox writer are healthy, STATUS lines."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.ops.sd_notify import Notifier, socket_address, watchdog_interval
from gateway.ops.supervisor import Supervisor, WriterProgress, status_line
from tests.gateway.ops.fakes import NotifyListener
from tests.support import until

STATE = {
    "devices": {"soil-1": {"status": "ok"}, "soil-2": {"status": "ok"}, "tank": {"status": "unreachable"}},
    "outbox": {"telemetry": {"pending": 3}, "alarm": {"pending": 0}, "commits": 9, "degraded": False},
    "uplink": {"connected": True},
}


@pytest.fixture
def listener():
    sock = NotifyListener()
    yield sock
    sock.close()


def test_status_line_counts_devices_outbox_and_broker():
    assert status_line(STATE) == "2 devices ok, 1 unreachable, outbox 3, broker connected"
    assert status_line({}) == "0 devices ok, outbox 0, broker disconnected"
    one = {"devices": {"a": {"status": "ok"}}, "outbox": {"telemetry": {"pending": 0}, "degraded": True}}
    assert status_line(one) == "1 device ok, outbox 0 (degraded), broker disconnected"


def test_socket_address_abstract_and_path():
    assert socket_address("@systemd/notify") == b"\0systemd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_watchdog_interval_from_environment():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None  # meant for another process
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 30.0
    assert watchdog_interval({}) is None and watchdog_interval({"WATCHDOG_USEC": "x"}) is None


def test_notifier_outside_systemd_is_silent():
    n = Notifier("")
    assert not n.enabled and n.notify("READY=1") is False


def test_notifier_to_a_socket_that_is_gone_counts_and_never_raises(tmp_path):
    n = Notifier(str(tmp_path / "gone.sock"))
    assert n.notify("WATCHDOG=1") is False and n.failed == 1


async def test_ready_status_keepalives_and_stopping(listener, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", listener.name)  # the abstract "@…" form, read from the environment
    sup = Supervisor(asyncio.get_running_loop(), lambda: STATE, lambda: True, watchdog_sec=0.4)
    sup.start()
    sup.ready()
    await until(lambda: len(listener.lines("WATCHDOG=1")) >= 3, timeout=5, what="three keep-alives")
    await sup.stop()
    await until(lambda: listener.lines("STOPPING=1"), timeout=2, what="STOPPING=1")
    assert len(listener.lines("READY=1")) == 1
    assert ("STATUS=2 devices ok, 1 unreachable, outbox 3, broker connected"
            in [m for _, m in listener.lines("STATUS=")])


async def test_keepalives_to_a_socket_file(tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        sup = Supervisor(asyncio.get_running_loop(), lambda: STATE, lambda: True, notifier=Notifier(listener.name), watchdog_sec=0.4)
        sup.start()
        await until(lambda: listener.lines("WATCHDOG=1"), timeout=5, what="a keep-alive")
        await sup.stop()
    finally:
        listener.close()


async def test_blocked_loop_stops_keepalives_until_it_recovers(listener):
    sup = Supervisor(asyncio.get_running_loop(), lambda: STATE, lambda: True, notifier=Notifier(listener.name), watchdog_sec=0.4)
    sup.start()
    sup.ready()
    await until(lambda: len(listener.lines("WATCHDOG=1")) >= 2, timeout=5, what="keep-alives before the block")
    blocked_at = time.monotonic()
    time.sleep(1.0)  # the event loop is blocked: nothing on it runs
    unblocked_at = time.monotonic()
    await until(lambda: [t for t, _ in listener.lines("WATCHDOG=1") if t > unblocked_at + 0.05], timeout=5,
                what="keep-alives again once the loop is responsive")
    during = [t for t, _ in listener.lines("WATCHDOG=1") if blocked_at + 0.02 < t < unblocked_at + 0.05]
    assert during == [], "a keep-alive was sent while (or just after) the loop was blocked"
    unhealthy = [m for t, m in listener.lines("STATUS=unhealthy") if t > blocked_at]
    assert unhealthy and "event loop was blocked for 1." in unhealthy[0]
    assert sup.withheld >= 1
    await sup.stop()


async def test_dead_outbox_writer_withholds_keepalives(listener):
    alive = {"writer": True}

    def writer_ok() -> bool:
        return alive["writer"]

    sup = Supervisor(asyncio.get_running_loop(), lambda: STATE, writer_ok, notifier=Notifier(listener.name), watchdog_sec=0.4)
    sup.start()
    sup.ready()
    await until(lambda: listener.lines("WATCHDOG=1"), timeout=5, what="a keep-alive")
    alive["writer"] = False
    stopped_at = time.monotonic()
    await until(lambda: [m for t, m in listener.lines("STATUS=unhealthy") if t > stopped_at], timeout=5, what="unhealthy status")
    assert not [t for t, _ in listener.lines("WATCHDOG=1") if t > stopped_at + 0.01]
    await sup.stop()


async def test_writer_is_not_judged_before_ready(listener):
    sup = Supervisor(asyncio.get_running_loop(), lambda: STATE, lambda: False, notifier=Notifier(listener.name), watchdog_sec=0.4)
    sup.start()  # start-up: the outbox is not open yet, keep-alives must flow
    await until(lambda: listener.lines("WATCHDOG=1"), timeout=5, what="a keep-alive during start-up")
    await sup.stop()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_writer_progress_broker_outage_and_full_disk_are_healthy_a_stuck_writer_is_not():
    clock, stats = Clock(), {"running": True, "work": True, "attempts": 0}
    progress = WriterProgress(lambda: stats["running"], lambda: stats["work"], lambda: stats["attempts"], stall=30, clock=clock)
    for _ in range(10):  # broker outage: nothing drains, but telemetry commits every interval
        clock.now += 20
        stats["attempts"] += 1
        assert progress()
    for _ in range(10):  # full disk: every commit fails, and each failed attempt is progress (alarms wait in memory)
        clock.now += 20
        stats["attempts"] += 1
        assert progress()
    stats["work"] = False  # idle: no work, no commits, still healthy
    clock.now += 300
    assert progress()
    stats["work"] = True  # work arrives and the writer never finishes a commit (stuck in fsync)
    assert progress()
    clock.now += 29
    assert progress()
    clock.now += 2
    assert not progress() and "without finishing a commit" in progress.reason
    stats["running"] = False
    assert not progress() and progress.reason == "the outbox writer has stopped"


def test_writer_progress_of_an_outbox():
    class Outbox:
        commits, commit_errors, writer_running = 4, 1, True

        def has_work(self) -> bool:
            return False

    assert WriterProgress.of(Outbox())()
