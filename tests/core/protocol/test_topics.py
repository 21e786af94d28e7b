"""Topic names and their parsing."""

from __future__ import annotations

from core.protocol.topics import TopicName, Topics, parse_topic


def test_topic_names():
    t = Topics("sunny-court", "gw-3")
    assert t.meta == "canopy/v1/sunny-court/gw-3/meta"
    assert t.config == "canopy/v1/sunny-court/gw-3/config"
    assert t.replay == "canopy/v1/sunny-court/gw-3/replay"
    assert t.alert_group("volunteers") == "canopy/v1/sunny-court/gw-3/alert/volunteers"
    assert t.for_lane("alarm") == t.event and t.for_lane("telemetry") == t.telemetry


def test_parse_topic():
    assert parse_topic("canopy/v1/s/g/telemetry") == TopicName("s", "g", "telemetry", "telemetry")
    assert parse_topic("canopy/v1/s/g/alert/volunteers") == TopicName("s", "g", "alert/volunteers", "alert/{group}", "volunteers")
    assert parse_topic("canopy/v1/s/g/alert/ack").leaf == "alert/ack"
    assert parse_topic("canopy/v1/s/g/cmd/result").leaf == "cmd/result"
    for bad in ("canopy/v1/s/g/nope", "canopy/v2/s/g/state", "canopy/v1/s/state", "canopy/v1/s/g/alert/a/b", "x"):
        assert parse_topic(bad) is None, bad
