"""Fan-out: a record whose topic column names several topics is published, the same bytes, on each.

docs/protocol.md, *Topic routing*: one outbox record, one seq, every copy the
same bytes; it leaves the outbox once **every** copy is acknowledged, and the
PUBACK hook ("delivered" for the alert engine) fires then, once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from core.mqtt import BrokerEndpoint, MqttClient
from core.protocol.topics import Topics
from core.records import event_body
from gateway.config.broker import BrokerConfig
from gateway.outbox.store import Outbox
from gateway.uplink.batch import cut_at_topic, topics_for
from gateway.uplink.uplink import Uplink
from tests.support import until

TOPICS = Topics("s", "g")
LIFECYCLE = "event alert/property-office alert/volunteers"


# --------------------------------------------------------------------------- pure


def test_a_topic_column_names_one_topic_or_several():
    b = TOPICS.base
    assert topics_for(TOPICS, "alarm", None) == [f"{b}/event"]
    assert topics_for(TOPICS, "event", "cmd/result") == [f"{b}/cmd/result"]
    assert topics_for(TOPICS, "alarm", LIFECYCLE) == [f"{b}/event", f"{b}/alert/property-office", f"{b}/alert/volunteers"]
    assert topics_for(TOPICS, "telemetry", None) == [f"{b}/telemetry"]


def test_batches_are_cut_where_the_topic_string_changes():
    rows = [(1, b"{}", LIFECYCLE), (2, b"{}", LIFECYCLE), (3, b"{}", "event alert/property-office"), (4, b"{}", None)]
    assert [r[0] for r in cut_at_topic(rows)] == [1, 2]
    assert [r[0] for r in cut_at_topic(rows[2:])] == [3]
    assert [r[0] for r in cut_at_topic(rows[3:])] == [4]


# --------------------------------------------------------------------------- acknowledgement of the copies


@dataclass
class FakeOutbox:
    """What the uplink's send path uses of an Outbox."""

    epoch: str = "0123456789abcdef"
    boot: int = 1
    acked: list[tuple[str, int, int]] = field(default_factory=list)

    def ack(self, lane: str, first: int, last: int) -> None:
        self.acked.append((lane, first, last))


class FakeClient:
    """Hands out mids and remembers what was published (no broker)."""

    def __init__(self) -> None:
        self.published: list[tuple[int, str, bytes]] = []

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        self.published.append((len(self.published) + 1, topic, payload))
        return len(self.published)


SUCCESS = ReasonCode(PacketTypes.PUBACK, "Success")


async def test_rows_leave_and_delivered_fires_only_once_every_copy_is_acknowledged():
    outbox = FakeOutbox()
    uplink = Uplink(BrokerConfig(host="127.0.0.1"), TOPICS, outbox)  # type: ignore[arg-type]
    delivered: list[tuple[str, int, int]] = []
    uplink.on_acked.append(lambda *a: delivered.append(a))
    client = FakeClient()
    rows = [(7, b'{"type":"alert.raised"}', LIFECYCLE), (8, b'{"type":"alert.escalated"}', LIFECYCLE)]
    assert uplink._publish(client, "alarm", rows) == 8  # type: ignore[arg-type]
    assert [t.removeprefix(TOPICS.base + "/") for _, t, _ in client.published] == LIFECYCLE.split(" ")
    assert len({p for _, _, p in client.published}) == 1, "every copy is the same bytes"
    assert uplink.published["alarm"] == 3
    for mid in (3, 1):  # PUBACKs in any order
        uplink._on_publish(mid, SUCCESS)
        assert outbox.acked == [] and delivered == [], "acknowledged before every copy was"
    uplink._on_publish(2, SUCCESS)
    assert outbox.acked == [("alarm", 7, 8)] and delivered == [("alarm", 7, 8)]
    assert uplink.acked_records["alarm"] == 2 and not uplink._inflight


async def test_a_copy_the_broker_refuses_keeps_the_rows_in_the_outbox():
    outbox = FakeOutbox()
    uplink = Uplink(BrokerConfig(host="127.0.0.1"), TOPICS, outbox)  # type: ignore[arg-type]
    client = FakeClient()
    uplink._publish(client, "event", [(3, b'{"type":"alert.acknowledged"}', "event alert/volunteers")])  # type: ignore[arg-type]
    uplink._on_publish(1, SUCCESS)
    uplink._on_publish(2, ReasonCode(PacketTypes.PUBACK, "Not authorized"))  # MQTT 5: the broker did not take it
    assert outbox.acked == [] and uplink.puback_refused == 1 and uplink._inflight_bytes == 0


# --------------------------------------------------------------------------- with mosquitto


class Collector:
    """Raw payloads of everything under the gateway's root, in arrival order."""

    def __init__(self, port: int):
        self.messages: list[tuple[str, bytes]] = []
        self.client = MqttClient(BrokerEndpoint("127.0.0.1", port), on_message=self._on_message)

    def _on_message(self, msg) -> None:
        if not msg.topic.endswith("/state"):
            self.messages.append((msg.topic.removeprefix(TOPICS.base + "/"), msg.payload))


@pytest.fixture
async def collector(broker):
    c = Collector(broker.port)
    await c.client.connect()
    await c.client.subscribe(f"{TOPICS.base}/#")
    yield c
    await c.client.disconnect()


async def test_lifecycle_records_reach_every_topic_and_leave_after_every_puback(broker, collector, tmp_path):
    outbox = Outbox(str(tmp_path / "outbox.sqlite"), commit_interval=0.05)
    await outbox.open()
    uplink = Uplink(BrokerConfig(host="127.0.0.1", port=broker.port, backoff_initial=0.1), TOPICS, outbox)
    outbox.on_commit.append(uplink.committed)
    delivered: list[tuple[str, int, int]] = []
    uplink.on_acked.append(lambda *a: delivered.append(a))
    plan = [("alarm", "event alert/property-office", "alert.raised"), ("alarm", LIFECYCLE, "alert.escalated"),
            ("alarm", LIFECYCLE, "alert.updated"), ("event", LIFECYCLE, "alert.acknowledged"),
            ("event", None, "device.status"), ("event", LIFECYCLE, "alert.resolved")]
    for lane, topic, kind in plan:
        await outbox.put(lane, [event_body(1.0, kind)], topic=topic)
    await outbox.flush()
    with pytest.raises(ValueError, match="names a topic twice"):
        await outbox.put("alarm", [b"{}"], topic="event event")
    task = asyncio.create_task(uplink.run())
    try:
        await until(lambda: outbox.pending("alarm") == 0 and outbox.pending("event") == 0, what="every copy acknowledged")
        got = [(topic, payload) for topic, payload in collector.messages]
        alarm = [(t, p) for t, p in got if b'"lane":"alarm"' in p]
        assert [t for t, _ in alarm] == ["event", "alert/property-office", "event", "alert/property-office",
                                         "alert/volunteers"], "cut where the topic string changes, one message per topic"
        assert alarm[2][1] == alarm[3][1] == alarm[4][1] and b'"seq":[2,3]' in alarm[2][1]
        events = [(t, p) for t, p in got if b'"lane":"event"' in p]
        assert [(t, p.count(b'"seq":')) for t, p in events] == [
            ("event", 2), ("alert/property-office", 2), ("alert/volunteers", 2),  # seq 1: acknowledged
            ("event", 2),  # seq 2: device.status, its own topic only
            ("event", 2), ("alert/property-office", 2), ("alert/volunteers", 2)]  # seq 3: resolved
        assert sorted(delivered) == [("alarm", 1, 1), ("alarm", 2, 3), ("event", 1, 1), ("event", 2, 2), ("event", 3, 3)]
        c = outbox.counters["alarm"]
        assert (c.produced, c.acknowledged, c.pending) == (3, 3, 0)
    finally:
        await uplink.stop()
        task.cancel()
        await outbox.close()
