"""When health goes out: at start, after a change, when the backlog moves past a threshold, and once more at a stop."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from core.clock import Clock
from core.records import Reading, reading_body
from gateway.outbox.store import Outbox
from gateway.status.backlog import BacklogAge
from gateway.status.metrics import MetricsExport
from gateway.status.reporter import HealthReporter, ReportPolicy
from tests.support import until


class Board:
    """A stand-in daemon: a backlog the test moves, and a count of …/state publications."""

    def __init__(self, tmp_path, **policy):
        self.backlog = 0
        self.published = 0
        self.status_path = tmp_path / "canopy-status.json"
        self.reporter = HealthReporter(
            state=lambda: {"ts": time.time(), "outbox": {"telemetry": {"pending": self.backlog}}},
            publish=self._publish, refresh=self._refresh, backlog=lambda: self.backlog, status_path=str(self.status_path),
            policy=ReportPolicy(**{"interval": 60, "coalesce": 0.05, "check_every": 0.02, **policy}),
            identity={"site": "s", "gateway": "g"}, metrics=MetricsExport(str(tmp_path / "canopy.prom")))

    def _publish(self) -> None:
        self.published += 1

    async def _refresh(self) -> None:
        pass

    def on_file(self) -> dict:
        return orjson.loads(self.status_path.read_bytes())


async def quiet_for(board: Board, seconds: float) -> int:
    """How many snapshots were written in ``seconds`` (the reporter checks every 0.02 s)."""
    before = board.reporter.writes
    await asyncio.sleep(seconds)
    return board.reporter.writes - before


async def test_written_at_start_with_who_wrote_it(tmp_path):
    board = Board(tmp_path)
    task = asyncio.create_task(board.reporter.run())
    try:
        await until(lambda: board.reporter.writes == 1, what="the first snapshot")
        snap = board.on_file()
        assert snap["site"] == "s" and snap["daemon"]["state"] == "running" and snap["daemon"]["stale_after_s"] == 125.0
        assert board.published == 0 and (tmp_path / "canopy.prom").exists()
    finally:
        task.cancel()


async def test_backlog_moves_rewrite_the_file_only_past_the_threshold(tmp_path):
    board = Board(tmp_path)
    task = asyncio.create_task(board.reporter.run())
    try:
        await until(lambda: board.reporter.writes == 1)
        board.backlog = 90
        assert await quiet_for(board, 0.15) == 0  # within max(100, 10 %)
        board.backlog = 3000
        await until(lambda: board.on_file()["outbox"]["telemetry"]["pending"] == 3000, 1, what="the backlog on file")
        board.backlog = 3250
        assert await quiet_for(board, 0.15) == 0  # 10 % of 3,000 is 300
        board.backlog = 2690
        await until(lambda: board.on_file()["outbox"]["telemetry"]["pending"] == 2690, 1, what="the drain on file")
        assert board.published == 0  # the board's copy only: the broker gets …/state on its own schedule
    finally:
        task.cancel()


async def test_a_change_publishes_and_writes_once_per_burst_a_link_change_only_writes(tmp_path):
    board = Board(tmp_path)
    task = asyncio.create_task(board.reporter.run())
    try:
        await until(lambda: board.reporter.writes == 1)
        for _ in range(5):
            board.reporter.changed()
        await until(lambda: board.published == 1, 1, what="one publication for the burst")
        assert await quiet_for(board, 0.15) == 0 and board.published == 1
        board.reporter.changed(publish=False)
        await until(lambda: board.reporter.writes == 3, 1, what="a write for the link change")
        assert board.published == 1
    finally:
        task.cancel()


async def test_every_interval_without_changes(tmp_path):
    board = Board(tmp_path, interval=0.1)
    task = asyncio.create_task(board.reporter.run())
    try:
        await until(lambda: board.published >= 3, 2, what="three periodic publications")
    finally:
        task.cancel()


async def test_the_last_snapshot_says_stopped(tmp_path):
    board = Board(tmp_path)
    await board.reporter.write()
    await board.reporter.stopped()
    assert board.on_file()["daemon"]["state"] == "stopped"
    assert "canopy_running 0.0" in (tmp_path / "canopy.prom").read_text()


async def test_a_status_file_that_cannot_be_written_is_logged_not_raised(tmp_path, caplog):
    board = Board(tmp_path)
    board.reporter.status_path = str(tmp_path / "gone" / "canopy-status.json")
    await board.reporter.write()
    await board.reporter.write()
    assert sum("cannot write" in r.message for r in caplog.records) == 1  # once, then quiet until it recovers


@pytest.fixture
async def outbox(tmp_path):
    ob = Outbox(str(tmp_path / "outbox.sqlite"), commit_interval=0.02)
    await ob.open()
    yield ob
    await ob.close()


async def test_backlog_age_is_that_of_the_oldest_undelivered_record(outbox):
    now = time.time()
    await outbox.put("telemetry", [reading_body(Reading(now - 100, "soil-1", "moisture", 1.0)),
                                   reading_body(Reading(now - 50, "soil-1", "moisture", 2.0))])
    await outbox.flush()
    age = BacklogAge(outbox, Clock())
    await age.refresh()
    ages = age.ages()
    assert 99 <= ages["telemetry"] <= 102 and ages["alarm"] is None and ages["event"] is None
    assert age.last_puback_ts is None
    age.on_acked("telemetry", 1, 1)  # the broker has the first
    outbox.ack("telemetry", 1, 1)
    await age.refresh()
    assert 49 <= age.ages()["telemetry"] <= 52 and age.last_puback_ts >= now
    age.on_acked("telemetry", 2, 2)
    outbox.ack("telemetry", 2, 2)
    await age.refresh()
    assert age.ages()["telemetry"] is None
