"""Acknowledged records are kept for replay: moved in the commit that deleted them, pruned by window and budget.

Each test checks what an independent sqlite3 connection sees, and that the
counters still reconcile (``acknowledged`` stays acknowledged; ``retained`` is a
part of it) and match the tables.
"""

from __future__ import annotations

import sqlite3

import orjson
import pytest

from core.clock import FakeClock
from core.records import LANES
from gateway.outbox import retention
from gateway.outbox.policy import StorePolicy
from gateway.outbox.schema import VERSION
from gateway.outbox.store import Outbox

MiB = 1024 * 1024


def body(i: int, size: int = 100) -> bytes:
    return orjson.dumps({"device": "d", "point": "p", "value": i, "pad": "x" * size})


def on_disk(path, sql, args=()):
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def assert_counters_match_disk(ob: Outbox):
    for lane, c in ob.counters.items():
        assert c.reconciles(), (lane, c.as_dict())
        assert c.pending == on_disk(ob.path, f"SELECT count(*) FROM {lane}")[0][0], lane
        kept, size = on_disk(ob.path, f"SELECT count(*), coalesce(sum(length(body)), 0) FROM retained_{lane}")[0]
        assert (c.retained, c.retained_bytes) == (kept, size), (lane, c.as_dict())
        assert c.retained <= c.acknowledged, lane


@pytest.fixture
async def outboxes():
    opened = []
    yield opened
    for ob in opened:
        if ob.is_open:
            await ob.close()


async def make(outboxes, path, **kw):
    """An open outbox whose writer never prunes by itself: the tests prune (``prune``), and never beside it."""
    ob = Outbox(str(path), commit_interval=0.01, **kw)
    await ob.open()
    ob._pruner._next = float("inf")
    outboxes.append(ob)
    return ob


async def prune(ob: Outbox, force: bool = False) -> None:
    await ob._pruner.prune(force)


async def test_acknowledged_records_move_to_retention_in_the_commit_that_deleted_them(tmp_path, outboxes):
    ob = await make(outboxes, tmp_path / "o.sqlite")
    tel = [body(i) for i in range(10)]
    await ob.put("telemetry", tel, wait_commit=True)
    await ob.put("alarm", [body(100)], wait_commit=True, topic="event alert/volunteers")
    commits = ob.commits
    ob.ack("telemetry", 3, 7)
    ob.ack("alarm", 1, 1)
    await ob.flush()
    assert ob.commits == commits + 1, "the acknowledgements took one commit, as the deletions did"
    assert [s for (s,) in on_disk(ob.path, "SELECT seq FROM telemetry ORDER BY seq")] == [1, 2, 8, 9, 10]
    kept = on_disk(ob.path, "SELECT seq, body, topic FROM retained_telemetry ORDER BY seq")
    assert kept == [(s, tel[s - 1], None) for s in range(3, 8)], "same seq, same body"
    assert on_disk(ob.path, "SELECT seq, body, topic FROM retained_alarm") == [(1, body(100), "event alert/volunteers")]
    t = ob.counters["telemetry"]
    assert (t.produced, t.acknowledged, t.pending, t.retained) == (10, 5, 5, 5)
    assert t.retained_bytes == sum(len(b) for b in tel[2:7])
    assert ob.counters["alarm"].as_dict()["retained"] == 1
    assert_counters_match_disk(ob)
    # a fetch (the uplink) sees only what is still to be sent
    assert [r[0] for r in await ob.fetch("telemetry", 0, 100)] == [1, 2, 8, 9, 10]


async def test_retention_off_deletes_as_before(tmp_path, outboxes):
    ob = await make(outboxes, tmp_path / "o.sqlite", policy=StorePolicy(retain_for=0))
    await ob.put("telemetry", [body(i) for i in range(5)], wait_commit=True)
    ob.ack("telemetry", 1, 5)
    await ob.flush()
    assert on_disk(ob.path, "SELECT count(*) FROM retained_telemetry") == [(0,)]
    assert ob.counters["telemetry"].acknowledged == 5 and ob.counters["telemetry"].retained == 0
    assert_counters_match_disk(ob)


async def test_retained_counters_survive_a_restart(tmp_path, outboxes):
    path = tmp_path / "o.sqlite"
    ob = await make(outboxes, path)
    await ob.put("event", [body(i) for i in range(4)], wait_commit=True)
    ob.ack("event", 1, 3)
    await ob.flush()
    before = ob.counters["event"].as_dict()
    await ob.close()
    ob2 = await make(outboxes, path)
    assert ob2.counters["event"].as_dict() == before and before["retained"] == 3
    assert_counters_match_disk(ob2)


async def test_the_window_drops_what_was_acknowledged_longer_ago_alarms_included(tmp_path, outboxes):
    clock = FakeClock()
    ob = await make(outboxes, tmp_path / "o.sqlite", clock=clock, policy=StorePolicy(retain_for=3600))
    for lane in LANES:
        await ob.put(lane, [body(i) for i in range(6)], wait_commit=True)
        ob.ack(lane, 1, 3)  # acknowledged now
    await ob.flush()
    await clock.advance(3000)
    for lane in LANES:
        ob.ack(lane, 4, 6)  # acknowledged 3000 s later
    await ob.flush()
    await clock.advance(700)  # the first three are 3700 s old, the others 700 s
    await prune(ob)
    for lane in LANES:
        assert [s for (s,) in on_disk(ob.path, f"SELECT seq FROM retained_{lane} ORDER BY seq")] == [4, 5, 6], lane
        c = ob.counters[lane]
        assert (c.acknowledged, c.retained) == (6, 3), "they stay acknowledged"
    assert_counters_match_disk(ob)


async def test_over_its_budget_retention_gives_up_telemetry_first_and_alarms_last(tmp_path, outboxes):
    budget = 40_000
    ob = await make(outboxes, tmp_path / "o.sqlite", policy=StorePolicy(retain_bytes=budget))
    for lane, n in (("alarm", 20), ("event", 50), ("telemetry", 400)):
        await ob.put(lane, [body(i) for i in range(n)], wait_commit=True)
        ob.ack(lane, 1, n)
    await ob.flush()
    assert retention.footprint(ob.counters["telemetry"]) > budget
    await prune(ob)
    used = sum(retention.footprint(ob.counters[lane]) for lane in LANES)
    assert used <= budget * 0.9
    assert ob.counters["alarm"].retained == 20 and ob.counters["event"].retained == 50, "telemetry gives way first"
    kept = [s for (s,) in on_disk(ob.path, "SELECT seq FROM retained_telemetry ORDER BY seq")]
    assert kept and kept == list(range(kept[0], 401)), "the oldest telemetry went"
    assert_counters_match_disk(ob)
    # with no telemetry left to give, events go before alarms
    ob.policy = StorePolicy(retain_bytes=retention.footprint(ob.counters["alarm"]) + 1000)
    ob._pruner.policy = ob._pruner.retention.policy = ob.policy
    await prune(ob)
    assert ob.counters["telemetry"].retained == 0 and ob.counters["alarm"].retained == 20
    assert ob.counters["event"].retained < 50
    assert_counters_match_disk(ob)


async def test_over_the_soft_cap_retained_copies_go_before_anything_undelivered(tmp_path, outboxes):
    ob = await make(outboxes, tmp_path / "o.sqlite",
                    policy=StorePolicy(max_bytes=2 * MiB, alarm_reserve=0.25, retain_bytes=2 * MiB, prune_interval=3600))
    for k in range(12):  # ~1 MB delivered and retained
        await ob.put("telemetry", [body(k * 200 + i, 300) for i in range(200)], wait_commit=True)
    ob.ack("telemetry", 1, 2400)
    await ob.flush()
    assert ob.counters["telemetry"].retained == 2400
    for k in range(8):  # ~0.6 MB more, not delivered: over the 1.5 MB soft cap
        await ob.put("telemetry", [body(i, 300) for i in range(200)], wait_commit=True)
    assert await ob.used_bytes() > ob.policy.soft_cap
    await prune(ob, force=True)
    t = ob.counters["telemetry"]
    assert t.retained < 2400 and await ob.used_bytes() <= ob.policy.soft_cap
    assert t.pending == 1600 and not t.dropped, "nothing undelivered was thinned or dropped while copies could go"
    assert_counters_match_disk(ob)


async def test_holding_reads_pending_seqs_and_retained_rows_of_a_range(tmp_path, outboxes):
    ob = await make(outboxes, tmp_path / "o.sqlite")
    tel = [body(i) for i in range(10)]
    await ob.put("telemetry", tel, wait_commit=True)
    ob.ack("telemetry", 2, 5)
    await ob.flush()
    held = await ob.holding("telemetry", 3, 8)
    assert held.pending == [6, 7, 8]
    assert held.retained == [(s, tel[s - 1], None) for s in (3, 4, 5)]
    assert await ob.oldest_held("telemetry") == 1
    assert await ob.oldest_held("alarm") is None


async def test_a_version_2_file_gets_the_retained_tables_and_keeps_its_records(tmp_path, outboxes):
    path = tmp_path / "v2.sqlite"
    con = sqlite3.connect(path)
    con.executescript(";".join([
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE counters (lane TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (lane, name))",
        *(f"CREATE TABLE {lane} (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, body BLOB NOT NULL, topic TEXT)"
          for lane in LANES),
        "INSERT INTO meta VALUES ('boot', '4'), ('epoch', '0123456789abcdef')",
        "INSERT INTO event (ts, body, topic) VALUES (1.0, X'7B2261223A317D', 'cmd/result')",
        "INSERT INTO counters VALUES ('event', 'produced', 1)",
        "PRAGMA user_version=2",
    ]))
    con.commit()
    con.close()
    ob = await make(outboxes, path)
    assert on_disk(path, "PRAGMA user_version") == [(VERSION,)] and VERSION == 3
    assert (ob.boot, ob.epoch) == (5, "0123456789abcdef")
    assert await ob.fetch("event", 0, 10) == [(1, b'{"a":1}', "cmd/result")]
    ob.ack("event", 1, 1)
    await ob.flush()
    assert on_disk(path, "SELECT seq, topic FROM retained_event") == [(1, "cmd/result")]
    assert_counters_match_disk(ob)
