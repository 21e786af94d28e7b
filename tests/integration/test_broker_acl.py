"""The shipped broker set-up (config/mosquitto/) with a real mosquitto: who may publish and read what.

The broker runs the shipped ``mosquitto.conf`` and ``acl`` as they are; only the listener
ports and the folder of its files are replaced.  A CA is made here with ``cryptography``:
it signs the broker's certificate and one client certificate per gateway, whose Common
Name is the gateway's MQTT identity ``{site}/{gateway}``.  "Never arrives" is judged
against a control message sent after the forged ones on the same topic: once the control
has arrived, anything the broker let through would have arrived before it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import ROOT, Mosquitto, Subscriber, free_port, site_config, wait_until

SHIPPED = ROOT / "config" / "mosquitto"
SITE, GW1, GW2 = "green-valley", "farm-gw-01", "farm-gw-02"
ID1, ID2 = f"{SITE}/{GW1}", f"{SITE}/{GW2}"  # the usernames / certificate CNs the shipped ACL names
BASE1 = f"canopy/v1/{SITE}/{GW1}"
PASSWORDS = {ID1: "gw1-pass", ID2: "gw2-pass", "centre": "centre-pass"}
NOT_AUTHORISED = 135  # MQTT 5 PUBACK reason code 0x87


# -- a CA, made here ----------------------------------------------------------------------------


class Pki:
    """A throw-away CA that issues the broker's certificate and client certificates (PEM files, keys 0600)."""

    def __init__(self, folder: Path, name: str = "Canopy Test CA"):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (self._builder(self.name, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca = folder / "ca.pem"
        self.ca.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def issue(self, cn: str, stem: str, *, server: bool = False) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), key.public_key())
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False).sign(self.key, hashes.SHA256())
        cert_path, key_path = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        return str(cert_path), str(key_path)


# -- the shipped broker -------------------------------------------------------------------------


class ShippedBroker:
    """mosquitto with config/mosquitto/{mosquitto.conf,acl}: mutual-TLS listener and password listener."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.pki = Pki(folder)
        self.pki.issue("localhost", "broker", server=True)
        (folder / "acl").write_text((SHIPPED / "acl").read_text())
        self._passwords(folder / "passwd")
        self.mtls_port, self.password_port = free_port(), free_port()
        text = (SHIPPED / "mosquitto.conf").read_text()
        assert "listener 8883\n" in text and "listener 8884\n" in text and "/etc/mosquitto/canopy/" in text
        text = (text.replace("listener 8883\n", f"listener {self.mtls_port} 127.0.0.1\n")
                    .replace("listener 8884\n", f"listener {self.password_port} 127.0.0.1\n")
                    .replace("/etc/mosquitto/canopy/", f"{folder}/")
                    .replace("persistence_location /var/lib/mosquitto/", f"persistence_location {folder}/"))
        if os.geteuid() == 0:
            text += "user root\n"  # else it drops privileges and cannot read the 0600 files
        self.process = Mosquitto(folder, port=self.password_port)
        self.process.conf.write_text(text)

    @staticmethod
    def _passwords(path: Path) -> None:
        for i, (user, password) in enumerate(PASSWORDS.items()):
            subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(path), user, password],
                           check=True, capture_output=True)
        os.chmod(path, 0o600)

    def start(self) -> "ShippedBroker":
        self.process.start()
        wait_until(lambda: self._open(self.mtls_port), 5, what="the mutual-TLS listener")
        return self

    @staticmethod
    def _open(port: int) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")


@pytest.fixture
def shipped_broker(tmp_path):
    broker = ShippedBroker(tmp_path / "broker").start()
    yield broker
    broker.process.stop()


class Client:
    """A paho MQTT 5 client over TLS that records what it receives and the PUBACK reason of each publish."""

    def __init__(self, broker: ShippedBroker, *, user: str | None = None, cert: tuple[str, str] | None = None,
                 ca: str | None = None, connect: bool = True):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{user or 'cert'}-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=ca or str(broker.pki.ca), certfile=cert[0] if cert else None,
                            keyfile=cert[1] if cert else None)
        if user:
            self.client.username_pw_set(user, PASSWORDS[user])
        self.lock = threading.Lock()
        self.received: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: rc == 0 and self.connected.set()
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        if connect:
            self.client.connect("127.0.0.1", broker.password_port if user else broker.mtls_port)
            self.client.loop_start()
            assert self.connected.wait(10), "no CONNACK"

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.received.append((msg.topic, msg.payload))

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        with self.lock:
            self.acks[mid] = reason.value

    def subscribe(self, *topics: str) -> None:
        self.subscribed.clear()
        self.client.subscribe([(t, 1) for t in topics])
        assert self.subscribed.wait(5)

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and wait for the PUBACK; its reason code (0 = accepted)."""
        info = self.client.publish(topic, payload, qos=1)
        wait_until(lambda: info.mid in self.acks, 5, what=f"PUBACK for {topic}")
        return self.acks[info.mid]

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.received if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def clients():
    made: list[Client] = []

    def make(*args, **kw) -> Client:
        c = Client(*args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# -- the tests ----------------------------------------------------------------------------------


def test_another_gateways_login_cannot_command_ack_or_speak_for_this_one(shipped_broker, clients):
    centre = clients(shipped_broker, user="centre")
    centre.subscribe("canopy/v1/#")
    gw1 = clients(shipped_broker, user=ID1)
    gw1.subscribe(f"{BASE1}/cmd", f"{BASE1}/alert/ack", f"{BASE1}/config", f"{BASE1}/replay")
    gw2 = clients(shipped_broker, user=ID2)
    gw2.subscribe(f"{BASE1}/cmd", f"{BASE1}/telemetry")  # listening in on gateway 1

    forged = {leaf: gw2.publish(f"{BASE1}/{leaf}", b"forged by gw2")
              for leaf in ("cmd", "alert/ack", "config", "replay", "telemetry", "state", "cmd/result")}
    assert forged == {leaf: NOT_AUTHORISED for leaf in forged}, forged
    assert gw1.publish(f"{BASE1}/cmd", b"forged by gw1 itself") == NOT_AUTHORISED, "a gateway never writes commands"

    for leaf in ("cmd", "alert/ack", "config", "replay"):
        assert centre.publish(f"{BASE1}/{leaf}", b"control") == 0
    assert gw1.publish(f"{BASE1}/telemetry", b"own reading") == 0
    assert gw1.publish(f"{BASE1}/state", b"own state") == 0
    wait_until(lambda: all(gw1.payloads(f"{BASE1}/{leaf}") for leaf in ("cmd", "alert/ack", "config", "replay")), 5,
               what="the centre's messages at gateway 1")
    wait_until(lambda: centre.payloads(f"{BASE1}/state"), 5, what="gateway 1's own state at the centre")

    for leaf in ("cmd", "alert/ack", "config", "replay"):
        assert gw1.payloads(f"{BASE1}/{leaf}") == [b"control"], leaf
    assert centre.payloads(f"{BASE1}/telemetry") == [b"own reading"]
    assert centre.payloads(f"{BASE1}/state") == [b"own state"]
    assert not [t for t, p in centre.received if p.startswith(b"forged")]
    assert gw2.received == [], "one gateway's login must not read another's commands or readings"
    assert "Denied PUBLISH" in shipped_broker.log()


def test_mutual_tls_with_a_per_gateway_certificate_end_to_end(tmp_path, shipped_broker, farm_sim, gateway_factory):
    """The real daemon logs in with its certificate only (no password); its readings reach the centre."""
    cert, key = shipped_broker.pki.issue(ID1, "farm-gw-01")
    cfg = site_config(tmp_path, sim_port=farm_sim.port, site=SITE, gateway=GW1, broker={
        "host": "127.0.0.1", "port": shipped_broker.mtls_port, "tls": {"ca": str(shipped_broker.pki.ca), "cert": cert, "key": key}})
    centre = Subscriber(shipped_broker.password_port, tls_ca=str(shipped_broker.pki.ca), username="centre",
                        password=PASSWORDS["centre"])
    try:
        gw = gateway_factory(cfg)
        wait_until(lambda: len(centre.seqs("telemetry")) > 10, 20, what="readings over mutual TLS")
        wait_until(lambda: (centre.latest_state() or {}).get("status") == "online", 10, what="online")
        assert {t for t, _, _ in centre.messages} <= {f"{BASE1}/{leaf}" for leaf in ("telemetry", "event", "state", "meta")}
        assert f"u'{ID1}'" in shipped_broker.log(), "the broker took the certificate's CN as the username"
        assert "Denied" not in shipped_broker.log()
        assert "security: strict" not in gw.output(), "a client certificate is a credential: no warning"
        rc, _ = gw.terminate()
        assert rc == 0
    finally:
        centre.close()


def test_mutual_tls_listener_refuses_no_certificate_a_foreign_ca_and_another_gateways_cn(tmp_path, shipped_broker, clients):
    listener = clients(shipped_broker, user="centre")
    listener.subscribe("canopy/v1/#")
    gw2 = clients(shipped_broker, cert=shipped_broker.pki.issue(ID2, "farm-gw-02"))
    assert gw2.publish(f"{BASE1}/telemetry", b"forged with gw2's certificate") == NOT_AUTHORISED
    assert gw2.publish(f"canopy/v1/{SITE}/{GW2}/telemetry", b"own") == 0
    wait_until(lambda: listener.received, 5, what="gateway 2's own reading")
    assert listener.received == [(f"canopy/v1/{SITE}/{GW2}/telemetry", b"own")]

    foreign = Pki(tmp_path / "foreign", "Someone Else's CA")
    for cert in (None, foreign.issue(ID1, "impostor")):
        c = clients(shipped_broker, cert=cert, connect=False)
        try:
            c.client.connect("127.0.0.1", shipped_broker.mtls_port)
            c.client.loop_start()
        except (ssl.SSLError, OSError):
            pass  # refused in the handshake: what we want
        assert not c.connected.wait(1.5), f"connected without a valid client certificate ({cert})"


def test_messages_bigger_than_the_size_limit_never_reach_a_gateway(shipped_broker, clients):
    gw1 = clients(shipped_broker, user=ID1)
    gw1.subscribe(f"{BASE1}/cmd")
    flooder = clients(shipped_broker, user="centre")
    flooder.client.publish(f"{BASE1}/cmd", b"x" * 262_145, qos=1)  # one byte over message_size_limit
    wait_until(lambda: "Dropped too large PUBLISH" in shipped_broker.log(), 5, what="the broker dropping it")
    centre = clients(shipped_broker, user="centre")
    assert centre.publish(f"{BASE1}/cmd", b"y" * 262_144) == 0  # a full-size config bundle still passes
    wait_until(lambda: gw1.payloads(f"{BASE1}/cmd"), 5, what="the message at the limit")
    assert [len(p) for p in gw1.payloads(f"{BASE1}/cmd")] == [262_144]
