"""The outbox stays inside its bounds: TTLs, a size cap with per-class policies, full disks, corrupt files.

Every drop is counted by reason, and produced == acknowledged + pending +
expired + dropped holds exactly, on disk, across reopen.
"""

from __future__ import annotations

import os
import sqlite3

import orjson
import pytest

from core.clock import FakeClock
from gateway.outbox.policy import StorePolicy
from gateway.outbox.store import Outbox

MiB = 1024 * 1024


def body(i: int, size: int = 200) -> bytes:
    return orjson.dumps({"device": "d", "point": "p", "value": i, "pad": "x" * size})


def on_disk(path, sql):
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def assert_reconciles(ob: Outbox):
    for lane, c in ob.counters.items():
        assert c.reconciles(), (lane, c.as_dict())
        assert c.pending == on_disk(ob.path, f"SELECT count(*) FROM {lane}")[0][0], lane


@pytest.fixture
async def outboxes():
    opened = []
    yield opened
    for ob in opened:
        await ob.close()


async def make(outboxes, path, **kw):
    ob = Outbox(str(path), commit_interval=0.01, **kw)
    await ob.open()
    outboxes.append(ob)
    return ob


async def test_ttl_expires_old_telemetry_and_events_but_never_alarms(tmp_path, outboxes):
    clock = FakeClock(start=1_700_000_000)
    ob = await make(outboxes, tmp_path / "o.sqlite", clock=clock,
                    policy=StorePolicy(telemetry_ttl=3600, event_ttl=7200, prune_interval=0))
    old = clock.time() - 5000  # older than the telemetry TTL, younger than the event TTL
    await ob.put("telemetry", [body(i) for i in range(10)], ts=old, wait_commit=True)
    await ob.put("event", [body(i) for i in range(3)], ts=old, wait_commit=True)
    await ob.put("alarm", [body(0)], ts=clock.time() - 10 * 86400, wait_commit=True)
    await ob.put("telemetry", [body(99)], wait_commit=True)  # fresh
    await ob._maybe_prune(force=True)
    t, e, a = ob.counters["telemetry"], ob.counters["event"], ob.counters["alarm"]
    assert (t.expired, t.pending) == (10, 1)
    assert (e.expired, e.pending) == (0, 3)
    assert (a.expired, a.pending) == (0, 1), "alarms never expire"
    assert_reconciles(ob)


async def test_over_the_cap_telemetry_is_thinned_then_dropped_oldest_first(tmp_path, outboxes):
    ob = await make(outboxes, tmp_path / "o.sqlite",
                    policy=StorePolicy(max_bytes=2 * MiB, alarm_reserve=0.25, prune_interval=3600, thin_keep_every=2))
    n = 0
    for _ in range(40):  # ~2.4 MB of telemetry offered into a 1.5 MB soft cap
        await ob.put("telemetry", [body(n + i, 300) for i in range(200)], wait_commit=True)
        n += 200
        await ob._maybe_prune(force=(await ob.used_bytes()) > 1.5 * MiB)
    t = ob.counters["telemetry"]
    assert t.dropped.get("reduced_fidelity", 0) > 0, t.as_dict()
    assert await ob.used_bytes() <= 2 * MiB
    seqs = [r[0] for r in on_disk(ob.path, "SELECT seq FROM telemetry ORDER BY seq")]
    assert seqs[-1] == t.last_seq, "the newest readings are kept"
    assert_reconciles(ob)
    assert t.produced == n


async def test_a_full_store_still_accepts_alarms_and_counts_what_it_shed(tmp_path, outboxes):
    """SQLITE_FULL (the same error a full disk gives): telemetry gives way, alarms get in."""
    ob = await make(outboxes, tmp_path / "o.sqlite",
                    policy=StorePolicy(max_bytes=1 * MiB, alarm_reserve=0.1, prune_interval=3600, thin_keep_every=1))
    # fill past the hard cap: pruning is only forced by the failure itself
    for i in range(60):
        await ob.put("telemetry", [body(i * 100 + j, 400) for j in range(100)])
    await ob.flush()
    await ob.put("alarm", [orjson.dumps({"type": "smoke", "n": 1})], wait_commit=True)
    await ob.put("alarm", [orjson.dumps({"type": "smoke", "n": 2})], wait_commit=True)
    t, a = ob.counters["telemetry"], ob.counters["alarm"]
    assert a.pending == 2 and [r[0] for r in on_disk(ob.path, "SELECT seq FROM alarm")] == [1, 2]
    lost = sum(t.dropped.values()) + sum(t.shed.values())
    assert lost > 0, t.as_dict()
    assert set(t.dropped) | set(t.shed) <= {"store_full", "reduced_fidelity"}
    assert ob.commit_errors >= 1 and "full" in (ob.last_error or "")
    assert_reconciles(ob)
    assert os.path.getsize(ob.path) <= 1 * MiB + 64 * 1024


async def test_counters_reconcile_exactly_across_reopen(tmp_path, outboxes):
    path = tmp_path / "o.sqlite"
    ob = await make(outboxes, path)
    await ob.put("telemetry", [body(i) for i in range(50)], wait_commit=True)
    ob.ack("telemetry", 1, 20)
    await ob.flush()
    await ob.close()
    outboxes.remove(ob)
    ob2 = await make(outboxes, path)
    t = ob2.counters["telemetry"]
    assert (t.produced, t.acknowledged, t.pending) == (50, 20, 30)
    assert ob2.boot == 2 and ob2.epoch == ob.epoch
    assert_reconciles(ob2)


async def test_a_corrupt_outbox_is_moved_aside_and_an_alarm_raised(tmp_path, outboxes):
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not an sqlite database, the SD card ate it" * 100)
    ob = await make(outboxes, path)
    assert ob.recovered_from and os.path.exists(ob.recovered_from)
    assert open(ob.recovered_from, "rb").read().startswith(b"this is not")
    rows = on_disk(path, "SELECT seq, body FROM alarm")
    assert len(rows) == 1
    alarm = orjson.loads(rows[0][1])
    assert alarm["type"] == "store.corrupt" and alarm["moved_to"] == ob.recovered_from
    # and it works normally afterwards
    await ob.put("telemetry", [body(1)], wait_commit=True)
    assert ob.counters["telemetry"].last_seq == 1


async def test_a_damaged_page_is_detected_by_quick_check(tmp_path, outboxes):
    path = tmp_path / "o.sqlite"
    ob = await make(outboxes, path)
    await ob.put("telemetry", [body(i, 1000) for i in range(400)], wait_commit=True)
    await ob.close()
    outboxes.remove(ob)
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    raw = bytearray(path.read_bytes())
    page = 4096
    for off in range(3 * page, 4 * page):  # a bad sector: a whole b-tree page of garbage
        raw[off] = 0xA5
    path.write_bytes(bytes(raw))
    ob2 = await make(outboxes, path)
    assert ob2.recovered_from, "a damaged page must not go unnoticed"
    assert ob2.counters["alarm"].pending == 1


async def test_a_locked_outbox_is_not_mistaken_for_a_corrupt_one(tmp_path, outboxes):
    path = tmp_path / "o.sqlite"
    ob = await make(outboxes, path)
    await ob.put("alarm", [body(1)], wait_commit=True)
    await ob.close()
    outboxes.remove(ob)
    holder = sqlite3.connect(path, timeout=0)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        other = Outbox(str(path))
        with pytest.raises(RuntimeError, match="cannot open outbox"):
            await other.open()
        assert not list(tmp_path.glob("o.sqlite.corrupt-*")), "a locked file must never be moved aside"
    finally:
        holder.rollback()
        holder.close()
    again = await make(outboxes, path)
    assert again.counters["alarm"].pending == 1 and not again.recovered_from


async def test_a_full_store_still_delivers_alarms_to_the_broker(tmp_path, outboxes, broker):
    """Full store (SQLITE_FULL, as from a full disk) while the link is down; then the link returns."""
    import asyncio

    from core.protocol.topics import Topics
    from gateway.config.broker import BrokerConfig
    from gateway.uplink.uplink import Uplink
    from tests.support import Subscriber, until

    ob = await make(outboxes, tmp_path / "o.sqlite",
                    policy=StorePolicy(max_bytes=1 * MiB, alarm_reserve=0.1, prune_interval=3600, thin_keep_every=2))
    for i in range(60):  # well past the cap, nothing sent yet
        await ob.put("telemetry", [body(i * 100 + j, 400) for j in range(100)])
    await ob.flush()
    await ob.put("alarm", [orjson.dumps({"type": "smoke.alarm", "n": 1})], wait_commit=True)
    sub = await asyncio.to_thread(Subscriber, broker.port)
    uplink = Uplink(BrokerConfig(host="127.0.0.1", port=broker.port, backoff_initial=0.1, backoff_max=0.5),
                    Topics("s", "g"), ob)
    ob.on_commit.append(uplink.committed)
    task = asyncio.create_task(uplink.run())
    try:
        await until(lambda: sub.records("alarm"), 10, what="the alarm on the broker")
        assert sub.records("alarm")[0]["type"] == "smoke.alarm"
        t = ob.counters["telemetry"]
        assert sum(t.dropped.values()) + sum(t.shed.values()) > 0 and ob.commit_errors >= 1
        await until(lambda: ob.counters["telemetry"].pending == 0 and ob.counters["alarm"].pending == 0, 20,
                    what="the rest drained")
        assert_reconciles(ob)
    finally:
        await uplink.stop()
        task.cancel()
        await asyncio.to_thread(sub.close)
