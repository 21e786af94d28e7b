"""An outbox file written before the topic column is upgraded on open, and everything in it delivered.

fixtures/outbox-v1.sqlite was written by the outbox code of commit 2b6c7a7
(fixtures/make_outbox_v1.py): the topic suffix inside the JSON body, pending
alarm, event and telemetry rows whose seqs do not start at 1.  What each
record should become is read from that file itself, with the routing rule of
that version (``Uplink._route``: a non-empty string ``"topic"`` names the
suffix, anything else goes to the lane's topic), and judged by what a
subscriber on a real mosquitto receives.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest

from core.protocol.topics import Topics
from core.records import LANES, event_body
from gateway.config.broker import BrokerConfig
from gateway.outbox import schema
from gateway.outbox.policy import StorePolicy
from gateway.outbox.schema import split_topic
from gateway.outbox.store import Outbox
from gateway.uplink.uplink import Uplink
from tests.support import Subscriber, until

FIXTURE = Path(__file__).parent / "fixtures" / "outbox-v1.sqlite"
TOPICS = Topics("s", "g")
NO_TTL = StorePolicy(telemetry_ttl=None, event_ttl=None)  # the fixture's records are dated when it was written


def query(path: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def v1_expectations(path: Path) -> dict[tuple[str, int], tuple[str, dict]]:
    """(lane, seq) -> (topic suffix, record as published) for every pending row, by version 1's rule."""
    out = {}
    for lane in LANES:
        for seq, body in query(path, f"SELECT seq, body FROM {lane}"):
            record = orjson.loads(body)
            suffix = record.get("topic") if lane != "telemetry" else None
            if isinstance(suffix, str) and suffix:
                del record["topic"]  # now in the column: published records no longer carry it
            else:
                suffix = "telemetry" if lane == "telemetry" else "event"
            out[(lane, seq)] = (suffix, {"seq": seq, **record})
    return out


@pytest.fixture
def v1_copy(tmp_path) -> Path:
    """A copy: the committed fixture itself is never opened for writing."""
    path = tmp_path / "outbox.sqlite"
    shutil.copyfile(FIXTURE, path)
    return path


async def test_v1_outbox_with_pending_rows_is_migrated_and_delivered_completely(v1_copy, broker):
    assert "topic" not in {r[1] for r in query(v1_copy, "PRAGMA table_info(event)")}, "the fixture is not version 1"
    expected = v1_expectations(v1_copy)
    epoch = dict(query(v1_copy, "SELECT key, value FROM meta"))["epoch"]
    suffixes = {suffix for suffix, _ in expected.values()}
    assert {"telemetry", "event", "cmd/result", "alert/property-office", "alert/volunteers"} <= suffixes
    assert min(seq for _, seq in expected) > 1, "the fixture should hold acknowledged rows before the pending ones"

    ob = Outbox(str(v1_copy), commit_interval=0.05, policy=NO_TTL)
    await ob.open()
    sub = await asyncio.to_thread(Subscriber, broker.port)
    uplink = Uplink(BrokerConfig(host="127.0.0.1", port=broker.port, backoff_initial=0.1, backoff_max=0.5), TOPICS, ob,
                    batch_max_records=3)  # small batches: cuts by size and by topic both happen
    ob.on_commit.append(uplink.committed)
    task = asyncio.create_task(uplink.run())
    try:
        # upgraded on open: the column holds the topic, no body names one, the epoch is the file's
        assert query(v1_copy, "PRAGMA user_version") == [(schema.VERSION,)]
        assert not query(v1_copy, "SELECT seq FROM alarm WHERE instr(body, '\"topic\":') > 0 "
                                  "UNION ALL SELECT seq FROM event WHERE instr(body, '\"topic\":') > 0")
        assert ob.epoch == epoch and ob.boot == 2
        assert all(c.reconciles() for c in ob.counters.values())
        assert {lane: ob.pending(lane) for lane in LANES} == {
            lane: sum(1 for (ln, _) in expected if ln == lane) for lane in LANES}

        await until(lambda: sum(len(sub.records(lane)) for lane in LANES) >= len(expected), 15, what="every pending record")
        with sub.lock:
            messages = [(t, m) for t, m, _ in sub.messages if not t.endswith("/state")]
        got = {}
        for topic, m in messages:
            assert m["epoch"] == epoch and m["seq"] == [m["records"][0]["seq"], m["records"][-1]["seq"]]
            for r in m["records"]:
                got[(m["lane"], r["seq"])] = (topic.removeprefix(TOPICS.base + "/"), r)
        assert got == expected, "a record arrived on another topic, changed, or not at all"
        await until(lambda: all(ob.pending(lane) == 0 for lane in LANES), what="the outbox to drain")
        assert all(c.reconciles() and c.produced == c.acknowledged for c in ob.counters.values())
        # the lanes' sequences go on from the file's
        last = max(seq for lane, seq in expected if lane == "alarm")
        assert await ob.put("alarm", [event_body(1.0, "smoke")], wait_commit=True, topic="alert/volunteers") == [last + 1]
    finally:
        await uplink.stop()
        task.cancel()
        await ob.close()
        await asyncio.to_thread(sub.close)


async def test_migration_is_one_transaction_and_runs_once(v1_copy, monkeypatch):
    """A crash half-way leaves the version 1 file as it was; the next open upgrades it; later opens change nothing."""
    before = {lane: query(v1_copy, f"SELECT seq, body FROM {lane}") for lane in LANES}
    calls = 0

    class PowerCut(Exception):
        pass

    def crash_on_third(body: bytes):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise PowerCut()
        return split_topic(body)

    monkeypatch.setattr(schema, "split_topic", crash_on_third)
    ob = Outbox(str(v1_copy), policy=NO_TTL)
    with pytest.raises(PowerCut):
        await ob.open()
    await ob._db.close()  # the process died: its transaction never committed
    assert "topic" not in {r[1] for r in query(v1_copy, "PRAGMA table_info(alarm)")}
    assert {lane: query(v1_copy, f"SELECT seq, body FROM {lane}") for lane in LANES} == before
    monkeypatch.undo()

    ob = Outbox(str(v1_copy), policy=NO_TTL)
    await ob.open()
    migrated = {lane: await ob.fetch(lane, 0, 100) for lane in LANES}
    await ob.close()
    assert [t for _, _, t in migrated["event"]] == ["cmd/result", "cmd/result", None, None, "cmd/result"]
    assert all(t is None for _, _, t in migrated["telemetry"])
    assert [(s, b) for s, b, _ in migrated["telemetry"]] == before["telemetry"], "telemetry rows are not touched"

    monkeypatch.setattr(schema, "split_topic", lambda body: pytest.fail("migrated twice"))
    ob = Outbox(str(v1_copy), policy=NO_TTL)
    await ob.open()
    assert {lane: await ob.fetch(lane, 0, 100) for lane in LANES} == migrated
    await ob.close()


@pytest.mark.parametrize("body, expected", [
    (b'{"ts":1.0,"type":"cmd.result","topic":"cmd/result","id":"c1"}', ("cmd/result", b'{"ts":1.0,"type":"cmd.result","id":"c1"}')),
    ('{"ts":2.5,"type":"alert.raised","topic":"alert/网格","message":"烟雾"}'.encode(),
     ("alert/网格", '{"ts":2.5,"type":"alert.raised","message":"烟雾"}'.encode())),
    (b'{"ts":1.0,"type":"x","topic":""}', None),  # version 1 sent these unchanged on the lane's topic
    (b'{"ts":1.0,"type":"x","topic":5}', None),
    (b'{"ts":1.0,"type":"x","note":"\\"topic\\": in a string"}', None),
    (b'not json "topic": at all', None),
], ids=["cmd-result", "utf8", "empty", "not-a-string", "only-inside-a-string", "not-json"])
def test_split_topic_moves_only_a_topic_version_1_would_have_routed_by(body, expected):
    assert split_topic(body) == expected
