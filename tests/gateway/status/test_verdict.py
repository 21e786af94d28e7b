"""`canopy status`'s verdict: running, stale or not running, from the snapshot and the writer's process."""

from __future__ import annotations

import os
import subprocess

from gateway.status.host import process_start_ticks
from gateway.status.status_file import daemon_record
from gateway.status.verdict import EXIT_NOT_RUNNING, EXIT_RUNNING, EXIT_STALE, judge, process_alive

NOW = 1_800_000_000.0


def snap(age: float, **daemon) -> dict:
    return {"ts": NOW - age, "daemon": {"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid()),
                                        "state": "running", "stale_after_s": 65.0, **daemon}}


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_fresh_snapshot_of_a_live_process_is_running():
    v = judge(snap(3), NOW)
    assert (v.state, v.exit_code) == ("running", EXIT_RUNNING) and v.age_s == 3
    assert daemon_record("running", 65)["pid"] == os.getpid()


def test_kill_9_leaves_a_snapshot_that_still_says_connected_but_the_verdict_is_not_running():
    v = judge({**snap(2, pid=dead_pid()), "uplink": {"connected": True}}, NOW)
    assert (v.state, v.exit_code) == ("not running", EXIT_NOT_RUNNING)
    assert "killed or crashed" in v.detail


def test_a_recycled_pid_is_not_the_daemon():
    v = judge(snap(2, start_ticks=(process_start_ticks(os.getpid()) or 0) + 1), NOW)
    assert v.exit_code == EXIT_NOT_RUNNING
    assert not process_alive(os.getpid(), -1) and process_alive(os.getpid(), None)


def test_a_clean_stop_says_stopped():
    v = judge(snap(400, state="stopped"), NOW)
    assert (v.state, v.exit_code) == ("not running", EXIT_NOT_RUNNING) and "stopped cleanly 7 min ago" in v.detail


def test_a_live_process_that_stopped_writing_is_stale():
    v = judge(snap(66), NOW)
    assert (v.state, v.exit_code) == ("stale", EXIT_STALE) and "66s" in v.detail
    assert judge(snap(66, stale_after_s=120), NOW).exit_code == EXIT_RUNNING  # the daemon's own promise counts


def test_a_snapshot_without_a_writer_record_is_judged_by_its_age():
    assert judge({"ts": NOW - 10}, NOW).exit_code == EXIT_RUNNING
    assert judge({"ts": NOW - 70}, NOW).exit_code == EXIT_STALE
    assert judge({}, NOW).exit_code == EXIT_STALE
