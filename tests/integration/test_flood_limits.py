"""100 messages of 10 MB on …/cmd and …/alert/ack, through a mosquitto with no size limit (issue 12, acceptance).

The real daemon (``canopy run``), the community simulator and a mosquitto without
``message_size_limit``.  A separate process writes the 10 MB messages to the broker
(raw MQTT 3.1.1 QoS 0 PUBLISH packets, alternating the two topics), so nothing in
this process holds them.  The daemon's RSS is read from /proc/PID/status.

MQTT 5 (the default): the daemon announces its Maximum Packet Size, so the broker
drops them for it.  MQTT 3.1.1 has no such announcement: the broker sends them,
and the receive guard refuses each from its fixed header, having read at most one
64 KiB chunk of it, then the uplink reconnects (with a clean session, so what the
broker meant for the closed connection is dropped there: a few of the 100 reach
the daemon, one per connection).  Either way the daemon
stays up, its RSS grows by at most 10 MB (and its peak RSS too: it never held a
whole one), and a valid signed command sent afterwards is executed.
"""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from core.protocol import envelope
from core.protocol.topics import Topics
from tests.support import PROFILES, wait_until

TOPICS = Topics("sunny-court", "gw-3")
TEN_MB = 10 * 1024 * 1024
MESSAGES = 100
MAX_GROWTH = 10 * 1024 * 1024

# Writes MESSAGES PUBLISH packets of TEN_MB to the broker as fast as it reads them (QoS 0, MQTT 3.1.1).
PUBLISHER = """
import socket, struct, sys
port, n, size, topics = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def varint(v):
    out = bytearray()
    while True:
        v, d = v >> 7, v & 0x7F
        out.append(d | (0x80 if v else 0))
        if not v:
            return bytes(out)
def packet(kind, body):
    return bytes([kind]) + varint(len(body)) + body
def utf8(t):
    return struct.pack("!H", len(t)) + t.encode()
payload = b"{" + b" " * (size - 2) + b"}"
packets = [packet(0x30, utf8(t) + payload) for t in topics]
s = socket.create_connection(("127.0.0.1", port))
s.sendall(packet(0x10, utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + utf8("big-publisher")))
assert s.recv(4)[:1] == b"\\x20", "no CONNACK"
for i in range(n):
    s.sendall(packets[i % len(packets)])
s.sendall(b"\\xe0\\x00")
s.close()
"""


def write_site(tmp, sim_port: int, broker_port: int, protocol: str, duty_key) -> str:
    loc = {"building": "3"}
    site = {
        "site": TOPICS.site, "gateway": TOPICS.gateway, "profiles_dir": str(PROFILES),
        "store": {"path": str(tmp / "outbox.sqlite"), "commit_interval": 0.2},
        "uplink": {"state_interval": 1},
        "broker": {"host": "127.0.0.1", "port": broker_port, "protocol": protocol,
                   "backoff_initial": 0.2, "backoff_max": 1.0},
        "buses": [{"id": "block-3", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port, "timeout": 0.3,
                   "devices": [{"id": "smoke-shed", "unit": 1, "profile": "smoke_gas_detector", "poll_interval": 0.5,
                                "location": loc},
                               {"id": "door-101", "unit": 10, "profile": "door_lock", "poll_interval": 0.5,
                                "location": loc}]}],
        "rules": {"groups": {"property-office": {"recipients": ["duty-desk"]}},
                  "classes": {"fire": {"escalation": [{"group": "property-office", "after": 0}]}},
                  "rules": [{"id": "smoke-alarm", "type": "state", "devices": ["smoke-shed"], "point": "alarm",
                             "to": True, "severity": "critical", "class": "fire"}]},
        "commands": {"issuers": {"duty": {"public_key": envelope.public_key_text(duty_key.public_key()),
                                          "actions": ["lock", "unlock"], "buildings": ["3"]}},
                     "locks": [{"id": "door-101", "device": "door-101", "relock_after": 2}]},
    }
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes: its resident set now, and the most it ever had."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found["VmRSS"], found["VmHWM"]


class Watcher:
    """The daemon's …/state and …/cmd/result, from the broker."""

    def __init__(self, port: int):
        self.state: dict = {}
        self.results: list[dict] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-limits-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(TOPICS.state, 1), (TOPICS.cmd_result, 1)])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        body = orjson.loads(msg.payload)
        if msg.topic == TOPICS.state:
            self.state = body
        else:
            self.results.extend(body.get("records", []))

    def uplink(self, key: str) -> int:
        return (self.state.get("uplink") or {}).get(key, 0)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def send_valid_lock(watcher: Watcher, key) -> str:
    env = envelope.sign(envelope.make(v=2, issuer="duty", site=TOPICS.site, gateway=TOPICS.gateway, target="door-101",
                                      action="lock", valid_for=60), key)
    watcher.client.publish(TOPICS.cmd, orjson.dumps(env), qos=1)
    return env["id"]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_100_messages_of_10_mb_cost_the_daemon_at_most_10_mb(tmp_path, broker, community_sim, gateway_factory,
                                                              protocol):
    duty = envelope.generate()
    gw = gateway_factory(write_site(tmp_path, community_sim.port, broker.port, protocol, duty), log_level="warning")
    watcher = Watcher(broker.port)
    try:
        wait_until(lambda: watcher.state.get("status") == "online", 30, what="the gateway online")
        cmd_id = send_valid_lock(watcher, duty)  # warm: the command path has run once before RSS is read
        wait_until(lambda: any(r.get("id") == cmd_id and r.get("status") == "executed" for r in watcher.results),
                   15, what="a first command executed")
        time.sleep(1.0)
        before, peak_before = memory(gw.proc.pid)
        connects = watcher.uplink("connects")
        t0 = time.monotonic()
        publisher = subprocess.run([sys.executable, "-c", PUBLISHER, str(broker.port), str(MESSAGES), str(TEN_MB),
                                    TOPICS.cmd, TOPICS.alert_ack], capture_output=True, timeout=120)
        assert publisher.returncode == 0, publisher.stderr.decode()[-2000:]
        sent_in = time.monotonic() - t0
        if protocol == "3.1.1":  # the broker sent at least the first one; the guard refused it, the uplink came back
            wait_until(lambda: watcher.uplink("refused_too_large") >= 1 and watcher.state.get("status") == "online"
                       and watcher.uplink("connects") > connects, 15, what="a refusal and a reconnect in …/state")
        else:
            wait_until(lambda: watcher.uplink("connects") == connects and watcher.state.get("status") == "online",
                       5, what="…/state")
            assert watcher.uplink("refused_too_large") == 0, "mosquitto honours the announced Maximum Packet Size"
        cmd_id = send_valid_lock(watcher, duty)
        wait_until(lambda: any(r.get("id") == cmd_id and r.get("status") == "executed" for r in watcher.results),
                   15, what="a command executed after the 10 MB messages")
        assert gw.alive(), gw.output()[-2000:]
        rss, peak = memory(gw.proc.pid)
        assert rss - before <= MAX_GROWTH, (f"RSS grew by {(rss - before) / 2**20:.1f} MB after {MESSAGES} messages "
                                            f"of 10 MB (sent in {sent_in:.1f} s)")
        # and never held one whole: the peak did not rise by a message's size either
        assert peak - peak_before <= MAX_GROWTH, f"peak RSS rose by {(peak - peak_before) / 2**20:.1f} MB"
    finally:
        watcher.close()
