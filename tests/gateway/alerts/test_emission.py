"""Records on their way to the outbox: retries, lanes that fail apart, topics, PUBACKs."""

from __future__ import annotations

import asyncio

import orjson

from gateway.alerts.emission import MAX_PENDING_EVENTS, RecordQueue
from gateway.alerts.lifecycle import Alert
from gateway.alerts.records import lane_of
from tests.gateway.alerts.support import SMOKE, Harness, ack, load_site, rules, smoke_on


async def test_emit_failure_is_retried(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)), fail_emits=1)
    await smoke_on(h)
    assert h.records == [] and h.engine.counters["emit_errors"] == 1
    await h.advance(1)
    assert [r["type"] for _, r in h.records] == ["alert.raised"]


async def test_delivered_once_the_broker_acknowledged_the_record(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    await smoke_on(h)
    seq = len(h.records)  # the harness's emit returns the record's seq
    h.engine.on_delivered("event", seq, seq)
    assert h.engine.snapshot()["open"][0]["status"] == "raised"
    h.engine.on_delivered("alarm", seq, seq)
    assert h.engine.snapshot()["open"][0]["status"] == "delivered"


async def test_every_lifecycle_record_goes_to_event_and_every_group_reached(tmp_path):
    """One row per record (one seq); its topic lists …/event and each group the alert has reached.
    A group paged later gets the raise as a copy of its own (test_copies.py)."""
    h = Harness(load_site(tmp_path, rules(SMOKE, {**SMOKE, "id": "no-class", "class": None, "outputs": []})))
    await smoke_on(h)
    await h.advance(120)
    raised = h.of("alert.raised", rule="smoke-alarm")
    assert [(r["topic"], r["groups"]) for r in raised] == [("event alert/property-office", ["property-office"])]
    assert [(r["topic"], r["groups"]) for r in h.of("alert.escalated")] == [
        ("event alert/property-office alert/volunteers", ["property-office", "volunteers"])]
    assert [(c["topic"], c["copy_of"]["seq"]) for c in h.copies(rule="smoke-alarm")] == [
        ("alert/volunteers", h.records.index(("alarm", raised[0])) + 1)]
    no_class = h.of("alert.raised", rule="no-class")[0]
    assert "topic" not in no_class and no_class["groups"] == []  # no class, no group: …/event only
    ack(h, raised[0]["alert"], resolve=True)
    await h.settle()
    for type_ in ("alert.acknowledged", "alert.resolved"):
        rec = h.of(type_, alert=raised[0]["alert"])[0]
        assert rec["topic"] == "event alert/property-office alert/volunteers"
        assert rec["groups"] == ["property-office", "volunteers"]


async def test_a_stuck_event_lane_does_not_hold_back_alarms_or_outputs(tmp_path):
    cfg = load_site(tmp_path, rules(SMOKE))
    h = Harness(cfg)
    committed = []

    async def emit(lane, body, topic=None):
        if lane == "event":
            raise RuntimeError("event queue full: the store is not committing")
        committed.append(orjson.loads(body))

    h.engine.emit = emit
    raised = await smoke_on(h)
    assert raised is None and [r["type"] for r in committed] == ["alert.raised"]
    ack(h, committed[0]["alert"], resolve=True)  # acknowledged + resolved: event lane, stuck
    h.feed("smoke-hall", "alarm", False)
    h.feed("smoke-hall", "alarm", True)
    await h.settle()
    assert [r["type"] for r in committed] == ["alert.raised", "alert.raised"]
    assert h.engine.counters["emit_errors"] >= 1


async def test_outputs_are_driven_while_a_commit_hangs(tmp_path):
    gas = {"id": "gas", "type": "threshold", "device": "smoke-hall", "point": "gas_lel", "above": 10}
    h = Harness(load_site(tmp_path, rules(SMOKE, gas)))
    gate = asyncio.Event()
    emitted = []

    async def emit(lane, body, topic=None):
        emitted.append(orjson.loads(body)["rule"])
        await gate.wait()  # the outbox is stuck (disk full, slow SD card)

    h.engine.emit = emit
    h.feed("smoke-hall", "gas_lel", 30.0)
    drain = asyncio.create_task(h.engine.drain())
    for _ in range(5):
        await asyncio.sleep(0)
    assert emitted == ["gas"]  # the drain is stuck in this commit
    h.feed("smoke-shed", "alarm", False)
    h.feed("smoke-shed", "alarm", True)
    for _ in range(5):
        await asyncio.sleep(0)
    assert h.writes == [("sounder", "sounder", True)]
    gate.set()
    await drain
    await h.engine.drain()
    assert emitted == ["gas", "smoke-alarm"]



# --------------------------------------------------------------------------- the queue on its own


def _alert(aid: str) -> Alert:
    return Alert(id=aid, rule="r", subject="s", severity="critical", cls=None, raised_at=0.0)


async def test_queue_commits_alarms_before_events_and_maps_raised_seqs():
    committed = []

    async def emit(lane, body, topic=None):
        committed.append((lane, body))
        return len(committed)

    a = _alert("1-aaaa")
    q = RecordQueue(emit, lambda al, tag: (lane_of(tag), f"{al.id}:{tag}".encode(), None), {"emit_errors": 0})
    q.add(a, "acknowledged")
    q.add(a, "raised")
    assert q.add_event(b"rejected")
    assert await q.flush(0.0, {a.id: a}) is True
    assert committed == [("alarm", b"1-aaaa:raised"), ("event", b"1-aaaa:acknowledged"), ("event", b"rejected")]
    assert a.pending == [] and len(q) == 0
    assert q.delivered("alarm", 1, 1) == ["1-aaaa"] and q.delivered("alarm", 1, 1) == []


async def test_ack_answers_waiting_for_a_stuck_outbox_are_bounded():
    async def emit(lane, body, topic=None):
        raise RuntimeError("outbox is closing")

    counters = {"emit_errors": 0}
    q = RecordQueue(emit, lambda al, tag: (lane_of(tag), b"", None), counters)
    accepted = [q.add_event(b"rejected") for _ in range(MAX_PENDING_EVENTS + 5)]
    assert accepted.count(True) == MAX_PENDING_EVENTS and len(q) == MAX_PENDING_EVENTS
    a = _alert("2-bbbb")
    q.add(a, "raised")  # an alert's record is never dropped
    assert len(q) == MAX_PENDING_EVENTS + 1
    assert await q.flush(0.0, {a.id: a}) is False
    assert counters["emit_errors"] == 2 and q.retry_at == 1.0  # one failure per lane, retried a second later
    assert not q.due(0.5) and q.due(1.0)
