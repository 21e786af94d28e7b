"""Alarms never wait on the disk (issue 12, item 4): the outbox's degraded mode and its file check.

Commit failures are injected by wrapping ``Outbox._commit`` (the same
``sqlite3.OperationalError`` SQLite raises for a full disk or an I/O error);
tests/integration/test_store_degraded.py does it for real, on a full tmpfs.
What is on disk is always checked with an independent sqlite3 connection.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3

import orjson
import pytest

from core.protocol.schemas import validate
from core.protocol.topics import Topics
from gateway.config.broker import BrokerConfig
from gateway.outbox.memory import MemoryLog, StoreFull
from gateway.outbox.store import Outbox
from gateway.uplink.uplink import Uplink
from tests.support import Subscriber, until

FULL = "database or disk is full"


def on_disk(path, sql: str) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def types_on_disk(path, lane: str) -> list[str]:
    return [orjson.loads(b)["type"] for (b,) in on_disk(path, f"SELECT body FROM {lane} ORDER BY seq")]


def alarm(n: int, type_: str = "smoke") -> bytes:
    return orjson.dumps({"ts": 1.0, "type": type_, "n": n})


class Disk:
    """Wraps ``outbox._commit``: while ``broken``, every commit fails as a full disk (or ``error``) does."""

    def __init__(self, outbox: Outbox, error: str = FULL):
        self.real = outbox._commit
        self.error = error
        self.broken = False
        self.failed = 0
        outbox._commit = self._commit

    async def _commit(self, items, acks, *rest):
        if self.broken:
            self.failed += 1
            raise sqlite3.OperationalError(self.error)
        await self.real(items, acks, *rest)


@pytest.fixture
async def outboxes():
    opened: list[Outbox] = []

    async def make(path, **kw) -> Outbox:
        ob = Outbox(str(path), commit_interval=0.02, **kw)
        await ob.open()
        opened.append(ob)
        return ob

    yield make
    for ob in opened:
        if ob._db is not None:
            await ob.close()


def reconciles(ob: Outbox) -> None:
    for lane, c in ob.counters.items():
        assert c.reconciles(), (lane, c.as_dict())
        assert c.pending == on_disk(ob.path, f"SELECT count(*) FROM {lane}")[0][0], lane
        persisted = dict(on_disk(ob.path, f"SELECT name, value FROM counters WHERE lane='{lane}'"))
        assert persisted.get("produced", 0) == c.produced and persisted.get("acknowledged", 0) == c.acknowledged, lane


async def test_an_alarm_is_published_from_memory_at_once_and_committed_when_the_disk_returns(tmp_path, outboxes):
    ob = await outboxes(tmp_path / "o.sqlite")
    await ob.put("alarm", [alarm(0)], wait_commit=True)
    disk = Disk(ob)
    disk.broken = True
    put = asyncio.create_task(ob.put("alarm", [alarm(1)], wait_commit=True))
    await until(lambda: ob.memory_rows("alarm", 0, 10), 2, what="the alarm held in memory")
    epoch = ob.memory.epoch
    assert epoch and epoch != ob.epoch, "records from memory carry their own epoch, never the outbox's"
    assert ob.memory_rows("alarm", 0, 10)[0][:2] == (1, alarm(1))
    # confirmed after a few failures: a critical store.degraded alarm (from memory too), and the producer is let go
    assert await asyncio.wait_for(put, 5) == [], "put(wait_commit=True) must not wait on a broken disk"
    rows = ob.memory_rows("alarm", 0, 10)
    degraded = orjson.loads(rows[-1][1])
    assert degraded["type"] == "store.degraded" and degraded["severity"] == "critical"
    assert degraded["reason"] == "disk_full" and degraded["memory_epoch"] == epoch and FULL in degraded["detail"]
    assert ob.degraded and ob.episode is not None and ob.counters["alarm"].in_memory == 2
    # an event while degraded: into memory at once, the call returns at once
    assert await asyncio.wait_for(ob.put("event", [alarm(2, "device.status")], wait_commit=True), 1) == []
    assert [r[0] for r in ob.memory_rows("event", 0, 10)] == [1]
    assert types_on_disk(ob.path, "alarm") == ["smoke"], "nothing reached the disk meanwhile"

    disk.broken = False
    await until(lambda: ob.episode is None and not len(ob.memory), 5, what="recovery")
    await ob.flush()
    assert types_on_disk(ob.path, "alarm") == ["smoke", "smoke", "store.degraded"]
    assert types_on_disk(ob.path, "event") == ["device.status", "store.recovered"]
    recovered = orjson.loads(on_disk(ob.path, "SELECT body FROM event ORDER BY seq DESC LIMIT 1")[0][0])
    assert recovered["reason"] == "disk_full" and recovered["memory_epoch"] == epoch
    assert recovered["held"] == 3 and recovered["delivered_from_memory"] == 0 and recovered["after_seconds"] > 0
    assert not ob.degraded and ob.counters["alarm"].in_memory == 0 and "in_memory" not in ob.counters["alarm"].as_dict()
    reconciles(ob)


async def test_records_the_broker_acknowledged_from_memory_are_counted_never_stored(tmp_path, outboxes):
    ob = await outboxes(tmp_path / "o.sqlite")
    disk = Disk(ob)
    disk.broken = True
    await ob.put("alarm", [alarm(1), alarm(2)])
    await until(lambda: ob.episode is not None, 3, what="a confirmed episode")
    epoch = ob.memory.epoch
    held = ob.memory_rows("alarm", 0, 10)
    assert [r[0] for r in held] == [1, 2, 3]  # two smoke alarms, then store.degraded
    ob.ack_memory(epoch, "alarm", 1, 2)  # the broker has the two smoke alarms
    ob.ack_memory("0123456789abcdef", "alarm", 3, 3)  # another epoch's seqs: nothing of ours
    assert [r[0] for r in ob.memory_rows("alarm", 0, 10)] == [3]
    disk.broken = False
    await until(lambda: ob.episode is None, 5, what="recovery")
    await ob.flush()
    a = ob.counters["alarm"]
    assert types_on_disk(ob.path, "alarm") == ["store.degraded"]
    assert (a.produced, a.acknowledged, a.pending) == (3, 2, 1)
    reconciles(ob)


async def test_an_acknowledgement_that_arrives_after_the_commit_deletes_the_committed_row(tmp_path, outboxes):
    ob = await outboxes(tmp_path / "o.sqlite")
    disk = Disk(ob)
    disk.broken = True
    await ob.put("alarm", [alarm(1)])
    await until(lambda: ob.episode is not None, 3, what="a confirmed episode")
    epoch = ob.memory.epoch
    disk.broken = False
    await until(lambda: ob.episode is None, 5, what="recovery")
    await ob.flush()
    assert ob.counters["alarm"].pending == 2
    ob.ack_memory(epoch, "alarm", 1, 2)  # PUBACKs of copies sent from memory, after both were committed
    await ob.flush()
    assert types_on_disk(ob.path, "alarm") == []
    assert ob.counters["alarm"].acknowledged == 2
    reconciles(ob)


async def test_a_transient_failure_cured_at_once_raises_no_alarm_and_keeps_seqs(tmp_path, outboxes):
    """One or two failures (a cap the forced prune cures): the producer gets real seqs, no store.degraded."""
    ob = await outboxes(tmp_path / "o.sqlite")
    disk = Disk(ob)
    disk.broken = True
    put = asyncio.create_task(ob.put("alarm", [alarm(1)], wait_commit=True))
    await until(lambda: disk.failed >= 1, 2, what="a failed commit")
    assert ob.memory_rows("alarm", 0, 10), "published from memory at once, even before the episode is confirmed"
    disk.broken = False
    assert await asyncio.wait_for(put, 5) == [1]
    assert types_on_disk(ob.path, "alarm") == ["smoke"] and ob.episode is None and not ob.degraded
    reconciles(ob)


async def test_every_episode_and_every_process_has_its_own_memory_epoch(tmp_path, outboxes):
    """A kill -9 while degraded loses the memory; the next process must never reuse its (epoch, seq)."""
    ob = await outboxes(tmp_path / "o.sqlite")
    disk = Disk(ob)
    epochs = set()
    for _ in range(2):
        disk.broken = True
        await ob.put("alarm", [alarm(1)])
        await until(lambda: ob.episode is not None, 3, what="a confirmed episode")
        epochs.add(ob.memory.epoch)
        disk.broken = False
        await until(lambda: ob.episode is None, 5, what="recovery")
    other = MemoryLog()
    epochs.add(other.begin())
    assert len(epochs) == 3 and ob.epoch not in epochs


async def test_memory_is_bounded_and_a_refused_put_is_counted(tmp_path, outboxes):
    ob = await outboxes(tmp_path / "o.sqlite", memory=MemoryLog(max_records=5))
    disk = Disk(ob)
    disk.broken = True
    await ob.put("event", [alarm(1)])
    await until(lambda: ob.episode is not None, 3, what="a confirmed episode")
    await ob.put("event", [alarm(i) for i in range(4)])
    with pytest.raises(StoreFull):
        await ob.put("event", [alarm(9)], wait_commit=True)
    assert ob.counters["event"].shed == {"memory_full": 1} and ob.counters["event"].in_memory == 5
    disk.broken = False
    await until(lambda: ob.episode is None, 5, what="recovery")
    await ob.flush()
    reconciles(ob)


async def test_telemetry_is_shed_on_a_full_disk_while_alarms_wait_in_memory(tmp_path, outboxes):
    ob = await outboxes(tmp_path / "o.sqlite")
    disk = Disk(ob)
    disk.broken = True
    await ob.put("telemetry", [alarm(i, "reading") for i in range(10)])
    await ob.put("alarm", [alarm(1)])
    await until(lambda: ob.episode is not None, 3, what="a confirmed episode")
    assert ob.counters["telemetry"].shed.get("store_full", 0) == 10
    disk.broken = False
    await until(lambda: ob.episode is None, 5, what="recovery")
    await ob.flush()
    assert types_on_disk(ob.path, "alarm") == ["smoke", "store.degraded"]
    reconciles(ob)


async def test_a_full_disk_at_start_opens_degraded_and_boot_is_saved_with_the_first_commit(tmp_path, outboxes, monkeypatch):
    path = tmp_path / "o.sqlite"
    first = await outboxes(path)
    await first.put("alarm", [alarm(1)], wait_commit=True)
    await first.close()
    from gateway.outbox import opening

    failures = {"n": 1}
    real_exec = opening.aiosqlite.Connection.executemany

    async def executemany(self, sql, params):
        if sql.startswith("INSERT OR REPLACE INTO meta") and failures["n"]:
            failures["n"] -= 1
            raise sqlite3.OperationalError(FULL)
        return await real_exec(self, sql, params)

    monkeypatch.setattr(opening.aiosqlite.Connection, "executemany", executemany)
    ob = await outboxes(path)
    monkeypatch.undo()
    assert ob.boot == 2 and ob.degraded and ob.episode is not None and ob.episode.reason == "disk_full"
    assert dict(on_disk(path, "SELECT key, value FROM meta"))["boot"] == "1", "not saved yet"
    await until(lambda: ob.episode is None, 5, what="the first commit")
    await ob.flush()
    assert dict(on_disk(path, "SELECT key, value FROM meta"))["boot"] == "2"
    assert types_on_disk(path, "alarm") == ["smoke", "store.degraded"]
    reconciles(ob)


async def test_a_deleted_outbox_is_noticed_put_back_and_nothing_accepted_is_lost(tmp_path, outboxes):
    path = tmp_path / "state" / "o.sqlite"
    path.parent.mkdir()
    ob = await outboxes(path, check_interval=0.2)
    await ob.put("alarm", [alarm(1)], wait_commit=True)
    await ob.put("telemetry", [alarm(i, "reading") for i in range(5)], wait_commit=True)
    ob.ack("telemetry", 1, 2)
    await ob.flush()
    epoch = ob.epoch
    for suffix in ("", "-wal", "-shm"):
        os.unlink(f"{path}{suffix}")
    after = await ob.put("event", [alarm(2, "device.status")], wait_commit=True)  # accepted into the lost file
    await until(lambda: path.exists() and ob.episode is None, 3, what="the file put back")
    await ob.put("alarm", [alarm(3)], wait_commit=True)
    await ob.flush()
    assert types_on_disk(path, "alarm") == ["smoke", "store.degraded", "smoke"]
    assert types_on_disk(path, "event") == ["device.status", "store.recovered"]
    assert after == [1]
    assert [s for (s,) in on_disk(path, "SELECT seq FROM telemetry")] == [3, 4, 5]
    assert dict(on_disk(path, "SELECT key, value FROM meta"))["epoch"] == epoch, "same epoch: same sequences"
    degraded = orjson.loads(on_disk(path, "SELECT body FROM alarm WHERE seq = 2")[0][0])
    assert degraded["reason"] == "deleted" and degraded["severity"] == "critical"
    assert os.stat(path).st_mode & 0o777 == 0o600
    reconciles(ob)
    await ob.close()
    again = Outbox(str(path))
    await again.open()
    try:
        assert again.epoch == epoch and again.boot == 2 and again.counters["alarm"].last_seq == 3
    finally:
        await again.close()


async def test_a_replaced_outbox_is_moved_aside_and_ours_put_back(tmp_path, outboxes):
    path = tmp_path / "o.sqlite"
    ob = await outboxes(path, check_interval=0.2)
    await ob.put("alarm", [alarm(1)], wait_commit=True)
    foreign = tmp_path / "other.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE x (y)").connection.close()
    os.replace(foreign, path)
    await until(lambda: ob.episode is None and ob.commits > 2 and types_on_disk(path, "alarm")[-1:] == ["store.degraded"],
                3, what="the file put back")
    await ob.flush()
    recovered = orjson.loads(on_disk(path, "SELECT body FROM event ORDER BY seq DESC LIMIT 1")[0][0])
    assert recovered["type"] == "store.recovered" and recovered["reason"] == "replaced"
    assert recovered["moved_to"] and on_disk(recovered["moved_to"], "SELECT name FROM sqlite_master") == [("x",)]
    reconciles(ob)


async def test_alarms_from_memory_reach_the_broker_under_the_memory_epoch_and_leave_once_acknowledged(tmp_path, outboxes, broker):
    ob = await outboxes(tmp_path / "o.sqlite")
    sub = await asyncio.to_thread(Subscriber, broker.port)
    uplink = Uplink(BrokerConfig(host="127.0.0.1", port=broker.port, backoff_initial=0.1, backoff_max=0.5), Topics("s", "g"), ob)
    ob.on_commit.append(uplink.committed)
    task = asyncio.create_task(uplink.run())
    try:
        await ob.put("alarm", [alarm(0)], wait_commit=True)
        await until(lambda: sub.records("alarm"), 5, what="a committed alarm on the broker")
        disk = Disk(ob)
        disk.broken = True
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await ob.put("alarm", [alarm(1)])
        await until(lambda: any(r.get("n") == 1 for r in sub.records("alarm")), 2, what="the smoke alarm from memory")
        assert loop.time() - t0 < 1.0
        await until(lambda: any(r["type"] == "store.degraded" for r in sub.records("alarm")), 3, what="store.degraded")
        msgs = [m for _, m, _ in sub.messages if m.get("lane") == "alarm"]
        assert {m["epoch"] for m in msgs} == {ob.epoch, ob.memory.epoch}
        await until(lambda: ob.memory_rows("alarm", 0, 10) == [], 3, what="PUBACKs of the records from memory")
        disk.broken = False
        await until(lambda: ob.episode is None, 5, what="recovery")
        await until(lambda: any(r["type"] == "store.recovered" for r in sub.records("event")), 5, what="store.recovered")
        recovered = next(r for r in sub.records("event") if r["type"] == "store.recovered")
        assert recovered["held"] == 2 and recovered["delivered_from_memory"] == 2
        keys = [(m["epoch"], m["lane"], r["seq"]) for _, m, _ in sub.messages if "records" in m for r in m["records"]]
        assert len(keys) == len(set(keys)), "a record was published twice"
        await until(lambda: all(c.pending == 0 for c in ob.counters.values()), 5, what="everything delivered")
        reconciles(ob)
        store_msgs = [(t, p) for t, p in sub.raw if b'"store.' in p]
        assert len(store_msgs) >= 2 and all(validate(t, p) == [] for t, p in store_msgs), "store.* records vs docs/schemas"
    finally:
        await uplink.stop()
        task.cancel()
        await asyncio.to_thread(sub.close)
