"""Re-raise policies and escalation timing: pure functions of the alert and the time."""

from __future__ import annotations

from gateway.alerts.lifecycle import Alert, ChainStep, Episode, escalation_due, next_escalation, on_new_episode

CHAIN = [ChainStep("office", 0, ("desk",)), ChainStep("volunteers", 120, ("wang",)), ChainStep("grid", 300, ("leader",))]


def test_an_open_alert_absorbs_new_episodes_whatever_the_policy():
    ep = Episode(alert="1-a", raised_at=0.0)
    for policy in ("each_episode", "once", "dead_time"):
        assert on_new_episode(policy, 60, ep, last_open=True, now=1000) == "fold"


def test_each_episode_raises_again_after_the_last_one_closed():
    assert on_new_episode("each_episode", None, Episode(), False, 0) == "raise"
    assert on_new_episode("each_episode", None, Episode(alert="1-a", raised_at=0), False, 1) == "raise"


def test_once_waits_for_an_acknowledgement():
    ep = Episode(alert="1-a", raised_at=0.0, acked=False)
    assert on_new_episode("once", None, ep, False, 10_000) == "fold"
    ep.acked = True
    assert on_new_episode("once", None, ep, False, 10_000) == "raise"


def test_dead_time_folds_episodes_that_come_too_soon():
    ep = Episode(alert="1-a", raised_at=100.0)
    assert on_new_episode("dead_time", 600, ep, False, 699) == "fold"
    assert on_new_episode("dead_time", 600, ep, False, 700) == "raise"
    assert on_new_episode("dead_time", 600, ep, False, 50) == "raise"  # the wall clock went back: do not stay silent


def test_escalation_steps_are_due_from_the_raise_time_until_acknowledged():
    a = Alert(id="1-a", rule="r", subject="s", severity="critical", cls="fire", raised_at=1000.0)
    assert escalation_due(a, CHAIN, 1119) == []
    assert next_escalation(a, CHAIN) == 1120
    assert escalation_due(a, CHAIN, 1120) == [1]
    assert escalation_due(a, CHAIN, 1400) == [1, 2]  # after a long outage both are due, in order
    a.step = 1
    assert next_escalation(a, CHAIN) == 1300
    a.acked_at = 1200.0
    assert escalation_due(a, CHAIN, 1400) == [] and next_escalation(a, CHAIN) is None
    b = Alert(id="2-b", rule="r", subject="s", severity="critical", cls="fire", raised_at=0.0, resolved_at=5.0)
    assert escalation_due(b, CHAIN, 1000) == []


def test_status_follows_the_lifecycle_and_round_trips():
    a = Alert(id="1-a", rule="r", subject="s", severity="warning", cls=None, raised_at=1.0)
    assert a.status == "raised"
    a.delivered_at = 2.0
    assert a.status == "delivered"
    a.acked_at = 3.0
    assert a.status == "acknowledged"
    a.resolved_at = 4.0
    assert a.status == "resolved" and not a.open
    assert Alert.from_dict({**a.to_dict(), "future_field": 1}) == a
