"""`canopy alerts` and `canopy ack`, called as functions (the lead registers them in gateway/cli.py)."""

from __future__ import annotations

import argparse
import threading

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.protocol import envelope
from gateway.cli.alerts import add_parsers, cmd_ack, cmd_alerts
from tests.gateway.alerts.support import DESK, GROUPS, Harness, ack, chain, load_site, write_site

SMOKE = {"id": "smoke-alarm", "type": "state", "devices": ["smoke-shed", "smoke-hall"], "point": "alarm", "to": True,
         "severity": "critical", "class": "fire"}
RULES = {"groups": GROUPS, "classes": {"fire": chain(0, 120)}, "rules": [SMOKE]}


def key_file(tmp_path, key=DESK, name: str = "duty-desk.key", mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_bytes(envelope.private_pem(key))
    path.chmod(mode)
    return str(path)


def parse(*argv: str):
    parser = argparse.ArgumentParser(prog="canopy")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


async def raise_two(tmp_path) -> Harness:
    h = Harness(load_site(tmp_path, RULES), state_dir=str(tmp_path))
    for dev in ("smoke-shed", "smoke-hall"):
        h.feed(dev, "alarm", False)
        h.feed(dev, "alarm", True)
    await h.settle()
    h.feed("smoke-hall", "alarm", False)
    await h.settle()
    return h


async def test_alerts_lists_open_alerts_from_the_local_state_file(tmp_path, capsys):
    h = await raise_two(tmp_path)
    shed = h.of("alert.raised", device="smoke-shed")[0]["alert"]
    hall = h.of("alert.raised", device="smoke-hall")[0]["alert"]
    cfg = tmp_path / "site.yaml"
    assert cmd_alerts(parse("alerts", "-c", str(cfg))) == 0
    out = capsys.readouterr().out
    assert "ID" in out and shed in out and hall not in out
    assert "critical" in out and "smoke-shed alarm is now on" in out and "3/e-bike-shed" in out
    assert cmd_alerts(parse("alerts", "-c", str(cfg), "--all", "--json")) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert {(a["id"], a["status"]) for a in listed} == {(shed, "raised"), (hall, "resolved")}


async def test_alerts_follow_prints_changes_of_the_local_file(tmp_path, capsys):
    h = await raise_two(tmp_path)
    shed = h.of("alert.raised", device="smoke-shed")[0]["alert"]
    args = parse("alerts", "-c", str(tmp_path / "site.yaml"), "--follow", "--for", "1.5")
    t = threading.Thread(target=cmd_alerts, args=(args,))
    t.start()
    import asyncio

    await asyncio.sleep(0.5)
    ack(h, shed, by="wang")
    await h.settle()
    await asyncio.to_thread(t.join, 5)
    out = capsys.readouterr().out
    assert f"{shed}" in out and "acked by wang" in out


def test_alerts_without_state_or_broker_says_so(tmp_path, capsys, broker):
    cfg = write_site(tmp_path, RULES, broker={"host": "127.0.0.1", "port": broker.port})
    assert cmd_alerts(parse("alerts", "-c", str(cfg), "--timeout", "0.5")) == 1
    err = capsys.readouterr().err
    assert "no local alert state" in err and "no retained state" in err


def test_alerts_from_the_broker_reads_the_retained_state(tmp_path, capsys, broker):
    cfg = write_site(tmp_path, RULES, broker={"host": "127.0.0.1", "port": broker.port})
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-gw")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    state = {"v": 1, "site": "sunny-court", "gateway": "gw-3", "status": "online",
             "alerts": {"open": [{"id": "7-beef", "rule": "smoke-alarm", "severity": "critical", "status": "delivered",
                                  "raised_at": 1.7e9, "location": {"building": "3"}, "message": "[CRITICAL] smoke"}]}}
    pub.publish("canopy/v1/sunny-court/gw-3/state", orjson.dumps(state), qos=1, retain=True).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    assert cmd_alerts(parse("alerts", "-c", str(cfg), "--broker")) == 0
    out = capsys.readouterr().out
    assert "7-beef" in out and "delivered" in out and "[CRITICAL] smoke" in out


class FakeGateway:
    """Answers acks on the broker the way the engine does."""

    def __init__(self, port: int, known: set[str]):
        self.known = known
        self.acks: list[dict] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-gateway")
        ready = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("canopy/v1/sunny-court/gw-3/alert/ack", qos=1)
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert ready.wait(5)

    def _on_message(self, c, u, msg):
        env = orjson.loads(msg.payload)
        self.acks.append(env)
        by = env.get("on_behalf_of") or env["issuer"]
        if env["target"] in self.known:
            rec = {"seq": 1, "type": "alert.resolved" if env["action"] == "resolve" else "alert.acknowledged",
                   "alert": env["target"], "by": by, "ack": env["id"]}
        else:
            rec = {"seq": 1, "type": "alert.ack_rejected", "alert": env["target"], "by": by, "reason": "unknown alert",
                   "detail": "no alert '9-none' on this gateway", "id": env["id"]}
        env = {"v": 1, "site": "sunny-court", "gateway": "gw-3", "lane": "event", "seq": [1, 1], "records": [rec]}
        c.publish("canopy/v1/sunny-court/gw-3/event", orjson.dumps(env), qos=1)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_ack_publishes_and_waits_for_the_gateway(tmp_path, capsys, broker):
    cfg = write_site(tmp_path, RULES, broker={"host": "127.0.0.1", "port": broker.port})
    key = key_file(tmp_path)
    gw = FakeGateway(broker.port, {"3-abcd"})
    try:
        assert cmd_ack(parse("ack", "3-abcd", "--key", key, "--as", "wang", "--note", "on my way", "-c", str(cfg))) == 0
        assert "alert 3-abcd acknowledged by wang" in capsys.readouterr().out
        sent = gw.acks[0]
        assert {k: sent[k] for k in ("v", "kind", "issuer", "on_behalf_of", "site", "gateway", "target", "action", "params")} == {
            "v": 2, "kind": "ack", "issuer": "duty-desk", "on_behalf_of": "wang", "site": "sunny-court", "gateway": "gw-3",
            "target": "3-abcd", "action": "acknowledge", "params": {"note": "on my way"}}
        assert envelope.verify(envelope.parse(orjson.dumps(sent), kind="ack"), DESK.public_key())
        assert cmd_ack(parse("ack", "3-abcd", "--resolve", "--key", key, "-c", str(cfg))) == 0
        assert "resolved by duty-desk" in capsys.readouterr().out
        assert "on_behalf_of" not in gw.acks[1] and gw.acks[1]["action"] == "resolve"
        assert cmd_ack(parse("ack", "9-none", "--key", key, "--by", "wang", "-c", str(cfg))) == 1
        assert "refused the ack for 9-none: unknown alert (no alert '9-none' on this gateway)" in capsys.readouterr().err
        assert gw.acks[2]["on_behalf_of"] == "wang"  # --by is --as
    finally:
        gw.close()


def test_ack_without_a_gateway_listening_is_not_confirmed(tmp_path, capsys, broker):
    cfg = write_site(tmp_path, RULES, broker={"host": "127.0.0.1", "port": broker.port})
    key = key_file(tmp_path)
    assert cmd_ack(parse("ack", "3-abcd", "--key", key, "--as", "wang", "-c", str(cfg), "--timeout", "0.5")) == 1
    assert "did not confirm" in capsys.readouterr().err
    assert cmd_ack(parse("ack", "3-abcd", "--key", key, "--as", "wang", "-c", str(cfg), "--no-wait")) == 0


def test_ack_with_bad_config_or_unreachable_broker(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: x\n")
    key = key_file(tmp_path)
    assert cmd_ack(parse("ack", "1-a", "--key", key, "--by", "li", "-c", str(bad))) == 2
    assert "configuration error" in capsys.readouterr().err
    from tests.support import free_port

    cfg = write_site(tmp_path, RULES, broker={"host": "127.0.0.1", "port": free_port()})
    assert cmd_ack(parse("ack", "1-a", "--key", key, "--by", "li", "-c", str(cfg), "--timeout", "1")) == 1
    assert "cannot connect" in capsys.readouterr().err
    assert cmd_ack(parse("ack", "1-a", "--key", key, "--by", " ", "-c", str(cfg))) == 2
    assert "--as needs a name" in capsys.readouterr().err
    open_key = key_file(tmp_path, name="shared.key", mode=0o644)
    assert cmd_ack(parse("ack", "1-a", "--key", open_key, "-c", str(cfg))) == 2
    assert "readable by others" in capsys.readouterr().err
    assert cmd_ack(parse("ack", "1-a", "--key", str(tmp_path / "none.key"), "-c", str(cfg))) == 2
    assert "No such file" in capsys.readouterr().err


def test_alerts_follow_from_the_broker_prints_alert_records_of_every_topic(tmp_path, capsys, broker):
    cfg = write_site(tmp_path, RULES, broker={"host": "127.0.0.1", "port": broker.port})
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-gw2")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    pub.publish("canopy/v1/sunny-court/gw-3/state", orjson.dumps({"status": "online", "alerts": {"open": []}}),
                qos=1, retain=True).wait_for_publish(5)
    args = parse("alerts", "-c", str(cfg), "--broker", "--follow", "--for", "1.5")
    t = threading.Thread(target=cmd_alerts, args=(args,))
    t.start()
    import time

    time.sleep(0.7)
    rec = {"seq": 4, "ts": 1.7e9, "type": "alert.escalated", "alert": "4-abcd", "severity": "critical",
           "group": "volunteers", "recipients": ["vol-wang"], "message": "[CRITICAL] smoke"}
    env = {"v": 1, "site": "sunny-court", "gateway": "gw-3", "lane": "alarm", "seq": [4, 4], "records": [rec]}
    pub.publish("canopy/v1/sunny-court/gw-3/alert/volunteers", orjson.dumps(env), qos=1).wait_for_publish(5)
    t.join(5)
    pub.loop_stop()
    pub.disconnect()
    out = capsys.readouterr().out
    assert "no open alerts" in out
    assert "4-abcd" in out and "escalated" in out and "volunteers" in out
