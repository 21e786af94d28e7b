"""A gateway written with core.protocol only: subscribes, says "online" after SUBACK, checks envelopes, answers.

It does what docs/protocol.md asks of a gateway and nothing more: subscriptions to
``…/cmd``, ``…/alert/ack`` and ``…/replay``; the retained online ``…/state`` (with
``capabilities``) only after every SUBACK; each envelope parsed with the bounded parser,
its signature verified with the public keys it was configured with, site, gateway and
time checked, a repeated id ignored (``replayed``, as the real gateway does); answers are
event-lane batches on ``…/cmd/result`` (``cmd.result``, ``replay.result``) and ``…/event``
(``alert.acknowledged`` / ``alert.ack_rejected``).  ``answer`` decides what a command gets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.protocol import CONTROLS, REPLAY, SIGNED_ACKS, envelope
from core.protocol.topics import Topics

EPOCH = "fedcba9876543210"


def executed(env: envelope.Envelope) -> dict:
    return {"status": "executed"}


class FakeGateway:
    def __init__(self, port: int, site: str, gateway: str, keys: dict[str, str], *,
                 answer: Callable[[envelope.Envelope], dict | None] = executed, drop: int = 0):
        self.port, self.site, self.gateway = port, site, gateway
        self.keys = {issuer: envelope.load_public_key(text) for issuer, text in keys.items()}
        self.answer = answer
        self.drop = drop  # messages lost before they reach the gateway's code (a broker that dropped them)
        self.dropped: list[bytes] = []
        self.topics = Topics(site, gateway)
        self.received: list[envelope.Envelope] = []  # every authentic, fresh envelope
        self.refused: list[tuple[str, str]] = []  # (reason, detail)
        self.seen: set[str] = set()
        self.seq = 0
        self.client: mqtt.Client | None = None
        self.lock = threading.Lock()

    # -- connection ---------------------------------------------------------------------------
    def start(self) -> "FakeGateway":
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-{self.gateway}-{time.monotonic_ns()}",
                        protocol=mqtt.MQTTv5)
        c.will_set(self.topics.state, self._state("offline", reason="connection lost"), qos=1, retain=True)
        c.on_message = self._on_message
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        self.client = c
        subs = [(self.topics.cmd, 1), (self.topics.alert_ack, 1), (self.topics.replay, 1)]
        done = threading.Event()
        c.on_subscribe = lambda *a: done.set()
        c.subscribe(subs)
        assert done.wait(10), "no SUBACK"
        c.publish(self.topics.state, self._state("online"), qos=1, retain=True).wait_for_publish(10)
        return self

    def stop(self, reason: str = "shutdown") -> None:
        """A clean stop: retained offline state, then disconnect."""
        if self.client is None:
            return
        self.client.publish(self.topics.state, self._state("offline", reason=reason), qos=1, retain=True).wait_for_publish(10)
        self.client.disconnect()
        self.client.loop_stop()
        self.client = None

    def _state(self, status: str, **extra) -> bytes:
        doc = {"v": 2, "site": self.site, "gateway": self.gateway, "status": status, "boot": 1, **extra}
        if status == "online":
            doc.update(ts=time.time(), version="0.2.0", protocol=2, capabilities=[CONTROLS, SIGNED_ACKS, REPLAY])
        return orjson.dumps(doc)

    # -- answering ----------------------------------------------------------------------------
    def _on_message(self, client, userdata, msg) -> None:
        if len(self.dropped) < self.drop:
            self.dropped.append(msg.payload)
            return
        kind = {"cmd": "command", "alert/ack": "ack", "replay": "replay"}[msg.topic[len(self.topics.base) + 1:]]
        try:
            env = envelope.parse(msg.payload, kind=kind)
        except envelope.Malformed as exc:
            self.refused.append((exc.reason, str(exc)))
            return
        key = self.keys.get(env.issuer)
        if key is None or not envelope.verify(env, key):
            self.refused.append(("bad_signature" if key else "unauthorised_issuer", env.issuer))
            return
        now = time.time()
        if (env.site, env.gateway) != (self.site, self.gateway) or now > env.expires_at or env.expires_at - env.issued_at > 3600:
            self.refused.append(("expired", env.id))
            return
        if env.id in self.seen:
            self.refused.append(("replayed", env.id))
            return
        self.seen.add(env.id)
        self.received.append(env)
        if kind == "ack":
            self._event("event", {"type": "alert.acknowledged", "alert": env.target, "by": env.acting_for,
                                  "issuer": env.issuer, "ack": env.id, "status": "acknowledged", "groups": ["office"],
                                  "note": env.params.get("note")})
        elif kind == "replay":
            self._event("cmd/result", {"type": "replay.result", "id": env.id, "status": "done", "issuer": env.issuer})
        else:
            result = self.answer(env)
            if result is not None:
                self._event("cmd/result", {"type": "cmd.result", "id": env.id, "issuer": env.issuer, "action": env.action,
                                           "target": env.target, "on_behalf_of": env.on_behalf_of, **result})

    def _event(self, leaf: str, body: dict) -> None:
        with self.lock:
            self.seq += 1
            rec = {"seq": self.seq, "ts": round(time.time(), 3), **body}
            batch = {"v": 2, "site": self.site, "gateway": self.gateway, "epoch": EPOCH, "lane": "event",
                     "seq": [self.seq, self.seq], "records": [rec]}
        self.client.publish(f"{self.topics.base}/{leaf}", orjson.dumps(batch), qos=1)
