"""The reference receiver: de-duplication across topics, gaps, v1 batches, refusals, state and meta."""

from __future__ import annotations

import orjson

from core.protocol import meta
from core.protocol.receiver import Receiver

BASE = "canopy/v1/sunny-court/gw-3"
EPOCH = "51fb60d06184c4c9"


def batch(lane: str, *records: dict, v: int = 2, epoch: str = EPOCH) -> bytes:
    return orjson.dumps({"v": v, "site": "sunny-court", "gateway": "gw-3", "epoch": epoch, "lane": lane,
                         "seq": [records[0]["seq"], records[-1]["seq"]], "records": list(records)})


def alert(seq: int, type_: str, groups: list[str]) -> dict:
    return {"seq": seq, "ts": 1795352566.0 + seq, "type": type_, "alert": "1-d70e", "groups": groups}


def test_an_alert_sent_to_two_groups_and_the_event_topic_is_seen_once_per_record():
    rx = Receiver()
    raised, escalated = alert(1, "alert.raised", ["property-office"]), alert(2, "alert.escalated", ["property-office", "volunteers"])
    acked, resolved = alert(1, "alert.acknowledged", ["property-office", "volunteers"]), alert(2, "alert.resolved", ["property-office", "volunteers"])
    traffic = [
        ("alert/property-office", batch("alarm", raised)), ("event", batch("alarm", raised)),
        ("alert/property-office", batch("alarm", escalated)), ("alert/volunteers", batch("alarm", escalated)),
        ("event", batch("alarm", escalated)),
        ("alert/volunteers", batch("event", acked)), ("event", batch("event", acked)), ("alert/property-office", batch("event", acked)),
        ("event", batch("event", acked, resolved)), ("alert/property-office", batch("event", resolved)),
        ("alert/volunteers", batch("event", resolved)),
    ]
    types = []
    for leaf, payload in traffic:
        types += [r["type"] for r in rx.receive(f"{BASE}/{leaf}", payload).records]
    assert types == ["alert.raised", "alert.escalated", "alert.acknowledged", "alert.resolved"]
    assert rx.counters["duplicates"] == 8
    assert rx.gaps("sunny-court", "gw-3") == {}


def test_a_copy_of_the_raise_is_keyed_by_its_original_whatever_the_order_it_arrives_in():
    """One rule: a record's key is its ``copy_of`` if it has one, else its own (epoch, lane, seq)."""
    raised = alert(1, "alert.raised", ["property-office"])
    copy = {**raised, "seq": 2, "copy_of": {"epoch": EPOCH, "lane": "alarm", "seq": 1}}
    escalated = alert(3, "alert.escalated", ["property-office", "volunteers"])
    office = [("event", batch("alarm", raised)), ("alert/property-office", batch("alarm", raised)),
              ("alert/property-office", batch("alarm", escalated)), ("event", batch("alarm", escalated))]
    volunteers = [("alert/volunteers", batch("alarm", copy)), ("alert/volunteers", batch("alarm", escalated))]
    for traffic in (office + volunteers, volunteers + office, volunteers + volunteers):
        rx = Receiver()
        types = [r["type"] for leaf, payload in traffic for r in rx.receive(f"{BASE}/{leaf}", payload).records]
        assert types.count("alert.raised") == 1 and types.count("alert.escalated") == 1, types
        assert rx.gaps("sunny-court", "gw-3") == {}  # the copy fills its own seq and its original's
    assert rx.counters["duplicates"] == 2  # the copy and the escalation, sent again after a reconnect


def test_a_copy_whose_original_is_malformed_is_a_bad_record():
    rx = Receiver()
    bad = [{"epoch": EPOCH, "lane": "alarm"}, {"epoch": EPOCH, "lane": "nowhere", "seq": 1}, "1", {"epoch": 7, "lane": "alarm", "seq": 1}]
    for n, copy_of in enumerate(bad, 2):
        got = rx.receive(f"{BASE}/alert/volunteers", batch("alarm", {**alert(n, "alert.raised", ["a"]), "copy_of": copy_of}))
        assert got.records == () and got.duplicates == 0
    assert rx.counters["bad_records"] == len(bad)
    assert len(rx.receive(f"{BASE}/event", batch("alarm", {**alert(9, "alert.raised", ["a"]), "copy_of": None})).records) == 1


def test_gaps_are_tracked_per_epoch_and_lane_and_close_when_the_records_arrive():
    rx = Receiver()
    t = f"{BASE}/telemetry"
    rec = lambda s: {"seq": s, "ts": 1.0, "device": "d", "point": "p", "value": s}  # noqa: E731
    rx.receive(t, batch("telemetry", rec(1), rec(2)))
    rx.receive(t, batch("telemetry", rec(5), rec(7)))
    assert rx.gaps("sunny-court", "gw-3") == {(EPOCH, "telemetry"): [(3, 4), (6, 6)]}
    got = rx.receive(t, batch("telemetry", rec(2), rec(3), rec(4), rec(6)))  # after a reconnect: 2 again
    assert [r["seq"] for r in got.records] == [3, 4, 6] and got.duplicates == 1
    assert rx.gaps("sunny-court", "gw-3") == {}
    other = "0123456789abcdef"  # a new outbox file: seqs start again
    assert len(rx.receive(t, batch("telemetry", rec(1), epoch=other)).records) == 1


def test_v1_batches_are_read_too():
    rx = Receiver()
    v1 = batch("event", {"seq": 2, "ts": 1.0, "type": "device.status", "topic": None, "device": "d", "bus": "b",
                         "status": "timeout", "previous": "ok", "detail": "no reply"}, v=1)
    got = rx.receive(f"{BASE}/event", v1)
    assert got.kind == "batch" and got.lane == "event" and got.records[0]["status"] == "timeout"


def test_records_from_before_first_contact_are_not_taken_for_duplicates():
    rx = Receiver()
    rec = lambda s: {"seq": s, "ts": 1.0, "type": "cmd.result"}  # noqa: E731
    rx.receive(f"{BASE}/cmd/result", batch("event", rec(10)))
    assert len(rx.receive(f"{BASE}/event", batch("event", rec(9))).records) == 1
    assert len(rx.receive(f"{BASE}/event", batch("event", rec(9))).records) == 0


def test_memory_is_bounded_by_giving_up_the_oldest_gap():
    rx = Receiver(max_pending=3)
    rec = lambda s: {"seq": s, "ts": 1.0, "device": "d", "point": "p", "value": 1}  # noqa: E731
    rx.receive(f"{BASE}/telemetry", batch("telemetry", rec(1)))
    for s in (10, 11, 12, 20):
        rx.receive(f"{BASE}/telemetry", batch("telemetry", rec(s)))
    assert rx.counters["given_up"] == 8  # seqs 2..9
    assert rx.gaps("sunny-court", "gw-3") == {(EPOCH, "telemetry"): [(13, 19)]}


def test_refusals_and_other_topics():
    rx = Receiver()
    assert rx.receive(f"{BASE}/event", b"{nope").problem.startswith("not_json")
    assert rx.receive(f"{BASE}/event", b'{"v":2}' + b" " * (25 * 1024 * 1024)).problem.startswith("too_large")
    assert rx.receive("canopy/v1/other/gw-3/event", batch("event", {"seq": 1, "ts": 1.0, "type": "x"})).kind == "refused"
    assert rx.receive(f"{BASE}/event", orjson.dumps({"site": "sunny-court", "gateway": "gw-3"})).kind == "refused"
    assert rx.receive(f"{BASE}/cmd", b"{}").kind == "to_gateway"
    assert rx.receive("somewhere/else", b"{}").kind == "ignored"
    assert rx.counters["refused"] == 4


def test_latest_state_and_meta_and_the_place_in_words():
    rx = Receiver()
    assert rx.where("sunny-court", "gw-3", "door-502") == "door-502"
    doc = meta.build_meta(site="sunny-court", gateway="gw-3", version="ab" * 8, devices={
        "door-502": {"location": {"building": "3", "unit": "502"}, "labels": {"en": "Mrs Wang's door"}}})
    assert rx.receive(f"{BASE}/meta", meta.meta_payload(doc)).kind == "meta"
    rx.receive(f"{BASE}/state", orjson.dumps({"v": 2, "site": "sunny-court", "gateway": "gw-3", "status": "online",
                                               "protocol": 2, "capabilities": ["signed_acks", "meta"], "meta": "ab" * 8}))
    assert rx.where("sunny-court", "gw-3", "door-502") == "building 3, unit 502, Mrs Wang's door"
    assert rx.state("sunny-court", "gw-3")["capabilities"] == ["signed_acks", "meta"]
    assert rx.meta("sunny-court", "gw-3")["version"] == rx.state("sunny-court", "gw-3")["meta"]
