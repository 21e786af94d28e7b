"""Protocol v2 acceptance (issue 11), with the real daemon, a real mosquitto and the simulators.

The receiving side of every test is ``core.protocol.receiver.Receiver`` behind a plain
paho MQTT 5 client: what a centre written against the contract alone would see.
Every message the gateway publishes here is also checked against docs/schemas by the
``subscriber_factory`` fixture (tests/conftest.py) when the test ends.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.protocol import envelope
from core.protocol.keys import public_key_text
from core.protocol.meta import describe
from core.protocol.receiver import Receiver
from core.protocol.schemas import validate
from core.protocol.topics import Topics
from core.yamlsrc import ConfigError, load_yaml
from gateway.config.load import load_config
from gateway.config.meta import site_meta_payload
from simulator.netfault import FaultProxyThread
from tests.gateway.alerts.support import GROUPS, chain, site_data
from tests.support import PROFILES, ROOT, site_config, wait_until

COMMUNITY = Topics("sunny-court", "block-3-gw")


class ProtocolClient:
    """A receiver written against core.protocol only: paho (MQTT 5) in, ``Receiver`` behind it.

    ``on_message(client, topic, payload)`` (optional) runs in paho's thread as each message
    arrives, before it is handed to the receiver: what "the instant it sees" means here.
    """

    def __init__(self, port: int, *topics: str, on_message=None, client_id: str | None = None):
        self.receiver = Receiver()
        self.lock = threading.Lock()
        self.fresh: list[tuple[str, dict]] = []  # (topic, record) of every record the receiver had not seen
        self.retained: dict[str, bool] = {}  # topic -> retain flag of the last message on it
        self.topics = topics
        self.hook = on_message
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"v2-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in self.topics])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "receiver could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        payload = bytes(msg.payload)
        if self.hook is not None:
            self.hook(self, msg.topic, payload)
        with self.lock:
            got = self.receiver.receive(msg.topic, payload)
            self.retained[msg.topic] = bool(msg.retain)
            self.fresh.extend((msg.topic, r) for r in got.records)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def records(self, type_: str) -> list[dict]:
        with self.lock:
            return [r for _, r in self.fresh if r.get("type") == type_]

    def meta(self, topics: Topics) -> dict | None:
        with self.lock:
            return self.receiver.meta(topics.site, topics.gateway)

    def state(self, topics: Topics) -> dict | None:
        with self.lock:
            return self.receiver.state(topics.site, topics.gateway)

    def close(self) -> None:
        self.client.disconnect()  # first: then loop_stop() need not wait out paho's 1 s select
        self.client.loop_stop()


@pytest.fixture
def receivers():
    made: list[ProtocolClient] = []

    def make(port: int, *topics: str, **kw) -> ProtocolClient:
        made.append(ProtocolClient(port, *topics, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def community_site(tmp: Path, sim_port: int, broker_port: int, edit=None) -> Path:
    """config/community.yaml, pointed at the simulator and the test's broker (``edit(data)`` may change it)."""
    data = load_yaml(ROOT / "config" / "community.yaml").data  # Canopy's loader: `on:` stays a key
    data["profiles_dir"] = str(ROOT / "config" / "profiles")
    data["store"] = {"path": str(tmp / "outbox.sqlite"), "commit_interval": 0.2}
    data["uplink"] = {"state_interval": 1}
    data["broker"] = {"host": "127.0.0.1", "port": broker_port, "backoff_initial": 0.2, "backoff_max": 1.0}
    for bus in data["buses"]:
        bus["port"] = sim_port
    if edit is not None:
        edit(data)
    path = tmp / "community.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def online_with_meta(sub, boot: int):
    state = sub.latest_state()
    return state if state and state.get("status") == "online" and state.get("boot") == boot and state.get("meta") else None


# ----------------------------------------------------------------------------------------- (a) meta
def test_meta_is_retained_validates_and_a_late_receiver_renders_places_from_it(
        tmp_path, community_sim, broker, subscriber_factory, gateway_factory, receivers):
    sub = subscriber_factory(broker.port)
    cfg = community_site(tmp_path, community_sim.port, broker.port)
    gw = gateway_factory(cfg)
    state = wait_until(lambda: online_with_meta(sub, 1), 15, what="online state naming the meta version")

    late = receivers(broker.port, f"{COMMUNITY.base}/#")  # joins after the gateway published everything
    meta = wait_until(lambda: late.meta(COMMUNITY), 5, what="retained meta for a receiver that joined late")
    assert late.retained[COMMUNITY.meta] is True, "…/meta must be retained"
    assert validate(COMMUNITY.meta, orjson.dumps(meta)) == []
    assert meta["version"] == state["meta"], "…/state names the meta version that is retained"
    with late.lock:
        assert late.receiver.where(COMMUNITY.site, COMMUNITY.gateway, "door-101") == \
            "building 3, unit 1, household 101, Mrs Wang's door"
        assert late.receiver.where(COMMUNITY.site, COMMUNITY.gateway, "door-101", "zh-CN") == "3号楼，1单元，101户，王阿姨家门"
    assert meta["languages"][0] == "zh-CN", "the site's own language first"
    assert meta["profiles"]["water_meter"]["points"]["flow_rate"]["unit"] == "m3/h"
    assert meta["chains"]["fire"] == [{"group": "property-office", "after_s": 0.0}, {"group": "volunteers", "after_s": 120.0},
                                      {"group": "grid-leader", "after_s": 300.0}]
    assert meta["groups"]["volunteers"]["recipients"] == ["volunteer-wang", "volunteer-li"]
    assert meta["households"]["101"]["devices"] == ["door-101", "meter-101"]
    # the same config always gives the same bytes
    with sub.lock:
        retained = [p for t, p in sub.raw if t == COMMUNITY.meta]
    assert retained and set(retained) == {site_meta_payload(load_config(cfg))[1]}
    first = meta["version"]
    rc, _ = gw.terminate()
    assert rc == 0

    # the installer corrects the door's label and adds the grid: a restart publishes a new version
    def relabel(data):
        door = next(d for d in data["buses"][0]["devices"] if d["id"] == "door-101")
        door["labels"]["en"] = "Mrs Wang's front door"
        door["location"]["grid"] = "G7"

    cfg = community_site(tmp_path, community_sim.port, broker.port, edit=relabel)
    gateway_factory(cfg)
    state = wait_until(lambda: online_with_meta(sub, 2), 15, what="online state of the second boot")
    assert state["meta"] != first
    later = receivers(broker.port, f"{COMMUNITY.base}/meta")
    meta = wait_until(lambda: (m := later.meta(COMMUNITY)) and m["version"] == state["meta"] and m, 5,
                      what="the new meta version, retained")
    assert later.retained[COMMUNITY.meta] is True
    assert meta["devices"]["door-101"]["location"]["grid"] == "G7"
    with later.lock:
        assert later.receiver.where(COMMUNITY.site, COMMUNITY.gateway, "door-101") == \
            "building 3, unit 1, household 101, Mrs Wang's front door"


def farm_with_labels(tmp: Path, probe_label: str = "north field probe") -> Path:
    data = {
        "site": "green-valley", "gateway": "farm-gw-01", "profiles_dir": str(PROFILES),
        "buses": [
            {"id": "field", "type": "modbus_tcp", "host": "127.0.0.1", "port": 5020, "devices": [
                {"id": "soil-1", "unit": 1, "profile": "soil_probe", "location": {"zone": "zone-1"},
                 "labels": {"en": probe_label, "zh-CN": "北地土壤探头"}},
                {"id": "spare", "unit": 2, "profile": "soil_probe", "enabled": False},
                {"id": "valves", "unit": 40, "profile": "valve_relay"}]},
            {"id": "mast-232", "type": "serial_line", "port": "/dev/ttyCANOPY-not-here", "baudrate": 4800, "parser": "nmea",
             "devices": [{"id": "mast", "match": {"talker": "WI"}, "points": [
                 {"name": "air_temperature", "key": "XDR.TempAir", "unit": "degC", "labels": {"en": "air temperature", "zh-CN": "气温"}}]}]}],
        "commands": {"issuers": {"farmer": {"public_key": public_key_text(envelope.generate().public_key()),
                                            "actions": ["irrigate", "close"], "targets": ["zone-*"]}},
                     "valves": [{"id": "zone-1", "zone": 1, "device": "valves", "point": "zone_1", "max_run": "10m"}]},
    }
    path = tmp / f"farm-{abs(hash(probe_label))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def test_meta_of_a_site_is_deterministic_and_says_what_each_device_is(tmp_path):
    """Without a broker: the document the runtime publishes, from a site with a serial line and valves."""
    cfg = farm_with_labels(tmp_path)
    version, payload = site_meta_payload(load_config(cfg, missing_ports_ok=True))
    assert site_meta_payload(load_config(cfg, missing_ports_ok=True)) == (version, payload), "same config, same bytes"
    assert validate("canopy/v1/green-valley/farm-gw-01/meta", payload) == []
    meta = orjson.loads(payload)
    assert meta["version"] == version and meta["languages"] == ["en", "zh-CN"]
    assert set(meta["devices"]) == {"soil-1", "valves", "mast"}, "a disabled device publishes nothing, so it is not described"
    assert meta["devices"]["mast"]["points"]["air_temperature"] == {"unit": "degC", "type": "float",
                                                                    "labels": {"en": "air temperature", "zh-CN": "气温"}}
    assert meta["profiles"]["soil_probe"]["points"]["moisture"]["unit"] == "%"
    assert meta["zones"]["zone-1"] == {"valves": ["zone-1"], "devices": ["soil-1"]}
    assert meta["valves"]["zone-1"] == {"device": "valves", "point": "zone_1", "zone": 1, "max_run_s": 600.0,
                                        "actions": ["irrigate", "close"]}
    assert describe(meta, "soil-1") == "zone-1, north field probe"
    assert describe(meta, "soil-1", "zh-CN") == "zone-1，北地土壤探头"
    other, _ = site_meta_payload(load_config(farm_with_labels(tmp_path, "north field probe 1"), missing_ports_ok=True))
    assert other != version, "a changed label is a changed config: a new version"


def test_a_label_in_an_unknown_language_tag_is_a_config_error_with_its_line(tmp_path):
    cfg = farm_with_labels(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("zh-CN: 北地土壤探头", "Chinese: 北地土壤探头"), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, missing_ports_ok=True)
    assert f"{cfg}:" in str(err.value) and "labels: labels are keyed by language tag (en, zh-CN, ...), not 'Chinese'" \
        in str(err.value), str(err.value)


# ------------------------------------------------------------------------------ (b) online after SUBACK
GW_CLIENT_ID = "canopy-under-test"
SITE, GW = "test-site", "gw-1"
TOPICS = Topics(SITE, GW)
CYCLES = 100


class Centre(ProtocolClient):
    """Sends a signed command the instant it sees "online" from a connection it has not commanded yet."""

    def __init__(self, port: int, key):
        self.key = key
        self.sent: dict[str, int] = {}  # command id -> the gateway's connect number it was sent at
        self.commanded = 0
        super().__init__(port, TOPICS.state, TOPICS.cmd_result, on_message=Centre._on_state)

    def _on_state(self, topic: str, payload: bytes) -> None:
        if topic != TOPICS.state:
            return
        state = orjson.loads(payload)
        connects = state.get("uplink", {}).get("connects", 0) if state.get("status") == "online" else 0
        if connects <= self.commanded:
            return
        self.commanded = connects
        env = envelope.make(v=2, kind="command", issuer="centre", on_behalf_of="duty-desk", site=SITE, gateway=GW,
                            target="zone-1", action="close", valid_for=60)
        self.sent[env["id"]] = connects
        self.client.publish(TOPICS.cmd, orjson.dumps(envelope.sign(env, self.key)), qos=1)

    def outcome(self, connects: int) -> str | None:
        """The final status of the command sent at ``connects`` (None while there is none)."""
        ids = [i for i, n in self.sent.items() if n == connects]
        if not ids:
            return None
        finals = [r["status"] for r in self.records("cmd.result") if r.get("id") == ids[0] and r["status"] != "accepted"]
        return finals[0] if finals else None


def take_over_session(port: int) -> None:
    """Connect with the gateway's client id and clean start: the broker drops the gateway and its session."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    thief = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=GW_CLIENT_ID, protocol=mqtt.MQTTv5)
    connected = threading.Event()
    thief.on_connect = lambda *a: connected.set()
    thief.connect("127.0.0.1", port, clean_start=True, properties=props)
    thief.loop_start()
    try:
        assert connected.wait(5), "takeover client could not connect"
    finally:
        thief.disconnect()
        thief.loop_stop()


def test_a_command_sent_the_instant_online_is_seen_is_executed_100_of_100_across_reconnects(
        tmp_path, farm_sim, broker, subscriber_factory, gateway_factory):
    """Reconnects of three kinds: the session taken over and discarded (the gateway must subscribe again
    before it says online), the TCP connection reset (the session survives), the broker restarted."""
    key = envelope.generate()
    proxy = FaultProxyThread("127.0.0.1", broker.port)
    try:
        subscriber_factory(broker.port)  # every message the gateway publishes is checked against the schemas
        commands = {"issuers": {"centre": {"public_key": public_key_text(key.public_key()), "actions": ["close"],
                                           "targets": ["zone-*"]}},
                    "valves": [{"id": "zone-1", "zone": 1, "device": "valves", "point": "zone_1", "max_run": "10m"}]}
        cfg = site_config(tmp_path, sim_port=farm_sim.port, commands=commands,
                          devices=[{"id": "valves", "unit": 40, "profile": "valve_relay", "poll_interval": 1}],
                          broker={"host": "127.0.0.1", "port": proxy.port, "client_id": GW_CLIENT_ID,
                                  "backoff_initial": 0.1, "backoff_max": 0.5})
        centre = Centre(broker.port, key)
        gw = gateway_factory(cfg)
        t0 = time.monotonic()
        kinds: Counter = Counter()
        for n in range(1, CYCLES + 1):
            status = wait_until(lambda: centre.outcome(n), 10, 0.01,
                                what=f"the command sent at online #{n} answered (after {dict(kinds)} reconnects)")
            assert status == "executed", f"command sent at online #{n}: {status}"
            if n == CYCLES:
                break
            kind = "broker restart" if n % 25 == 0 else "session taken over" if n % 2 else "connection reset"
            kinds[kind] += 1
            proxy.passthrough()
            if kind == "broker restart":
                broker.stop()
                broker.start()
            elif kind == "session taken over":
                # A slow link (20 kB/s) spreads the gateway's packets out: had it said "online" before
                # subscribing, the command would reach the broker before the SUBSCRIBE, and be dropped.
                proxy.throttle(20_000)
                take_over_session(broker.port)
            else:
                proxy.reset()
        took = time.monotonic() - t0
        assert len(centre.sent) == CYCLES and gw.alive()
        assert took < 60, f"{CYCLES} reconnect cycles took {took:.1f} s"
    finally:
        proxy.stop()


# ------------------------------------------------------------------------------ (c) alert lifecycle
SMOKE = {"id": "smoke-alarm", "type": "state", "devices": ["smoke-shed", "smoke-hall"], "point": "alarm", "to": True,
         "severity": "critical", "class": "fire", "outputs": [{"device": "sounder", "point": "sounder"}]}
ALERT_SITE = Topics("sunny-court", "gw-3")
LIFECYCLE = ("alert.raised", "alert.escalated", "alert.acknowledged", "alert.resolved")


def test_alert_lifecycle_reaches_every_paged_group_and_a_receiver_of_both_sees_each_step_once(
        tmp_path, community_sim, broker, subscriber_factory, gateway_factory, receivers):
    """Property office at once, volunteers after 1 s; a signed ack; the smoke clears.  Per docs/protocol.md
    a lifecycle record goes to every group the alert has reached *so far*, and a group paged by an escalation
    first gets a copy of the raise that names it in ``copy_of``: each group topic gets all four steps, and a
    receiver of both topics, keying a record on its ``copy_of`` if it has one, sees each step once."""
    key = envelope.generate()
    sub = subscriber_factory(broker.port)
    groups = {g: receivers(broker.port, ALERT_SITE.alert_group(g)) for g in ("property-office", "volunteers")}
    both = receivers(broker.port, ALERT_SITE.alert_group("property-office"), ALERT_SITE.alert_group("volunteers"))
    rules = {"groups": GROUPS, "classes": {"fire": chain(0, 1.0)}, "rules": [SMOKE]}
    issuers = {"issuers": {"duty": {"public_key": public_key_text(key.public_key()), "ack": "all"}}}
    data = site_data(tmp_path, rules, sim_port=community_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump({**data, "commands": issuers}, sort_keys=False), encoding="utf-8")
    gateway_factory(cfg)
    wait_until(lambda: (s := sub.latest_state()) and s.get("status") == "online"
               and s["devices"].get("smoke-shed", {}).get("status") == "ok", 15, what="gateway online and polling")

    community_sim.device("smoke-shed").model.trigger_smoke()
    raised = wait_until(lambda: both.records("alert.raised"), 5, what="the raise on the office's topic")[0]
    assert raised["groups"] == ["property-office"]
    escalated = wait_until(lambda: both.records("alert.escalated"), 5, what="the escalation to the volunteers")[0]
    assert escalated["groups"] == ["property-office", "volunteers"]
    ack = envelope.make(v=2, kind="ack", issuer="duty", on_behalf_of="duty-desk", site=ALERT_SITE.site,
                        gateway=ALERT_SITE.gateway, target=raised["alert"], action="acknowledge",
                        params={"note": "on my way"}, valid_for=60)
    sub.publish(ALERT_SITE.alert_ack, orjson.dumps(envelope.sign(ack, key)))
    acked = wait_until(lambda: both.records("alert.acknowledged"), 5, what="the acknowledgement")[0]
    assert acked["by"] == "duty-desk" and acked["ack"] == ack["id"]
    community_sim.device("smoke-shed").model.clear()
    wait_until(lambda: both.records("alert.resolved"), 10, what="the resolution once the smoke cleared")
    time.sleep(0.5)  # any late copy would arrive now

    with both.lock:
        steps = Counter(r["type"] for _, r in both.fresh)
        duplicates = both.receiver.counters["duplicates"]
    assert {t: steps[t] for t in LIFECYCLE} == {t: 1 for t in LIFECYCLE}, steps
    assert duplicates >= 4, "the raise's copy, escalation, acknowledgement and resolution came on both topics"
    office = Counter(r["type"] for _, r in groups["property-office"].fresh)
    volunteers = Counter(r["type"] for _, r in groups["volunteers"].fresh)
    assert {t: office[t] for t in LIFECYCLE} == {t: 1 for t in LIFECYCLE}, office
    assert {t: volunteers[t] for t in LIFECYCLE} == {t: 1 for t in LIFECYCLE}, volunteers
    # one record, one seq: every copy of a step carries the same (epoch, lane, seq) ...
    for t in LIFECYCLE[1:]:
        assert groups["property-office"].records(t)[0]["seq"] == groups["volunteers"].records(t)[0]["seq"]
    # ... and the volunteers' raise, a record of its own, names the office's raise as the one it repeats
    (epoch,) = {e for (_, _, e, lane) in groups["property-office"].receiver.lanes if lane == "alarm"}
    copy = groups["volunteers"].records("alert.raised")[0]
    office_raise = groups["property-office"].records("alert.raised")[0]
    assert copy["copy_of"] == {"epoch": epoch, "lane": "alarm", "seq": office_raise["seq"]} and copy["seq"] > office_raise["seq"]
    assert {k: v for k, v in copy.items() if k not in ("seq", "copy_of")} == {k: v for k, v in office_raise.items() if k != "seq"}


# ------------------------------------------------------------------------------ (d) the receiver's imports
def test_the_reference_receiver_imports_only_core():
    """Statically (grimp, import-linter's engine) and at run time: nothing from gateway, drivers, inference."""
    import grimp

    graph = grimp.build_graph("core", "gateway", "drivers", "inference", "simulator", cache_dir=None)
    upstream = graph.find_upstream_modules("core.protocol.receiver")
    assert upstream and all(m.split(".")[0] == "core" for m in upstream), sorted(upstream)
    probe = ("import sys, core.protocol.receiver; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'gateway', 'drivers', 'inference', 'simulator', 'tests'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
