"""The SQLite outbox: accepted means committed, sequences never go back, nothing is lost.

Every test uses a real SQLite file in tmp_path and checks what a second,
independent sqlite3 connection (or a reopened Outbox) sees: that is what
survives a crash, not what the object believes.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gateway.outbox.ranges import AckedRanges
from gateway.outbox.store import Outbox
from tests.support import until  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


# --------------------------------------------------------------------------- helpers


def rows_on_disk(path: Path, lane: str) -> list[tuple[int, bytes]]:
    """What an independent connection sees committed in a lane."""
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT seq, body FROM {lane} ORDER BY seq").fetchall()
    finally:
        db.close()


def bodies(n: int, tag: str = "r") -> list[bytes]:
    return [b'{"%s":%d}' % (tag.encode(), i) for i in range(n)]



class Gate:
    """Replaces ``outbox._commit`` so a test decides when the writer may commit."""

    def __init__(self, outbox: Outbox):
        self.outbox = outbox
        self.real = outbox._commit
        self.open = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls = 0
        outbox._commit = self._commit

    async def _commit(self, items, acks, *rest):
        self.calls += 1
        self.entered.set()
        await self.open.wait()
        await self.real(items, acks, *rest)


@pytest.fixture
async def make_outbox(tmp_path):
    opened: list[Outbox] = []

    async def make(path: Path | None = None, **kw) -> Outbox:
        ob = Outbox(str(path or tmp_path / "outbox.sqlite"), **kw)
        await ob.open()
        opened.append(ob)
        return ob

    yield make
    for ob in opened:
        if ob._db is not None:
            await ob.close()


# --------------------------------------------------------------------------- accepted == committed


async def test_record_is_visible_to_fetch_and_disk_only_after_its_commit(make_outbox, tmp_path):
    ob = await make_outbox(commit_interval=30)
    gate = Gate(ob)
    put = asyncio.create_task(ob.put("telemetry", bodies(3), wait_commit=True))
    await until(gate.entered.is_set, what="writer to start committing")
    assert not put.done(), "put(wait_commit=True) returned before the commit finished"
    assert await ob.fetch("telemetry", 0, 100) == []
    assert rows_on_disk(tmp_path / "outbox.sqlite", "telemetry") == []
    assert ob.counters["telemetry"].produced == 0, "counted as accepted (produced) before it was committed"
    gate.open.set()
    await asyncio.wait_for(put, 10)
    # the moment put returns, another process can see the rows
    assert rows_on_disk(tmp_path / "outbox.sqlite", "telemetry") == list(zip([1, 2, 3], bodies(3)))
    assert await ob.fetch("telemetry", 0, 100) == list(zip([1, 2, 3], bodies(3), [None] * 3))
    assert ob.counters["telemetry"].produced == 3


async def test_batched_telemetry_is_not_visible_until_the_batch_commits(make_outbox, tmp_path):
    ob = await make_outbox(commit_interval=30)
    await ob.put("telemetry", [b'{"first":1}'], wait_commit=True)  # the first commit is immediate
    await ob.put("telemetry", [b'{"second":2}'])  # now inside the 30 s batching window
    for _ in range(20):
        await asyncio.sleep(0)
    assert [s for s, *_ in await ob.fetch("telemetry", 0, 10)] == [1]
    assert len(rows_on_disk(tmp_path / "outbox.sqlite", "telemetry")) == 1
    await asyncio.wait_for(ob.flush(), 10)
    assert rows_on_disk(tmp_path / "outbox.sqlite", "telemetry") == [(1, b'{"first":1}'), (2, b'{"second":2}')]


# --------------------------------------------------------------------------- sequences


async def test_each_lane_has_its_own_sequence_starting_at_one(make_outbox):
    ob = await make_outbox(commit_interval=0.05)
    await ob.put("telemetry", bodies(5), wait_commit=True)
    await ob.put("alarm", bodies(2), wait_commit=True)
    await ob.put("event", bodies(1), wait_commit=True)
    await ob.put("telemetry", bodies(2), wait_commit=True)
    assert [s for s, *_ in await ob.fetch("telemetry", 0, 100)] == [1, 2, 3, 4, 5, 6, 7]
    assert [s for s, *_ in await ob.fetch("alarm", 0, 100)] == [1, 2]
    assert [s for s, *_ in await ob.fetch("event", 0, 100)] == [1]
    assert {lane: c.last_seq for lane, c in ob.counters.items()} == {"alarm": 2, "event": 1, "telemetry": 7}


async def test_sequence_continues_after_reopen_even_when_every_row_was_deleted(make_outbox, tmp_path):
    path = tmp_path / "outbox.sqlite"
    ob = await make_outbox(path, commit_interval=0.05)
    assert ob.boot == 1
    await ob.put("telemetry", bodies(5), wait_commit=True)
    await ob.put("alarm", bodies(2), wait_commit=True)
    ob.ack("telemetry", 1, 5)
    ob.ack("alarm", 1, 2)
    await ob.close()
    assert rows_on_disk(path, "telemetry") == [] and rows_on_disk(path, "alarm") == []

    ob2 = await make_outbox(path, commit_interval=0.05)
    assert ob2.boot == 2
    assert ob2.counters["telemetry"].last_seq == 5 and ob2.counters["telemetry"].pending == 0
    await ob2.put("telemetry", bodies(1), wait_commit=True)
    await ob2.put("alarm", bodies(1), wait_commit=True)
    assert [s for s, _ in rows_on_disk(path, "telemetry")] == [6], "a sequence number was reused"
    assert [s for s, _ in rows_on_disk(path, "alarm")] == [3], "a sequence number was reused"
    await ob2.close()
    ob3 = await make_outbox(path)
    assert ob3.boot == 3


async def test_second_open_without_close_continues_sequences(make_outbox, tmp_path):
    """The first instance never closes (as after a crash); its commits are what count."""
    path = tmp_path / "outbox.sqlite"
    first = await make_outbox(path, commit_interval=0.05)
    await first.put("event", bodies(3), wait_commit=True)
    await first.put("telemetry", bodies(4), wait_commit=True)
    second = await make_outbox(path, commit_interval=0.05)
    assert second.boot == first.boot + 1
    assert second.counters["event"].last_seq == 3 and second.counters["event"].pending == 3
    assert second.counters["telemetry"].last_seq == 4 and second.counters["telemetry"].pending == 4
    assert [s for s, *_ in await second.fetch("event", 0, 10)] == [1, 2, 3]
    await second.put("event", bodies(1), wait_commit=True)
    assert [s for s, _ in rows_on_disk(path, "event")] == [1, 2, 3, 4]


CRASH_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from gateway.outbox.store import Outbox

    async def main(path):
        ob = Outbox(path, commit_interval=30)
        await ob.open()
        await ob.put("telemetry", [b'{"t":%d}' % i for i in range(100)], wait_commit=True)  # first commit: at once
        await ob.put("alarm", [b'{"a":1}', b'{"a":2}'], wait_commit=True)  # urgent: at once
        ob.ack("telemetry", 1, 10)  # not committed yet: must not be lost either way
        print("committed", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_committed_records_and_sequences_survive_kill_9(make_outbox, tmp_path):
    path = tmp_path / "outbox.sqlite"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASH_WRITER, str(path), cwd=str(ROOT), stdout=asyncio.subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert line.strip() == b"committed"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    ob = await make_outbox(path, commit_interval=0.05)
    assert ob.boot == 2
    assert [s for s, *_ in await ob.fetch("alarm", 0, 10)] == [1, 2]
    tele = await ob.fetch("telemetry", 0, 1000)
    # the ack was never committed, so those records are still there (re-sent later: duplicates, not losses)
    assert [s for s, *_ in tele] == list(range(1, 101))
    assert tele[0][1] == b'{"t":0}'
    assert ob.counters["telemetry"].pending == 100 and ob.counters["telemetry"].last_seq == 100
    await ob.put("alarm", [b'{"a":3}'], wait_commit=True)
    await ob.put("telemetry", [b'{"t":100}'], wait_commit=True)
    assert rows_on_disk(path, "alarm")[-1][0] == 3
    assert rows_on_disk(path, "telemetry")[-1][0] == 101


# --------------------------------------------------------------------------- acknowledgements


async def test_acked_ranges_are_deleted_at_next_commit_and_counters_reconcile(make_outbox, tmp_path):
    path = tmp_path / "outbox.sqlite"
    ob = await make_outbox(path, commit_interval=0.05)
    await ob.put("telemetry", bodies(10), wait_commit=True)
    await ob.put("alarm", bodies(3), wait_commit=True)
    ob.ack("telemetry", 1, 4)
    ob.ack("telemetry", 7, 8)
    ob.ack("alarm", 2, 2)
    await ob.flush()
    assert [s for s, _ in rows_on_disk(path, "telemetry")] == [5, 6, 9, 10]
    assert [s for s, _ in rows_on_disk(path, "alarm")] == [1, 3]
    t, a = ob.counters["telemetry"], ob.counters["alarm"]
    assert (t.produced, t.acknowledged, t.pending) == (10, 6, 4)
    assert (a.produced, a.acknowledged, a.pending) == (3, 1, 2)
    # a duplicate ack (a re-sent message acknowledged twice) changes nothing
    ob.ack("telemetry", 1, 4)
    await ob.flush()
    assert (t.produced, t.acknowledged, t.pending) == (10, 6, 4)
    for c in ob.counters.values():
        assert c.produced == c.acknowledged + c.pending
    assert ob.pending("telemetry") == 4


async def test_counters_reconcile_after_reopen_with_pending_rows(make_outbox, tmp_path):
    path = tmp_path / "outbox.sqlite"
    ob = await make_outbox(path, commit_interval=0.05)
    await ob.put("telemetry", bodies(10), wait_commit=True)
    await ob.close()
    ob2 = await make_outbox(path, commit_interval=0.05)
    ob2.ack("telemetry", 1, 5)
    await ob2.flush()
    c = ob2.counters["telemetry"]
    assert c.pending == 5
    assert c.produced == c.acknowledged + c.pending, c.as_dict()


async def test_fetch_skips_records_acked_but_not_yet_deleted(make_outbox, tmp_path):
    path = tmp_path / "outbox.sqlite"
    ob = await make_outbox(path, commit_interval=30)
    await ob.put("telemetry", bodies(10), wait_commit=True)  # first commit: immediate
    ob.ack("telemetry", 3, 6)
    # the delete waits for the 30 s batching window, but the uplink must not send them again
    assert len(rows_on_disk(path, "telemetry")) == 10
    assert [s for s, *_ in await ob.fetch("telemetry", 0, 100)] == [1, 2, 7, 8, 9, 10]
    assert [s for s, *_ in await ob.fetch("telemetry", 6, 100)] == [7, 8, 9, 10]


async def test_close_commits_pending_acks(make_outbox, tmp_path):
    path = tmp_path / "outbox.sqlite"
    ob = await make_outbox(path, commit_interval=30)
    await ob.put("telemetry", bodies(5), wait_commit=True)
    ob.ack("telemetry", 1, 3)
    await asyncio.wait_for(ob.close(), 15)
    assert [s for s, _ in rows_on_disk(path, "telemetry")] == [4, 5]


async def test_close_commits_queued_records(make_outbox, tmp_path):
    path = tmp_path / "outbox.sqlite"
    ob = await make_outbox(path, commit_interval=30)
    await ob.put("telemetry", bodies(1), wait_commit=True)
    await ob.put("telemetry", bodies(4, "late"))  # queued inside the batching window
    await asyncio.wait_for(ob.close(), 15)
    assert [s for s, _ in rows_on_disk(path, "telemetry")] == [1, 2, 3, 4, 5]
    with pytest.raises(RuntimeError):
        await ob.put("telemetry", bodies(1))


# --------------------------------------------------------------------------- batching (SD-card wear) and urgency


async def test_telemetry_puts_are_batched_into_few_commits(make_outbox, tmp_path):
    ob = await make_outbox(commit_interval=0.3)
    t0 = time.monotonic()
    for i in range(1000):
        await ob.put("telemetry", bodies(10))
        if i % 10 == 0:
            await asyncio.sleep(0.001)  # spread the puts over ~0.1 s, as pollers would
    elapsed = time.monotonic() - t0
    await ob.flush()
    # one immediate first commit, at most one per commit_interval, one for flush
    allowed = 2 + int(elapsed / 0.3) + 1
    assert ob.commits <= allowed, f"{ob.commits} commits for 1000 puts in {elapsed:.2f}s"
    assert len(rows_on_disk(tmp_path / "outbox.sqlite", "telemetry")) == 10_000
    assert ob.counters["telemetry"].produced == 10_000


@pytest.mark.parametrize("lane", ["alarm", "event"])
async def test_alarm_and_event_commit_at_once_despite_long_commit_interval(make_outbox, tmp_path, lane):
    ob = await make_outbox(commit_interval=5)
    await ob.put("telemetry", bodies(1), wait_commit=True)  # the batching window is now open for 5 s
    await ob.put("telemetry", bodies(3))  # queued telemetry rides along with the alarm
    await asyncio.wait_for(ob.put(lane, [b'{"type":"smoke"}'], wait_commit=True), timeout=2.5)
    assert rows_on_disk(tmp_path / "outbox.sqlite", lane) == [(1, b'{"type":"smoke"}')]
    assert len(rows_on_disk(tmp_path / "outbox.sqlite", "telemetry")) == 4


async def test_flush_commits_everything_queued(make_outbox, tmp_path):
    ob = await make_outbox(commit_interval=5)
    await ob.put("telemetry", bodies(1), wait_commit=True)
    for _ in range(5):
        await ob.put("telemetry", bodies(10))
    await asyncio.wait_for(ob.flush(), timeout=2.5)
    assert len(rows_on_disk(tmp_path / "outbox.sqlite", "telemetry")) == 51


# --------------------------------------------------------------------------- bounded memory, failures


async def test_full_queue_makes_producers_wait_instead_of_growing(make_outbox, tmp_path):
    ob = await make_outbox(commit_interval=0.01, queue_size=10)
    gate = Gate(ob)
    first = asyncio.create_task(ob.put("telemetry", bodies(1), wait_commit=True))
    await until(gate.entered.is_set, what="writer blocked in commit")
    for _ in range(10):  # fills the queue; none of these may block
        await asyncio.wait_for(ob.put("telemetry", bodies(1)), 5)
    assert ob._queue.qsize() == 10
    blocked = [asyncio.create_task(ob.put("telemetry", bodies(1))) for _ in range(5)]
    for _ in range(50):
        await asyncio.sleep(0)
    assert not any(t.done() for t in blocked), "a put past the queue limit did not wait"
    assert ob._queue.qsize() == 10, "the queue grew past its limit"
    gate.open.set()
    await asyncio.wait_for(asyncio.gather(first, *blocked), 10)
    await ob.flush()
    assert len(rows_on_disk(tmp_path / "outbox.sqlite", "telemetry")) == 16, "a waiting put was lost"


async def test_commit_failure_keeps_the_batch_and_commits_it_later(make_outbox, tmp_path, caplog):
    ob = await make_outbox(commit_interval=0.05)
    real = ob._commit
    failures = 2

    async def flaky(items, acks, *rest):
        nonlocal failures
        if failures:
            failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        await real(items, acks, *rest)

    ob._commit = flaky
    await asyncio.wait_for(ob.put("alarm", bodies(3), wait_commit=True), 15)
    await asyncio.wait_for(ob.put("telemetry", bodies(7), wait_commit=True), 15)
    assert ob.commit_errors == 2
    assert [s for s, _ in rows_on_disk(tmp_path / "outbox.sqlite", "alarm")] == [1, 2, 3]
    assert len(rows_on_disk(tmp_path / "outbox.sqlite", "telemetry")) == 7
    assert ob.counters["alarm"].produced == 3 and ob.counters["alarm"].pending == 3
    assert any("disk I/O error" in r.getMessage() for r in caplog.records), "the failure was not logged"


# --------------------------------------------------------------------------- AckedRanges


def test_ranges_add_merges_overlapping_and_adjacent():
    r = AckedRanges()
    assert not r
    r.add(10, 12)
    r.add(1, 3)
    r.add(20, 25)
    assert r.items() == [(1, 3), (10, 12), (20, 25)]
    r.add(4, 5)  # adjacent to (1, 3)
    assert r.items() == [(1, 5), (10, 12), (20, 25)]
    r.add(11, 21)  # bridges two ranges
    assert r.items() == [(1, 5), (10, 25)]
    r.add(7, 7)
    assert r.items() == [(1, 5), (7, 7), (10, 25)]
    r.add(6, 9)  # fills the gaps on both sides
    assert r.items() == [(1, 25)]
    r.add(3, 4)  # inside: no change
    assert r.items() == [(1, 25)]
    assert r


def test_ranges_covers():
    r = AckedRanges()
    r.add(5, 7)
    r.add(10, 10)
    assert [s for s in range(0, 13) if r.covers(s)] == [5, 6, 7, 10]


def test_ranges_remove_exact_and_merged():
    r = AckedRanges()
    r.add(1, 5)
    r.add(10, 12)
    r.remove([(1, 5)])
    assert r.items() == [(10, 12)]
    # a committed range that was merged with acks arriving during the commit
    r = AckedRanges()
    r.add(5, 6)
    snapshot = r.items()
    r.add(1, 4)
    r.add(7, 9)
    assert r.items() == [(1, 9)]
    r.remove(snapshot)
    assert r.items() == [(1, 4), (7, 9)]
    assert not r.covers(5) and not r.covers(6) and r.covers(4) and r.covers(7)


def test_ranges_remove_several_merged_into_one():
    r = AckedRanges()
    r.add(1, 2)
    r.add(4, 5)
    snapshot = r.items()
    r.add(3, 3)  # arrives during the commit: merges everything into (1, 5)
    r.remove(snapshot)
    assert r.items() == [(3, 3)], "only the uncommitted ack must remain"
    r.remove([(3, 3)])
    assert not r


def test_ranges_remove_of_unknown_range_is_harmless():
    r = AckedRanges()
    r.add(10, 20)
    r.remove([(1, 3), (30, 40)])
    assert r.items() == [(10, 20)]


async def test_alarm_is_not_held_back_by_a_full_telemetry_queue(make_outbox, tmp_path):
    ob = await make_outbox(commit_interval=4, queue_size=10)
    await ob.put("telemetry", bodies(1), wait_commit=True)  # opens the 4 s batching window
    for _ in range(10):
        await ob.put("telemetry", bodies(5))  # the queue is now full of telemetry
    await asyncio.wait_for(ob.put("alarm", [b'{"type":"gas"}'], wait_commit=True), timeout=1.5)
    assert rows_on_disk(tmp_path / "outbox.sqlite", "alarm") == [(1, b'{"type":"gas"}')]


# --------------------------------------------------------------------------- the topic column


async def test_a_record_may_name_several_topics_separated_by_one_space(make_outbox, tmp_path):
    ob = await make_outbox(tmp_path / "outbox.sqlite")
    lifecycle = "event alert/property-office alert/volunteers"
    assert await ob.put("alarm", bodies(1), topic=lifecycle, wait_commit=True) == [1]
    assert await ob.put("event", bodies(1), topic="cmd/result", wait_commit=True) == [1]
    assert await ob.put("event", bodies(1), topic="", wait_commit=True) == [2]  # empty: the lane's own topic
    assert [r[2] for r in await ob.fetch("alarm", 0, 10)] == [lifecycle]
    assert [r[2] for r in await ob.fetch("event", 0, 10)] == ["cmd/result", None]


@pytest.mark.parametrize("topic, problem", [
    ("event  alert/a", "is not a topic suffix"),  # two spaces: an empty suffix
    ("event alert/#", "is not a topic suffix"),
    ("alert/+/x", "is not a topic suffix"),
    ("/event", "is not a topic suffix"),
    ("alert/ ", "is not a topic suffix"),
    ("event alert/a event", "names a topic twice"),
])
async def test_a_malformed_topic_column_is_refused_before_anything_is_queued(make_outbox, tmp_path, topic, problem):
    ob = await make_outbox(tmp_path / "outbox.sqlite")
    with pytest.raises(ValueError, match=problem):
        await ob.put("alarm", bodies(1), topic=topic)
    with pytest.raises(ValueError, match="telemetry records always go to the telemetry topic"):
        await ob.put("telemetry", bodies(1), topic="event alert/a")
    await ob.flush()
    assert ob.counters["alarm"].produced == 0
