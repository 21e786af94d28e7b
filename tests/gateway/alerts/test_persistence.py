"""Restarts and the state file: no alert forgotten, none raised twice, records not yet sent are sent."""

from __future__ import annotations

import json

from gateway.alerts import state as statefile
from gateway.alerts.persistence import parse
from tests.gateway.alerts.support import SMOKE, Harness, ack, flap, load_site, rules, smoke_on


async def test_restart_mid_episode_no_duplicate_and_escalation_resumes(tmp_path):
    cfg = load_site(tmp_path, rules(SMOKE))
    h = Harness(cfg, state_dir=str(tmp_path))
    raised = await smoke_on(h)
    await h.advance(150, step=10)
    assert [r["step"] for r in h.of("alert.escalated")] == [1]
    h.engine.save_now()  # what run() does when cancelled
    # the gateway restarts 30 s later
    await h.clock.advance(30)
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    await h2.settle()
    assert h2.writes == [("sounder", "sounder", True)]  # the sounder is driven again
    for _ in range(10):
        h2.feed("smoke-shed", "alarm", True)
        await h2.advance(1)
    assert h2.of("alert.raised") == [], "raised twice after a restart"
    await h2.advance(300 - 190 - 1, step=1)
    assert h2.of("alert.escalated") == []
    await h2.advance(1)
    assert [(r["step"], r["ts"] - raised["raised_at"]) for r in h2.of("alert.escalated")] == [(2, 300)]
    assert h2.engine.snapshot()["open"][0]["id"] == raised["alert"]
    ack(h2, raised["alert"])
    await h2.settle()
    assert h2.writes[-1] == ("sounder", "sounder", False)


async def test_restart_after_ack_resolve_while_the_condition_holds(tmp_path):
    cfg = load_site(tmp_path, rules(SMOKE))
    h = Harness(cfg, state_dir=str(tmp_path))
    raised = await smoke_on(h)
    ack(h, raised["alert"], resolve=True)
    await h.settle()
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    h2.feed("smoke-shed", "alarm", True)
    await h2.settle()
    assert h2.records == [] and h2.writes == []  # no new alert, and the released sounder stays off


async def test_a_record_not_committed_before_a_crash_is_sent_after_the_restart(tmp_path):
    cfg = load_site(tmp_path, rules(SMOKE))
    h = Harness(cfg, state_dir=str(tmp_path), fail_emits=100)  # the outbox refuses everything
    await smoke_on(h)
    assert h.records == [] and h.engine.counters["emit_errors"] >= 1
    saved = json.loads(open(statefile.file_in(str(tmp_path), "sunny-court", "gw-3")).read())
    assert saved["alerts"][0]["pending"] == ["raised"]
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    await h2.settle()
    assert [r["type"] for _, r in h2.records] == ["alert.raised"]
    assert h2.records[0][1]["alert"] == saved["alerts"][0]["id"]


async def test_rule_removed_from_the_config_resolves_its_open_alert(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)), state_dir=str(tmp_path))
    raised = await smoke_on(h)
    other = {"id": "gas", "type": "threshold", "device": "smoke-hall", "point": "gas_lel", "above": 10}
    h2 = Harness(load_site(tmp_path, rules(other), name="site2.yaml"), state_dir=str(tmp_path), clock=h.clock)
    await h2.settle()
    res = h2.of("alert.resolved")
    assert [(r["alert"], r["resolved_by"]) for r in res] == [(raised["alert"], "rule removed")]
    assert h2.writes == [("sounder", "sounder", False)]


async def test_state_file_stays_small(tmp_path):
    cfg = load_site(tmp_path, rules({**SMOKE, "outputs": []}, history=3))
    h = Harness(cfg, state_dir=str(tmp_path))
    h.feed("smoke-shed", "alarm", False)
    await flap(h, 10, 5)
    data = json.loads(open(statefile.file_in(str(tmp_path), "sunny-court", "gw-3")).read())
    assert len(data["alerts"]) == 3 and data["counter"] == 10


async def test_inactivity_clock_survives_a_restart(tmp_path):
    welfare = {"id": "welfare", "type": "inactivity", "sources": [{"device": "door-101", "point": "door_open"}],
               "for": "1h", "severity": "warning"}
    cfg = load_site(tmp_path, rules(welfare, timezone="UTC"))
    h = Harness(cfg, state_dir=str(tmp_path))
    h.feed("door-101", "door_open", False)
    await h.advance(600)
    h.feed("door-101", "door_open", True)  # activity at +600 s
    h.feed("door-101", "door_open", False)
    await h.settle()
    h.engine.save_now()
    await h.clock.advance(1800)  # down for half an hour
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    await h2.advance(1799, step=60)
    assert h2.of("alert.raised") == []
    await h2.advance(1)
    rec = h2.of("alert.raised")
    assert len(rec) == 1 and rec[0]["subject"] == "101"
    assert rec[0]["location"] == {"site": "sunny-court", "building": "3", "unit": "1", "household": "101", "grid": "G7"}
    assert rec[0]["message"] == "[WARNING] Welfare check: no activity for 1 h; please call or visit at building 3, unit 1, household 101, grid G7"


async def test_an_unwritable_state_file_never_holds_back_an_alarm(tmp_path):
    blocked = tmp_path / "ro"
    blocked.mkdir()
    h = Harness(load_site(tmp_path, rules(SMOKE)), state_dir=str(blocked / "missing-folder"))
    raised = await smoke_on(h)
    assert raised is not None and h.writes == [("sounder", "sounder", True)]
    assert h.engine.counters["state_errors"] >= 1
    n = h.engine.counters["state_errors"]
    for _ in range(10):
        h.feed("smoke-shed", "alarm", True)
        await h.settle()
    assert h.engine.counters["state_errors"] == n, "retried with backoff, not on every poll"
    await h.advance(2)
    assert h.engine.counters["state_errors"] > n



def test_a_state_file_with_damaged_entries_keeps_what_parses():
    saved = parse({"v": 1, "counter": 7,
                   "alerts": [{"id": "1-aaaa", "rule": "r", "subject": "s", "severity": "info", "cls": None, "raised_at": 1.0},
                              {"id": "2-bbbb"}, "garbage"],
                   "episodes": {"r|s": {"active": True, "alert": "1-aaaa"}, "r|t": "garbage"},
                   "rules": {"r": {"last_activity": {}}, "q": 5}})
    assert saved.counter == 7 and [a.id for a in saved.alerts] == ["1-aaaa"]
    assert list(saved.episodes) == ["r|s"] and saved.episodes["r|s"].active
    assert list(saved.rules) == ["r"]
    assert parse(saved.to_dict()).to_dict() == saved.to_dict()


async def _killed_between_commit_and_save(tmp_path, *, marks: bool) -> tuple[list[bytes], Harness, dict]:
    """A raise committed to a real outbox, then the process dies before the state file says so (the state file
    is put back as it was at the commit); a new engine starts on both.  Returns the alarm rows, the new harness,
    the raise."""
    from gateway.outbox.store import Outbox

    cfg = load_site(tmp_path, rules(SMOKE))
    state = statefile.file_in(str(tmp_path), "sunny-court", "gw-3")
    outbox = Outbox(str(tmp_path / "outbox.sqlite"), commit_interval=0.01)
    await outbox.open()
    at_commit: list[bytes] = []
    try:
        def engine_on_outbox(h: Harness) -> Harness:
            async def emit(lane, body, topic=None, mark=None):
                at_commit.append(open(state, "rb").read())  # saved before the commit (pending: raised)
                await h._emit(lane, body, topic)
                return await outbox.put(lane, [body], wait_commit=True, topic=topic, mark=mark if marks else None)

            h.engine.emit = emit
            h.engine.records.committed = outbox.marked if marks else None
            return h

        h = engine_on_outbox(Harness(cfg, state_dir=str(tmp_path)))
        raised = await smoke_on(h)
        assert raised is not None and json.loads(at_commit[0])["alerts"][0]["pending"] == ["raised"]
        open(state, "wb").write(at_commit[0])  # kill -9 after COMMIT, before the next state save
        h2 = engine_on_outbox(Harness(cfg, state_dir=str(tmp_path), clock=h.clock))
        await h2.settle()
        await h2.advance(130, step=10)  # on to the first escalation
        rows = [bytes(r[1]) for r in await outbox.fetch("alarm", 0, 100)]
    finally:
        await outbox.close()
    return rows, h2, raised


async def test_a_record_committed_just_before_a_crash_is_not_sent_again(tmp_path):
    """kill -9 between the outbox's COMMIT and the state save that follows it: the restarted engine finds the
    record's mark (committed with it, gateway/outbox/marks.py), takes its seq and does not send it twice; the
    escalation after the restart still names the raise it copies."""
    rows, h2, raised = await _killed_between_commit_and_save(tmp_path, marks=True)
    types = [json.loads(b)["type"] for b in rows if "copy_of" not in json.loads(b)]
    assert types.count("alert.raised") == 1, types
    assert h2.of("alert.raised") == [], "raised again after the restart"
    assert [r["step"] for r in h2.of("alert.escalated", alert=raised["alert"])] == [1]
    a = h2.engine.alerts[raised["alert"]]
    assert a.pending == [] and a.raised_key is not None and a.raised_key["seq"] == 1
    assert [c["copy_of"]["seq"] for c in h2.copies(alert=raised["alert"])] == [1]


async def test_without_marks_the_same_crash_sends_the_raise_twice(tmp_path):
    """The negative control: the window the marks close is real."""
    rows, _, _ = await _killed_between_commit_and_save(tmp_path, marks=False)
    assert [json.loads(b)["type"] for b in rows if "copy_of" not in json.loads(b)].count("alert.raised") == 2
