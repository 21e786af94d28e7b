"""The uplink against a real mosquitto: envelopes, PUBACK -> delete, alarms first, state, reconnects.

Judged by what a subscriber on the broker receives and by what is left in the
outbox, never by the uplink's own counters alone.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time

import orjson
import pytest

from core.protocol.topics import Topics
from core.records import Reading, event_body, reading_body
from gateway.config.broker import BrokerConfig
from gateway.outbox.store import Outbox
from gateway.uplink.uplink import Uplink
from tests.support import until  # noqa: E402

SITE, GW = "s", "g"
TOPICS = Topics(SITE, GW)



def reading(i: int) -> bytes:
    return reading_body(Reading(1_700_000_000.0 + i, "soil-1", "moisture", i, "%"))


def rows_on_disk(path, lane: str) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT count(*) FROM {lane}").fetchone()[0]
    finally:
        db.close()


class Rig:
    """Outbox + Uplink wired as runtime.Gateway does."""

    def __init__(self, tmp_path, port: int, *, commit_interval: float = 0.05, **uplink_kw):
        self.path = tmp_path / "outbox.sqlite"
        self.outbox = Outbox(str(self.path), commit_interval=commit_interval)
        self.port = port
        self.uplink_kw = uplink_kw
        self.uplink: Uplink | None = None
        self.task: asyncio.Task | None = None

    async def open(self) -> "Rig":
        await self.outbox.open()
        self.uplink = Uplink(
            BrokerConfig(host="127.0.0.1", port=self.port, backoff_initial=0.1, backoff_max=0.5),
            TOPICS, self.outbox, state=lambda: {"boot": self.outbox.boot, "devices": {"soil-1": {"status": "ok"}}},
            **self.uplink_kw,
        )
        self.outbox.on_commit.append(self.uplink.committed)
        return self

    def start(self) -> asyncio.Task:
        self.task = asyncio.create_task(self.uplink.run(), name="uplink")
        return self.task

    async def close(self) -> None:
        if self.uplink is not None:
            await self.uplink.stop()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
            if not self.task.done():
                self.task.cancel()
        if self.outbox._db is not None:
            await self.outbox.close()


@pytest.fixture
async def rig_factory(tmp_path):
    rigs: list[Rig] = []

    async def make(port: int, **kw) -> Rig:
        r = await Rig(tmp_path, port, **kw).open()
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        await r.close()


@pytest.fixture
def quick_subscribers(subscriber_factory):
    """subscriber_factory, but disconnecting first so closing does not wait out paho's 1 s select."""
    made = []

    def make(port, **kw):
        s = subscriber_factory(port, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.client.disconnect()


async def subscribe(factory, port, **kw):
    """Subscriber construction blocks until SUBACK: keep the event loop free meanwhile."""
    return await asyncio.to_thread(factory, port, **kw)


def data_messages(sub) -> list[tuple[str, dict]]:
    """Telemetry/event messages in arrival order."""
    with sub.lock:
        return [(t, m) for t, m, _ in sub.messages if not t.endswith("/state")]


# --------------------------------------------------------------------------- delivery


async def test_records_arrive_in_batched_envelopes_and_leave_the_outbox_after_puback(broker, quick_subscribers, rig_factory):
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port, batch_max_records=500)
    await rig.outbox.put("telemetry", [reading(i) for i in range(1200)], wait_commit=True)
    rig.start()
    await until(lambda: len(sub.seqs("telemetry")) >= 1200, what="1200 telemetry records")
    msgs = sub.of("telemetry")
    assert [m["seq"] for m in msgs] == [[1, 500], [501, 1000], [1001, 1200]]
    for m in msgs:
        assert set(m) == {"v", "site", "gateway", "epoch", "lane", "seq", "records"}
        assert m["epoch"] == rig.outbox.epoch and len(m["epoch"]) == 16
        assert (m["v"], m["site"], m["gateway"], m["lane"]) == (2, SITE, GW, "telemetry")
        assert [r["seq"] for r in m["records"]] == list(range(m["seq"][0], m["seq"][1] + 1))
    first = msgs[0]["records"][0]
    assert first == {"seq": 1, "ts": 1_700_000_000.0, "device": "soil-1", "point": "moisture", "value": 0, "unit": "%"}
    assert all(t.endswith(f"canopy/v1/{SITE}/{GW}/telemetry") for t, _ in data_messages(sub))
    # acknowledged by the broker -> deleted from SQLite
    await until(lambda: rig.outbox.pending("telemetry") == 0, what="outbox to empty")
    assert rows_on_disk(rig.path, "telemetry") == 0
    c = rig.outbox.counters["telemetry"]
    assert (c.produced, c.acknowledged, c.pending) == (1200, 1200, 0)


async def test_alarms_and_events_go_to_the_event_topic_with_their_lane(broker, quick_subscribers, rig_factory):
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port)
    rig.start()
    await until(rig.uplink.connected.is_set, what="connect")
    await rig.outbox.put("alarm", [event_body(1.0, "smoke", device="smoke-1", severity="critical")], wait_commit=True)
    await rig.outbox.put("event", [event_body(2.0, "device.status", device="soil-1", status="timeout")], wait_commit=True)
    await until(lambda: len(sub.of("event")) >= 2, what="alarm and event")
    by_lane = {m["lane"]: m for m in sub.of("event")}
    assert by_lane["alarm"]["records"] == [{"seq": 1, "ts": 1.0, "type": "smoke", "device": "smoke-1", "severity": "critical"}]
    assert by_lane["event"]["records"][0]["type"] == "device.status"
    assert by_lane["alarm"]["seq"] == [1, 1] and by_lane["event"]["seq"] == [1, 1]
    assert sub.of("telemetry") == []
    await until(lambda: rig.outbox.pending("alarm") == 0 and rig.outbox.pending("event") == 0, what="acks deleted")


async def test_records_put_while_running_are_delivered_promptly(broker, quick_subscribers, rig_factory):
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port)
    rig.start()
    await until(rig.uplink.connected.is_set, what="connect")
    for i in range(10):
        await rig.outbox.put("telemetry", [reading(i)])
        await asyncio.sleep(0.01)
    await until(lambda: len(sub.seqs("telemetry")) >= 10, what="records put while running")
    assert sorted(set(sub.seqs("telemetry"))) == list(range(1, 11))


# --------------------------------------------------------------------------- alarms first


async def test_alarm_overtakes_a_telemetry_backlog_waiting_at_start(broker, quick_subscribers, rig_factory):
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port)
    for k in range(40):
        await rig.outbox.put("telemetry", [reading(k * 500 + i) for i in range(500)])
    await rig.outbox.flush()
    await rig.outbox.put("alarm", [event_body(5.0, "fall", device="cam-1")], wait_commit=True)
    assert rig.outbox.pending("telemetry") == 20_000
    rig.start()
    await until(lambda: len(sub.seqs("telemetry")) >= 20_000 and sub.of("event"), what="backlog and alarm")
    order = [m["lane"] for _, m in data_messages(sub)]
    last_telemetry = max(i for i, lane in enumerate(order) if lane == "telemetry")
    assert order.index("alarm") < last_telemetry, "the alarm waited behind the whole telemetry backlog"
    assert order[0] == "alarm", f"with everything waiting, the alarm must be sent first (got {order[:3]})"


async def test_alarm_raised_during_a_backlog_drain_overtakes_it(broker, quick_subscribers, rig_factory):
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port, batch_max_records=10)  # 2000 messages to drain
    for k in range(40):
        await rig.outbox.put("telemetry", [reading(k * 500 + i) for i in range(500)])
    await rig.outbox.flush()
    rig.start()
    await until(lambda: len(sub.of("telemetry")) >= 1, what="the backlog drain to start", interval=0.002)
    await rig.outbox.put("alarm", [event_body(5.0, "smoke", device="smoke-1")], wait_commit=True)
    await until(lambda: len(sub.seqs("telemetry")) >= 20_000 and sub.of("event"), 20, what="backlog and alarm")
    order = [m["lane"] for _, m in data_messages(sub)]
    after = len(order) - 1 - order.index("alarm")
    assert after > 0, "the alarm arrived after the last telemetry message"
    # raised right after the drain began, it must not wait behind most of the 2000-message backlog
    assert after >= (len(order) - 1) // 2, f"only {after} of {len(order) - 1} telemetry messages came after the alarm"


async def test_a_committed_alarm_is_published_by_the_commit_itself_without_reading_it_back(broker, quick_subscribers, rig_factory):
    """Under a junk flood every loop turn costs milliseconds: the alarm must not wait for the pump to wake and
    read the row back from SQLite (uplink.committed)."""
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port)
    rig.start()
    await until(rig.uplink.online.is_set, what="online")
    reads: list[str] = []
    fetch = rig.outbox.fetch

    async def counting_fetch(lane, after, limit):
        reads.append(lane)
        return await fetch(lane, after, limit)

    rig.outbox.fetch = counting_fetch
    for n in (1, 2):
        await rig.outbox.put("alarm", [event_body(float(n), "smoke", device="smoke-1", severity="critical")], wait_commit=True)
        assert rig.uplink.published["alarm"] == n, "the alarm was not handed to the broker connection at its commit"
    await until(lambda: len(sub.of("event")) >= 2, what="both alarms")
    assert [m["seq"] for m in sub.of("event")] == [[1, 1], [2, 2]]
    assert "alarm" not in reads, "the alarm rows were read back from SQLite"
    await until(lambda: rig.outbox.pending("alarm") == 0, what="acks deleted")


async def test_alarms_committed_during_a_drain_arrive_each_once_and_in_order(broker, quick_subscribers, rig_factory):
    """The commit's fast path and the pump's page reads interleave: no alarm twice, none skipped, none overtaken."""
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port, batch_max_records=10)
    for k in range(10):
        await rig.outbox.put("telemetry", [reading(k * 500 + i) for i in range(500)])
    await rig.outbox.put("alarm", [event_body(0.5, "smoke", device="smoke-0")], wait_commit=True)  # waits for the pump
    rig.start()

    async def raise_alarms(first: int) -> None:
        for n in range(first, first + 30):
            await rig.outbox.put("alarm", [event_body(float(n), "smoke", device=f"smoke-{n}")], wait_commit=n % 3 == 0)
            await asyncio.sleep(0.001 * (n % 4))

    await until(lambda: len(sub.of("telemetry")) >= 1, what="the drain to start", interval=0.002)
    await asyncio.gather(raise_alarms(1), raise_alarms(101))
    await until(lambda: rig.outbox.pending("alarm") == 0 and len(sub.seqs("telemetry")) >= 5000, 20, what="everything")
    alarm_seqs = [r["seq"] for _, m in data_messages(sub) if m["lane"] == "alarm" for r in m["records"]]
    assert sorted(alarm_seqs) == list(range(1, 62)), "an alarm was lost or sent twice"
    assert alarm_seqs == sorted(alarm_seqs), f"alarms out of order: {alarm_seqs}"


# --------------------------------------------------------------------------- state


async def test_retained_state_is_online_after_connect(broker, quick_subscribers, rig_factory):
    rig = await rig_factory(broker.port)
    rig.start()
    await until(rig.uplink.connected.is_set, what="connect")
    await until(lambda: rig.uplink.connects == 1, what="connect counted")
    # a subscriber arriving later gets the retained state
    late = await subscribe(quick_subscribers, broker.port)
    await until(lambda: late.of("state"), what="retained state")
    with late.lock:
        topic, state, retained = next(m for m in late.messages if m[0].endswith("/state"))
    assert topic == f"canopy/v1/{SITE}/{GW}/state"
    assert retained
    assert state["status"] == "online" and state["site"] == SITE and state["gateway"] == GW and state["v"] == 2
    assert state["devices"] == {"soil-1": {"status": "ok"}}, "the state() callable's health is published"


async def test_stop_publishes_retained_offline_with_reason_shutdown(broker, quick_subscribers, rig_factory):
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port)
    task = rig.start()
    await until(lambda: (s := sub.latest_state()) and s["status"] == "online", what="online")
    await asyncio.wait_for(rig.uplink.stop(), 5)
    await asyncio.wait_for(task, 5)  # run() returns after stop()
    state = await until(lambda: (s := sub.latest_state()) and s["status"] == "offline" and s, what="offline")
    assert state["reason"] == "shutdown" and state["boot"] == rig.outbox.boot
    late = await subscribe(quick_subscribers, broker.port)
    retained = await until(late.latest_state, what="retained state")
    assert retained["status"] == "offline" and retained["reason"] == "shutdown"


async def test_lost_connection_publishes_the_last_will_then_reconnects(broker, quick_subscribers, rig_factory):
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port)
    rig.start()
    await until(lambda: (s := sub.latest_state()) and s["status"] == "online", what="online")
    # cut the TCP connection under the uplink, as a dying 4G link would
    rig.uplink.client.paho.socket().shutdown(socket.SHUT_RDWR)
    await until(lambda: any(s["status"] == "offline" for s in sub.of("state")), what="last will")
    will = next(s for s in sub.of("state") if s["status"] == "offline")
    assert will["reason"] == "connection lost"
    await until(lambda: rig.uplink.connects == 2 and sub.latest_state()["status"] == "online", what="reconnect")
    await rig.outbox.put("alarm", [event_body(1.0, "gas")], wait_commit=True)
    await until(lambda: sub.records("alarm"), what="alarm after reconnect")


# --------------------------------------------------------------------------- broker restart


async def test_reconnects_after_broker_restart_and_delivers_what_was_put_meanwhile(broker, quick_subscribers, rig_factory):
    sub = await subscribe(quick_subscribers, broker.port, client_id="restart-sub")
    rig = await rig_factory(broker.port)
    rig.start()
    await rig.outbox.put("telemetry", [reading(i) for i in range(50)], wait_commit=True)
    await until(lambda: len(sub.seqs("telemetry")) >= 50, what="records before the outage")
    await asyncio.to_thread(broker.stop)
    await until(lambda: not rig.uplink.connected.is_set(), what="uplink to notice the outage")
    for k in range(5):
        await rig.outbox.put("telemetry", [reading(50 + k * 10 + i) for i in range(10)])
    await rig.outbox.put("alarm", [event_body(3.0, "water_running", device="meter-1")], wait_commit=True)
    await rig.outbox.flush()
    assert rig.outbox.pending("telemetry") == 50 and rig.outbox.pending("alarm") == 1
    await until(lambda: "refused" in (rig.uplink.last_error or ""), what="a failed reconnect attempt")
    assert rig.task is not None and not rig.task.done(), "the uplink gave up while the broker was down"
    await asyncio.to_thread(broker.start)
    await until(lambda: rig.uplink.connects >= 2, 15, what="reconnect")
    await until(lambda: len(set(sub.seqs("telemetry"))) >= 100 and sub.records("alarm"), 15, what="records put during the outage")
    assert sorted(set(sub.seqs("telemetry"))) == list(range(1, 101)), "a record was lost over the outage"
    assert [r["type"] for r in sub.records("alarm")] == ["water_running"]
    await until(lambda: rig.outbox.pending("telemetry") == 0 and rig.outbox.pending("alarm") == 0, what="outbox to empty")


# --------------------------------------------------------------------------- inbound messages


async def test_subscribed_handler_receives_messages_and_a_raising_handler_is_contained(broker, quick_subscribers, rig_factory):
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port)
    bad_calls: list[bytes] = []
    good_calls: list[tuple[str, bytes]] = []

    def bad(topic: str, payload: bytes) -> None:
        bad_calls.append(payload)
        raise ValueError("malformed command")

    rig.uplink.subscribe(TOPICS.alert_ack, bad)
    rig.uplink.subscribe(TOPICS.cmd, lambda t, p: good_calls.append((t, p)))
    rig.start()
    await until(rig.uplink.connected.is_set, what="connect")
    # the subscription is made right after connect: publish until it is in place
    deadline = time.monotonic() + 10
    while not good_calls:
        sub.client.publish(TOPICS.cmd, b'{"id":"probe"}', qos=1)
        await asyncio.sleep(0.1)
        assert time.monotonic() < deadline, "the cmd handler never received anything"
    assert good_calls[0] == (TOPICS.cmd, b'{"id":"probe"}')

    sub.client.publish(TOPICS.alert_ack, b'{"alert":"a-1"}', qos=1)
    await until(lambda: bad_calls, what="the raising handler to be called")
    good_calls.clear()
    sub.client.publish(TOPICS.cmd, orjson.dumps({"id": "c-2"}), qos=1)
    await until(lambda: good_calls, what="a message after the raising handler")
    assert good_calls == [(TOPICS.cmd, b'{"id":"c-2"}')]
    # the uplink is still connected and still delivering
    assert rig.uplink.connected.is_set() and rig.uplink.connects == 1
    await rig.outbox.put("alarm", [event_body(1.0, "fall")], wait_commit=True)
    await until(lambda: sub.records("alarm"), what="delivery after the handler raised")


async def test_event_records_can_name_their_own_topic(broker, quick_subscribers, rig_factory):
    """Command results and escalations go to their own topics, still through the outbox."""
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port)
    status, result = b'{"ts":1.0,"type":"device.status"}', b'{"ts":1.0,"type":"cmd.result"}'
    await rig.outbox.put("event", [status])
    await rig.outbox.put("event", [result, result], topic="cmd/result")  # the outbox's topic column
    await rig.outbox.put("event", [status], wait_commit=True)
    rig.start()
    await until(lambda: len(sub.records("event")) >= 4, what="routed events")
    await until(lambda: sum(len(m["records"]) for m in sub.of("cmd/result")) == 2, what="cmd results")
    assert [r["seq"] for m in sub.of("cmd/result") for r in m["records"]] == [2, 3]
    assert [r["seq"] for m in sub.of("event") for r in m["records"]] == [1, 4]
    # the topic travels beside the body, not in it: records are published exactly as put
    assert [r for m in sub.of("cmd/result") for r in m["records"]] == [{"seq": 2, "ts": 1.0, "type": "cmd.result"},
                                                                       {"seq": 3, "ts": 1.0, "type": "cmd.result"}]
    assert all(m["lane"] == "event" for m in sub.of("cmd/result"))


async def test_alarm_topics_cut_batches_and_telemetry_cannot_name_a_topic(broker, quick_subscribers, rig_factory):
    """Alerts go to their group's topic; a message never mixes topics, seqs stay in order across them."""
    sub = await subscribe(quick_subscribers, broker.port)
    rig = await rig_factory(broker.port)
    plan = [("alert/property-office", 2), (None, 1), ("alert/volunteers", 1), ("alert/property-office", 1)]
    for suffix, n in plan:
        await rig.outbox.put("alarm", [event_body(1.0, "alert.raised", n=i) for i in range(n)], topic=suffix)
    await rig.outbox.flush()
    with pytest.raises(ValueError, match="telemetry"):
        await rig.outbox.put("telemetry", [reading(0)], topic="alert/volunteers")
    rig.start()
    await until(lambda: len(sub.records("alarm")) >= 5, what="routed alarms")
    got = [(t.rsplit(f"{GW}/", 1)[1], m["seq"]) for t, m in data_messages(sub)]
    assert got == [("alert/property-office", [1, 2]), ("event", [3, 3]), ("alert/volunteers", [4, 4]),
                   ("alert/property-office", [5, 5])]
    await until(lambda: rig.outbox.pending("alarm") == 0, what="alarms acknowledged")
