"""Copies of the raise for groups paged later: before the escalation, keyed by the raise, kept across restarts."""

from __future__ import annotations

import json

from gateway.alerts import state as statefile
from gateway.alerts.engine import AlertEngine
from tests.gateway.alerts.support import EPOCH, SMOKE, Harness, ack, load_site, rules, smoke_on


def seq_of(h: Harness, record: dict) -> int:
    """The harness's emit hands out seqs 1, 2, … in commit order."""
    return next(i for i, (_, r) in enumerate(h.records, 1) if r is record)


async def test_each_group_paged_later_gets_the_raise_first_as_a_copy_keyed_by_it(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    raised = await smoke_on(h)
    await h.advance(300, step=10)
    copies = h.copies(alert=raised["alert"])
    key = {"epoch": EPOCH, "lane": "alarm", "seq": seq_of(h, raised)}
    assert [(c["topic"], c["copy_of"]) for c in copies] == [("alert/volunteers", key), ("alert/grid-leader", key)]
    for c in copies:  # the raise as committed, word for word: only copy_of and where it goes differ
        assert {k: v for k, v in c.items() if k not in ("copy_of", "topic")} == {k: v for k, v in raised.items() if k != "topic"}
    order = [(r["type"], r.get("topic")) for _, r in h.records]
    assert order == [("alert.raised", "event alert/property-office"),
                     ("alert.raised", "alert/volunteers"),
                     ("alert.escalated", "event alert/property-office alert/volunteers"),
                     ("alert.raised", "alert/grid-leader"),
                     ("alert.escalated", "event alert/property-office alert/volunteers alert/grid-leader")]
    assert {lane for lane, r in h.records if "copy_of" in r} == {"alarm"}


async def test_a_group_paged_again_gets_no_second_copy(tmp_path):
    chain = {"escalation": [{"group": "property-office", "after": 0}, {"group": "volunteers", "after": 60},
                            {"group": "property-office", "after": 120}]}
    h = Harness(load_site(tmp_path, rules(SMOKE, classes={"fire": chain})))
    raised = await smoke_on(h)
    await h.advance(130, step=10)
    assert [r["step"] for r in h.of("alert.escalated")] == [1, 2]
    assert [c["topic"] for c in h.copies(alert=raised["alert"])] == ["alert/volunteers"]


async def test_an_acknowledged_alert_pages_nobody_new_and_sends_no_copy(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    raised = await smoke_on(h)
    ack(h, raised["alert"])
    await h.advance(300, step=10)
    assert h.copies() == [] and h.of("alert.escalated") == []


async def test_the_raise_and_its_key_survive_a_restart(tmp_path):
    cfg = load_site(tmp_path, rules(SMOKE))
    h = Harness(cfg, state_dir=str(tmp_path))
    raised = await smoke_on(h)
    h.engine.save_now()
    saved = json.loads(open(statefile.file_in(str(tmp_path), "sunny-court", "gw-3")).read())["alerts"][0]
    assert saved["raised_key"] == {"epoch": EPOCH, "lane": "alarm", "seq": 1} and saved["raised_body"]["type"] == "alert.raised"
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)  # its own emit starts at seq 1 again: no matter
    await h2.advance(120)
    copy = h2.copies(alert=raised["alert"])
    assert [(c["topic"], c["copy_of"]["seq"]) for c in copy] == [("alert/volunteers", 1)]
    assert copy[0]["texts"] == raised["texts"] and copy[0]["ts"] == raised["ts"]


async def test_the_kept_raise_is_dropped_from_the_state_file_once_the_alert_is_closed(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)), state_dir=str(tmp_path))
    raised = await smoke_on(h)
    ack(h, raised["alert"], resolve=True)
    await h.settle()
    h.engine.save_now()
    saved = json.loads(open(statefile.file_in(str(tmp_path), "sunny-court", "gw-3")).read())["alerts"][0]
    assert saved["resolved_at"] is not None and saved["raised_body"] is None and saved["raised_key"]["seq"] == 1


async def test_without_the_outbox_epoch_or_a_kept_raise_the_group_still_gets_the_raise(tmp_path):
    """An engine not told the epoch, or an alert saved before raises were kept: the copy is rebuilt, unkeyed."""
    cfg = load_site(tmp_path, rules(SMOKE))
    h = Harness(cfg)
    h.engine = AlertEngine(cfg, h.clock, h._emit, h._write)  # no epoch=
    raised = await smoke_on(h)
    h.engine.alerts[raised["alert"]].raised_body = None
    await h.advance(120)
    records = [r for _, r in h.records if r["type"] == "alert.raised"]
    assert [r.get("topic") for r in records] == ["event alert/property-office", "alert/volunteers"]
    assert "copy_of" not in records[1] and records[1]["alert"] == raised["alert"] and records[1]["texts"] == raised["texts"]
