"""Community scenarios (issue 5): the real daemon, the community simulator, a real mosquitto.

Time mapping.  The daemon runs on real time, so rule durations are scaled
down; each test says how ("1 s ≙ 3 h" means a rule of 4 s stands for 12 h).
Where the simulated physics matter (water flow) the simulator runs
accelerated by the same factor.  Escalation delays "2 min / 5 min" become
seconds.  The rule logic is the same code that runs with real durations; its
exact timing is unit-tested on a controllable clock (tests/gateway/alerts).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import orjson
import pytest

from core.protocol import envelope
from gateway.cli.alerts import add_parsers, cmd_ack
from tests.conftest import SimThread
from tests.gateway.alerts.support import (
    DESK,
    GROUPS,
    STRANGER,
    VOLUNTEERS,
    alert_messages,
    alert_records,
    chain,
    online,
    signed_ack,
    topic_leaves,
    write_site,
)
from tests.support import wait_until

SMOKE = {"id": "smoke-alarm", "type": "state", "devices": ["smoke-shed", "smoke-hall"], "point": "alarm", "to": True,
         "severity": "critical", "class": "fire", "outputs": [{"device": "sounder", "point": "sounder"}],
         "message": {"en": "Smoke alarm at {where} ({device})", "zh": "{where}（{device}）烟雾报警"}}


def ack(cfg, alert_id: str, by: str, *extra: str) -> int:
    """`canopy ack` with the duty desk's key (issuer duty-desk, ack: all), for the person ``by``."""
    import argparse

    key = cfg.parent / "duty-desk.key"
    if not key.exists():
        key.write_bytes(envelope.private_pem(DESK))
        key.chmod(0o600)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    return cmd_ack(parser.parse_args(["ack", alert_id, "--key", str(key), "--as", by, "-c", str(cfg), *extra]))


def copies(sub, type_: str, leaves: set[str], timeout: float = 3.0, **match) -> dict:
    """The record once a copy has arrived on each of ``leaves`` (the copies of one record travel separately)."""
    return wait_until(lambda: next((r for r in alert_records(sub, type_, **match) if topic_leaves(r) >= leaves), None),
                      timeout, 0.02, what=f"{type_} on {sorted(leaves)}")


@pytest.fixture
def sim_fast():
    """The community simulator at 600x: a simulated minute every 0.1 s (water flows, doors open)."""
    sim = SimThread("community", speed=600)
    yield sim
    sim.stop()


def test_smoke_is_a_critical_alarm_within_2s_sounds_the_sounder_and_escalates_until_acked(
        tmp_path, community_sim, broker, subscriber_factory, gateway_factory):
    """(a) smoke -> critical alarm on the broker < 2 s, sounder coil set; (d) escalation at the delays, ack stops it.

    Chain: property office at once, volunteers after 1.5 s, grid leader after 3 s (for 2 min / 5 min).
    """
    sub = subscriber_factory(broker.port)
    rules = {"groups": GROUPS, "classes": {"fire": chain(0, 1.5, 3.0)}, "rules": [SMOKE]}
    cfg = write_site(tmp_path, rules, sim_port=community_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gateway_factory(cfg)
    wait_until(lambda: online(sub, "smoke-shed", "smoke-hall", "sounder"), 15, what="gateway online and polling")
    sounder = community_sim.device("sounder").model

    t0 = time.monotonic()
    community_sim.device("smoke-shed").model.trigger_smoke()
    shed = wait_until(lambda: alert_records(sub, "alert.raised", device="smoke-shed"), 5, 0.02, what="smoke alarm on the broker")[0]
    latency = time.monotonic() - t0
    assert latency < 2.0, f"alarm took {latency:.2f} s"
    assert shed["severity"] == "critical" and shed["rule"] == "smoke-alarm"
    assert shed["location"] == {"site": "sunny-court", "building": "3", "zone": "e-bike-shed"}
    assert shed["readings"][0]["point"] == "alarm" and shed["readings"][0]["value"] is True
    assert shed["message"] == "[CRITICAL] Smoke alarm at building 3, e-bike-shed (smoke-shed)"
    assert shed["group"] == "property-office" and shed["recipients"] == ["duty-desk"]
    assert topic_leaves(copies(sub, "alert.raised", {"event", "alert/property-office"}, alert=shed["alert"])) == {
        "event", "alert/property-office"} and shed["groups"] == ["property-office"]
    wait_until(lambda: sounder.outputs["sounder"], 2, 0.02, what="sounder coil set")
    assert any(m["lane"] == "alarm" and any(r["type"] == "alert.raised" for r in m["records"])
               for _, m in alert_messages(sub)), "alerts travel in the alarm lane"

    community_sim.device("smoke-hall").model.trigger_smoke()
    hall = wait_until(lambda: alert_records(sub, "alert.raised", device="smoke-hall"), 5, what="second alarm")[0]
    wait_until(lambda: alert_records(sub, "alert.escalated", alert=hall["alert"]), 4, what="hall: second group")
    assert ack(cfg, hall["alert"], "vol-wang", "--note", "on my way") == 0
    acked = alert_records(sub, "alert.acknowledged", alert=hall["alert"])
    assert acked[0]["by"] == "vol-wang" and acked[0]["issuer"] == "duty-desk"

    # the unacknowledged shed alarm goes on to the third group, on time
    steps = wait_until(lambda: (s := alert_records(sub, "alert.escalated", alert=shed["alert"])) and len(s) >= 2 and s,
                       6, what="shed: third group")
    assert [(r["step"], r["group"], r["recipients"]) for r in steps] == [
        (1, "volunteers", ["vol-wang", "vol-li"]), (2, "grid-leader", ["grid-7-leader"])]
    for r in steps:  # each step on …/event and every group reached so far
        assert topic_leaves(copies(sub, "alert.escalated", {"event", *(f"alert/{g}" for g in r["groups"])}, alert=shed["alert"],
                                   step=r["step"])) == {"event", *(f"alert/{g}" for g in r["groups"])}
    for r, after in zip(steps, (1.5, 3.0)):
        assert after <= r["ts"] - shed["raised_at"] < after + 0.6, f"step {r['step']} at +{r['ts'] - shed['raised_at']:.2f} s"
    # the acked hall alarm did not: wait past its third step
    time.sleep(max(0.0, hall["raised_at"] + 3.0 + 0.8 - time.time()))
    assert [r["step"] for r in alert_records(sub, "alert.escalated", alert=hall["alert"])] == [1]
    assert sounder.outputs["sounder"], "still held by the unacknowledged shed alarm"

    assert ack(cfg, shed["alert"], "duty-desk", "--resolve") == 0
    wait_until(lambda: not sounder.outputs["sounder"], 3, what="sounder released")
    everyone = {"event", "alert/property-office", "alert/volunteers", "alert/grid-leader"}
    res = copies(sub, "alert.resolved", everyone, alert=shed["alert"])
    assert res["resolved_by"] == "ack:duty-desk" and topic_leaves(res) == everyone
    assert len({r["alert"] for r in alert_records(sub, "alert.raised")}) == 2


def test_restart_mid_episode_no_duplicate_and_escalation_resumes(tmp_path, community_sim, broker, subscriber_factory, gateway_factory):
    """(e) kill -9 between the second and third group: after the restart no second alert, the third group on time,
    and the sounder driven again."""
    sub = subscriber_factory(broker.port)
    rules = {"groups": GROUPS, "classes": {"fire": chain(0, 1.0, 5.0)}, "rules": [SMOKE]}
    cfg = write_site(tmp_path, rules, sim_port=community_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gw = gateway_factory(cfg)
    wait_until(lambda: online(sub, "smoke-shed"), 15, what="gateway online")
    sounder = community_sim.device("sounder").model
    community_sim.device("smoke-shed").model.trigger_smoke()
    raised = wait_until(lambda: alert_records(sub, "alert.raised"), 5, what="alarm")[0]
    wait_until(lambda: alert_records(sub, "alert.escalated"), 4, what="second group")
    gw.kill9()
    sounder.outputs["sounder"] = False  # somebody silenced the relay by hand while the gateway was down
    gw2 = gateway_factory(cfg)
    wait_until(lambda: sounder.outputs["sounder"], 10, what="sounder driven again after the restart")
    steps = wait_until(lambda: (s := alert_records(sub, "alert.escalated")) and len(s) >= 2 and s, 10, what="third group")
    assert [(r["alert"], r["step"]) for r in steps] == [(raised["alert"], 1), (raised["alert"], 2)]
    assert 5.0 <= steps[1]["ts"] - raised["raised_at"] < 5.6, "the third group is due 5 s after the raise, not after the restart"
    time.sleep(0.5)
    assert {r["alert"] for r in alert_records(sub, "alert.raised")} == {raised["alert"]}, "raised twice"
    assert gw2.alive()
    assert "state restored: 1 open alert" in gw2.output()


def test_welfare_check_once_after_12_hours_of_no_activity_never_during_quiet_hours(
        tmp_path, community_sim, broker, subscriber_factory, gateway_factory):
    """(b) 1 s ≙ 3 h: `for: 4s` is 12 hours.  Quiet hours end 3 s after the start (the last 9 hours of the night).

    The simulator is frozen (speed 0): household 101 neither opens its door nor runs water.
    Quiet time does not count (quiet: pause), so the alert is due 4 s after the quiet hours end.
    """
    sub = subscriber_factory(broker.port)
    now = time.time()
    hms = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S")  # noqa: E731
    quiet_end = float(int(now) + 3)  # whole seconds: the window is written HH:MM:SS
    welfare = {"id": "welfare-check", "type": "inactivity", "per": "household", "for": "4s", "quiet": "pause",
               "sources": [{"device": "door-101", "point": "door_open"}, {"device": "meter-101", "point": "flow_rate", "above": 0.01}],
               "severity": "warning", "class": "welfare"}
    rules = {"timezone": "UTC", "groups": GROUPS, "classes": {"welfare": chain(0, 60)},
             "households": {"101": {"quiet_hours": [f"{hms(now - 3600)}-{hms(quiet_end)}"]}}, "rules": [welfare]}
    cfg = write_site(tmp_path, rules, sim_port=community_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gateway_factory(cfg)
    wait_until(lambda: online(sub, "door-101", "meter-101"), 15, what="gateway online")
    rec = wait_until(lambda: alert_records(sub, "alert.raised"), 15, what="welfare alert")[0]
    assert rec["raised_at"] >= quiet_end + 4.0 - 0.05, f"raised {rec['raised_at'] - quiet_end:.2f} s after the quiet hours ended"
    assert rec["raised_at"] < quiet_end + 4.0 + 1.0
    assert rec["subject"] == "101" and rec["rule"] == "welfare-check"
    assert rec["location"] == {"site": "sunny-court", "building": "3", "unit": "1", "household": "101", "grid": "G7"}
    assert rec["message"].startswith("[WARNING] Welfare check: no activity for")
    time.sleep(1.0)
    assert len(alert_records(sub, "alert.raised")) == 1, "one welfare alert, no storm"


def test_tap_left_running_30_minutes_is_one_water_alert(tmp_path, sim_fast, broker, subscriber_factory, gateway_factory):
    """(c) simulator at 600x, rule `for: 3s` ≙ 30 min.  Everyday water use (showers of a few simulated
    minutes, i.e. well under a real second) never triggers it; a tap left running does, once."""
    sub = subscriber_factory(broker.port)
    water = {"id": "water-running", "type": "flow", "device": "meter-101", "point": "flow_rate", "above": 0.01,
             "for": "3s", "severity": "warning", "class": "welfare"}
    rules = {"groups": GROUPS, "classes": {"welfare": chain(0, 60)}, "rules": [water]}
    cfg = write_site(tmp_path, rules, sim_port=sim_fast.port, broker={"host": "127.0.0.1", "port": broker.port}, language="zh")
    gateway_factory(cfg)
    wait_until(lambda: online(sub, "meter-101"), 15, what="gateway online")
    meter = sim_fast.device("meter-101").model
    sim_fast.loop.call_soon_threadsafe(meter.set_tap_running, True)
    t0 = time.time()
    rec = wait_until(lambda: alert_records(sub, "alert.raised"), 8, what="water alert")[0]
    assert 3.0 <= rec["raised_at"] - t0 < 4.0
    assert rec["rule"] == "water-running" and rec["device"] == "meter-101"
    assert "用水已连续" in rec["message"] and rec["message"].startswith("【警告】3栋1单元101室")
    time.sleep(1.0)
    assert len(alert_records(sub, "alert.raised")) == 1
    sim_fast.loop.call_soon_threadsafe(meter.set_tap_running, False)
    res = wait_until(lambda: alert_records(sub, "alert.resolved"), 5, what="resolved once the tap is off")
    assert res[0]["alert"] == rec["alert"] and res[0]["resolved_by"] == "condition"
    assert res[0]["message"].startswith("【已解除】")


def test_bad_acks_change_nothing_a_signed_ack_through_canopy_ack_works(
        tmp_path, community_sim, broker, subscriber_factory, gateway_factory):
    """Issue 12: a forged, an unsigned, a replayed, an expired and a wrongly-scoped ack for a live critical smoke
    alarm change nothing -- alert open, sounder on, escalation on time -- and each is counted (…/state) and
    answered with its reason; then `canopy ack` with the duty desk's key resolves it and the sounder stops.

    Chain: property office at once, volunteers after 3 s, grid leader after 6 s.
    """
    sub = subscriber_factory(broker.port)
    rules = {"groups": GROUPS, "classes": {"fire": chain(0, 3.0, 6.0)}, "rules": [SMOKE]}
    cfg = write_site(tmp_path, rules, sim_port=community_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gateway_factory(cfg)
    wait_until(lambda: online(sub, "smoke-shed", "sounder"), 15, what="gateway online and polling")
    sounder = community_sim.device("sounder").model
    community_sim.device("smoke-shed").model.trigger_smoke()
    raised = wait_until(lambda: alert_records(sub, "alert.raised"), 5, 0.02, what="smoke alarm")[0]
    aid, now = raised["alert"], time.time()
    wait_until(lambda: sounder.outputs["sounder"], 2, 0.02, what="sounder on")

    topic = "canopy/v1/sunny-court/gw-3/alert/ack"
    early = signed_ack(aid, key=VOLUNTEERS, issuer="vol-app", by="vol-wang", now=now, valid_for=600)
    bad = {
        "bad_signature": signed_ack(aid, key=STRANGER, issuer="duty-desk", by="duty-li", resolve=True, now=now),
        "unsigned_ack": orjson.dumps({"alert": aid, "by": "duty-desk", "resolve": True}),
        "expired": signed_ack(aid, key=DESK, issuer="duty-desk", resolve=True, now=now - 400, valid_for=300),
        "unauthorised_alert": early,  # the volunteers have not been paged yet
    }
    for payload in bad.values():
        sub.publish(topic, payload).wait_for_publish(5)
    answers = wait_until(lambda: (r := alert_records(sub, "alert.ack_rejected")) and len(r) >= 4 and r, 5,
                         what="the four refusals answered")
    assert sorted(r["reason"] for r in answers) == sorted(bad)
    assert next(r for r in answers if r["reason"] == "unsigned_ack")["detail"].startswith("acks must be signed v2 envelopes")
    assert next(r for r in answers if r["reason"] == "unauthorised_alert")["id"] == orjson.loads(early)["id"]  # its audit

    step1 = wait_until(lambda: alert_records(sub, "alert.escalated", step=1), 5, what="escalation to the volunteers")[0]
    assert step1["ts"] - raised["raised_at"] < 3.6, "escalation on time despite the bad acks"
    sub.publish(topic, early).wait_for_publish(5)  # replayed: now in vol-app's scope, but already received
    wait_until(lambda: alert_records(sub, "alert.ack_rejected", reason="replayed"), 5, what="replay refused")
    assert sounder.outputs["sounder"], "no bad ack released the sounder"

    step2 = wait_until(lambda: alert_records(sub, "alert.escalated", step=2), 6, what="escalation to the grid leader")[0]
    assert step2["ts"] - raised["raised_at"] < 6.6
    state = wait_until(lambda: (st := sub.latest_state()) and len((st.get("alerts") or {}).get("ack_rejections", {})) >= 5 and st,
                       5, what="refusals counted in …/state")
    assert state["alerts"]["ack_rejections"] == {reason: 1 for reason in [*bad, "replayed"]}
    assert [(a["id"], a["status"]) for a in state["alerts"]["open"]] in ([(aid, "raised")], [(aid, "delivered")])
    assert alert_records(sub, "alert.acknowledged") == [] and sounder.outputs["sounder"]

    assert ack(tmp_path / "site.yaml", aid, "duty-li", "--resolve", "--note", "false alarm, cooking") == 0
    wait_until(lambda: not sounder.outputs["sounder"], 3, what="sounder released")
    everyone = {"event", "alert/property-office", "alert/volunteers", "alert/grid-leader"}
    acked = copies(sub, "alert.acknowledged", everyone, alert=aid)
    assert (acked["by"], acked["issuer"], acked["note"]) == ("duty-li", "duty-desk", "false alarm, cooking")
    assert alert_records(sub, "alert.resolved", alert=aid)[0]["resolved_by"] == "ack:duty-li"


def community_smoke_rules(scale: dict) -> list[dict]:
    """The shipped smoke rules of config/community.yaml (``incident: smoke`` added if the file lacks it), durations scaled."""
    import yaml

    from tests.support import ROOT

    shipped = yaml.safe_load((ROOT / "config" / "community.yaml").read_text(encoding="utf-8"))["rules"]
    out = []
    for r in shipped["rules"]:
        if r["id"] in ("smoke-alarm", "smoke-haze", "heat-rising", "smoulder"):
            r = {**r, **{k: v for k, v in scale.items() if k in r}}
            out.append(r if r["id"] == "heat-rising" or "incident" in r else {**r, "incident": "smoke"})
    return out, shipped.get("incidents", {})


def test_one_smoke_event_is_one_alert_rising_in_severity_as_rules_join_with_one_ack(
        tmp_path, community_sim, broker, subscriber_factory, gateway_factory):
    """The community's three smoke rules, all kept: haze (warning) raises, the alarm (critical) joins and raises the
    severity (``alert.updated`` on …/event and the group's topic), smoulder joins; one ack.

    Scaled: smoke-haze's delay_on 10 s -> 0.4 s, heat-rising's window 2 min -> 1 s; the simulator is frozen and
    the test sets the detector's haze and temperature itself.
    """
    sub = subscriber_factory(broker.port)
    smoke, incidents = community_smoke_rules({"delay_on": 0.4, "delay_off": 1.0, "window": 1.0})
    rules = {"groups": GROUPS, "classes": {"fire": chain(0, 1.5, 3.0)}, "rules": smoke, "incidents": incidents}
    cfg = write_site(tmp_path, rules, sim_port=community_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gateway_factory(cfg)
    wait_until(lambda: online(sub, "smoke-shed", "sounder"), 15, what="gateway online and polling")
    shed, sounder = community_sim.device("smoke-shed").model, community_sim.device("sounder").model

    shed.smoke_bg = 1.5  # haze below the detector's own alarm level (2.0)
    raised = wait_until(lambda: alert_records(sub, "alert.raised"), 5, 0.02, what="haze: a warning")[0]
    assert (raised["rule"], raised["severity"], raised["incident"]) == ("smoke-haze", "warning", "smoke")
    shed.trigger_smoke()  # the detector's alarm: critical
    up = copies(sub, "alert.updated", {"event", "alert/property-office"}, alert=raised["alert"])
    assert (up["previous_severity"], up["severity"]) == ("warning", "critical") and up["rules"] == ["smoke-haze", "smoke-alarm"]
    wait_until(lambda: sounder.outputs["sounder"], 2, 0.02, what="sounder on at the rise")
    shed.temp += 6.0  # heat rising: smoulder joins (the alert is critical already: nothing new to page)
    time.sleep(1.5)
    assert ack(cfg, raised["alert"], "duty-desk") == 0
    acked = wait_until(lambda: alert_records(sub, "alert.acknowledged"), 3, what="one ack")
    assert acked[0]["rules"] == ["smoke-haze", "smoke-alarm", "smoulder"] and acked[0]["severity"] == "critical"
    assert len(alert_records(sub, "alert.raised")) == 1 and len(alert_records(sub, "alert.updated")) == 1
    for r in alert_records(sub):
        assert "smoulder" not in r["texts"]["en"] and "smoke-haze" not in r["texts"]["en"], r["texts"]
    assert acked[0]["texts"]["en"].startswith("Acknowledged by duty-desk at 20")
