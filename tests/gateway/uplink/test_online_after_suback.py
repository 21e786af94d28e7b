"""Protocol v2 connection rules with a real mosquitto: "online" only after every SUBACK, capabilities, sessions.

docs/protocol.md: *Connection*, *"online" only after SUBACK*, *State*, *Capabilities*.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import orjson
import pytest

from core.mqtt import BrokerEndpoint, MqttClient, MqttCodeError
from core.protocol.schemas import validate
from core.protocol.topics import Topics
from core.records import event_body
from gateway.config.broker import BrokerConfig
from gateway.outbox.store import Outbox
from gateway.uplink.uplink import Uplink
from tests.support import until

TOPICS = Topics("s", "g")


def health(outbox: Outbox) -> dict:
    """A health snapshot shaped like runtime.Gateway.state(), so …/state validates against its schema."""
    return {"version": "0.2.0", "boot": outbox.boot, "ts": 1795348922.688,
            "devices": {"soil-1": {"bus": "field-bus", "status": "ok", "polls": 1, "failures": 0, "last_ok": 1795348922.6}},
            "outbox": {lane: c.as_dict() for lane, c in outbox.counters.items()}
            | {"commits": outbox.commits, "commit_errors": 0, "epoch": outbox.epoch, "degraded": False, "last_error": None},
            "uplink": {"connects": 0, "connected": False, "published": {}, "last_error": None}, "buses": {}}


class Watcher:
    """Every message under canopy/v1/s/g/#, raw, with the loop time it arrived."""

    def __init__(self, port: int):
        self.messages: list[tuple[float, str, bytes]] = []
        self.client = MqttClient(BrokerEndpoint("127.0.0.1", port), on_message=self._on_message)
        self.on_state = None

    def _on_message(self, msg) -> None:
        self.messages.append((asyncio.get_running_loop().time(), msg.topic, msg.payload))
        if msg.topic == TOPICS.state and self.on_state is not None:
            self.on_state(orjson.loads(msg.payload))

    async def start(self) -> Watcher:
        await self.client.connect()
        await self.client.subscribe(f"{TOPICS.base}/#")
        return self

    def states(self) -> list[dict]:
        return [orjson.loads(p) for _, t, p in self.messages if t == TOPICS.state]


@pytest.fixture
async def watchers(broker):
    made: list[Watcher] = []

    async def make() -> Watcher:
        w = await Watcher(broker.port).start()
        made.append(w)
        return w

    yield make
    for w in made:
        await w.client.disconnect()


@pytest.fixture
async def uplinks(tmp_path, broker):
    made: list[tuple[Uplink, asyncio.Task | None]] = []

    async def make(protocol: str = "5", *, client_id: str | None = None, start: bool = True, **subscriptions) -> Uplink:
        outbox = Outbox(str(tmp_path / f"outbox-{len(made)}.sqlite"), commit_interval=0.05)
        await outbox.open()
        uplink = Uplink(BrokerConfig(host="127.0.0.1", port=broker.port, protocol=protocol, client_id=client_id,
                                     backoff_initial=0.05, backoff_max=0.2), TOPICS, outbox, state=lambda: health(outbox))
        outbox.on_commit.append(uplink.committed)
        for leaf, handler in subscriptions.items():
            uplink.subscribe(f"{TOPICS.base}/{leaf.replace('_', '/')}", handler)
        made.append((uplink, asyncio.create_task(uplink.run()) if start else None))
        return uplink

    yield make
    for uplink, task in made:
        await uplink.stop()
        if task is not None:
            task.cancel()
        await uplink.outbox.close()


def cut(uplink: Uplink) -> None:
    """Cut the TCP connection under the uplink, as a dying 4G link would."""
    uplink.client.paho.socket().shutdown(socket.SHUT_RDWR)


async def test_online_is_published_only_after_the_suback_of_every_subscription(uplinks, watchers, monkeypatch):
    watcher = await watchers()
    uplink = await uplinks(start=False, cmd=lambda t, p: None, alert_ack=lambda t, p: None)
    subacks: list[float] = []
    real = uplink.client.subscribe

    async def slow_suback(*topics, **kw):  # a broker far away: each SUBACK takes 0.3 s
        codes = await real(*topics, **kw)
        await asyncio.sleep(0.3)
        subacks.append(asyncio.get_running_loop().time())
        return codes

    monkeypatch.setattr(uplink.client, "subscribe", slow_suback)
    task = asyncio.create_task(uplink.run())
    try:
        await uplink.outbox.put("alarm", [event_body(1.0, "smoke")], wait_commit=True)
        online = await until(lambda: [t for t, topic, p in watcher.messages if topic == TOPICS.state], what="online")
        assert len(subacks) == 2 and online[0] >= max(subacks), "online went out before every SUBACK"
        alarm_at = next(t for t, topic, p in watcher.messages if topic == TOPICS.event)
        assert alarm_at < min(subacks), "records do not wait for the subscriptions"
    finally:
        await uplink.stop()
        task.cancel()


async def test_state_v2_names_the_protocol_and_what_was_granted_and_validates(uplinks, watchers):
    watcher = await watchers()
    uplink = await uplinks(cmd=lambda t, p: None, alert_ack=lambda t, p: None)
    state = (await until(watcher.states, what="online"))[0]
    assert (state["v"], state["protocol"], state["status"]) == (2, 2, "online")
    assert state["capabilities"] == ["controls", "signed_acks"]
    assert state["uplink"]["refused_too_large"] == 0 and state["uplink"]["connects"] == 1
    assert validate(TOPICS.state, orjson.dumps(state)) == []
    uplink.retain(TOPICS.meta, b'{"v":2}')  # the runtime's …/meta: retained, and announced
    uplink.publish_state()
    state = await until(lambda: (s := watcher.states()[-1])["capabilities"] != ["controls", "signed_acks"] and s,
                        what="state with meta")
    assert state["capabilities"] == ["controls", "meta", "signed_acks"]
    await uplink.outbox.put("alarm", [event_body(1.0, "store.corrupt", severity="critical", moved_to="x", detail="y")],
                            wait_commit=True)
    batch = await until(lambda: [p for _, t, p in watcher.messages if t == TOPICS.event], what="a batch")
    assert orjson.loads(batch[0])["v"] == 2 and validate(TOPICS.event, batch[0]) == []
    assert [p for _, t, p in watcher.messages if t == TOPICS.meta] == [b'{"v":2}']
    await uplink.stop()
    offline = watcher.states()[-1]
    assert offline == {"v": 2, "site": "s", "gateway": "g", "status": "offline", "reason": "shutdown", "boot": 1}
    assert validate(TOPICS.state, orjson.dumps(offline)) == []


async def test_a_refused_subscription_is_logged_its_capability_left_out_and_online_still_follows(uplinks, watchers,
                                                                                                  monkeypatch, caplog):
    # mosquitto 2.0.11 grants every subscription whatever its acl_file says (it filters on delivery),
    # so the broker's refusal (SUBACK 0x87) is played here.
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    watcher = await watchers()
    uplink = await uplinks(start=False, cmd=lambda t, p: None, replay=lambda t, p: None)
    real = uplink.client.subscribe

    async def acl(*topics, **kw):
        if topics == (TOPICS.replay,):
            raise MqttCodeError(f"the broker refused the subscription to {TOPICS.replay}",
                                ReasonCode(PacketTypes.SUBACK, "Not authorized"))
        return await real(*topics, **kw)

    monkeypatch.setattr(uplink.client, "subscribe", acl)
    task = asyncio.create_task(uplink.run())
    try:
        with caplog.at_level(logging.WARNING, logger="canopy.uplink"):
            state = (await until(watcher.states, what="online"))[0]
        assert state["status"] == "online" and state["capabilities"] == ["controls"]
        assert f"the broker refused the subscription to {TOPICS.replay} (Not authorized): 'replay' is not announced" \
            in caplog.text
    finally:
        await uplink.stop()
        task.cancel()


async def test_no_suback_in_time_means_no_online_and_a_new_connection(uplinks, watchers, monkeypatch, caplog):
    watcher = await watchers()
    uplink = await uplinks(start=False, cmd=lambda t, p: None)
    uplink.broker = uplink.broker.model_copy(update={"connect_timeout": 0.3})
    real = uplink.client.subscribe
    calls: list[int] = []

    async def lost_suback(*topics, **kw):  # the first connection's SUBACK never comes
        calls.append(uplink.connects)
        if uplink.connects == 1:
            await asyncio.Event().wait()
        return await real(*topics, **kw)

    monkeypatch.setattr(uplink.client, "subscribe", lost_suback)
    task = asyncio.create_task(uplink.run())
    try:
        with caplog.at_level(logging.WARNING, logger="canopy.uplink"):
            await until(lambda: uplink.online.is_set() and uplink.connects == 2, what="online on the second connection")
        assert "connection lost: no SUBACK within 0.3 s" in caplog.text
        await until(watcher.states, what="the state at the watcher")  # it may still be on its way to the watcher
        assert [s["uplink"]["connects"] for s in watcher.states()] == [2], "online was said on the first connection"
    finally:
        await uplink.stop()
        task.cancel()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_command_sent_the_instant_online_is_seen_arrives_across_reconnects(uplinks, watchers, protocol):
    received: list[bytes] = []
    uplink = await uplinks(protocol, cmd=lambda t, p: received.append(p))
    watcher = await watchers()
    sent: list[bytes] = []

    def on_state(state: dict) -> None:
        if state["status"] == "online" and state["uplink"]["connects"] > len(sent):
            sent.append(b"%d" % state["uplink"]["connects"])
            watcher.client.publish_nowait(TOPICS.cmd, sent[-1])  # the instant it is seen

    watcher.on_state = on_state
    rounds = 10
    for k in range(1, rounds + 1):
        await until(lambda: len(set(received)) >= k, what=f"command {k}")  # redeliveries (QoS 1) count once
        if k < rounds:
            cut(uplink)
            await until(lambda: uplink.connects == k + 1, what=f"reconnect {k}")
    # QoS 1: a cut between delivery and PUBACK makes the broker deliver a command again on the
    # next connect (the intake drops it by its envelope id); what matters is that none is missing
    assert list(dict.fromkeys(bytes(p) for p in received)) == [b"%d" % k for k in range(1, rounds + 1)]


async def test_mqtt_5_session_keeps_a_command_sent_while_the_gateway_was_away(uplinks, watchers):
    first: list[bytes] = []
    gone = await uplinks("5", client_id="canopy-s-g", cmd=lambda t, p: first.append(p))
    await until(gone.online.is_set, what="online")
    await gone.stop()  # a clean stop: the session stays on the broker for SESSION_EXPIRY
    watcher = await watchers()
    await watcher.client.publish(TOPICS.cmd, b"while-away", qos=1)
    later: list[bytes] = []
    back = await uplinks("5", client_id="canopy-s-g", cmd=lambda t, p: later.append(p))
    await until(lambda: later, what="the queued command")
    assert later == [b"while-away"] and first == []
    assert back.client.session_present


def test_protocol_is_selectable_per_broker_and_defaults_to_5():
    assert BrokerConfig(host="h").protocol == "5"
    assert BrokerConfig(host="h", protocol=5).protocol == "5"  # YAML reads `protocol: 5` as a number
    assert BrokerConfig(host="h", protocol="3.1.1").protocol == "3.1.1"
    with pytest.raises(ValueError, match="'5' or '3.1.1'"):
        BrokerConfig(host="h", protocol="4")
