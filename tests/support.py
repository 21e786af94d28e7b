"""Real parts for tests: a mosquitto broker, an MQTT subscriber, a gateway process.

Everything listens on 127.0.0.1 only.  Waiting is done by polling for the
condition with a deadline (never a bare sleep that assumes timing).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "config" / "profiles"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def until(cond, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):
    """``wait_until`` for async tests: polls without blocking the event loop."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class Mosquitto:
    """A real mosquitto on a free loopback port; can be stopped and restarted on the same port."""

    def __init__(self, workdir: Path, *, port: int | None = None, tls: dict | None = None,
                 password_file: str | None = None, persistence: bool = True):
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(self.exe):
            raise RuntimeError("mosquitto is not installed (make test installs it: apt-get install -y mosquitto)")
        self.workdir = workdir
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        lines = [f"listener {self.port} 127.0.0.1", "max_queued_messages 1000000", "max_inflight_messages 0",
                 "max_queued_bytes 0", f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {workdir}/", f"persistence_file mosquitto-{self.port}.db",
                 "autosave_interval 0"]
        if password_file:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines += ["allow_anonymous true"]
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops privileges and cannot read 0600 files
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf), "-v"], stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait_until(self._listening, 10, what=f"mosquitto on port {self.port}")
        return self

    def _listening(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Subscriber:
    """Collects every message under canopy/v1/# (QoS 1, persistent session) and checks each against the schemas.

    Every message on a gateway -> centre topic (telemetry, event, alert/{group},
    cmd/result, state, meta) is validated with ``core.protocol.schemas.validate``
    when ``schema_problems()`` is asked (the integration tests' fixture asks at
    teardown), so a gateway that drifts from docs/schemas fails the test that saw
    it.  Messages *to* gateways (cmd, alert/ack, config, replay) are what tests and
    issuers publish: the gateway judges those itself, so they are not checked here,
    nor is anything published through :meth:`publish`.
    """

    def __init__(self, port: int, *, client_id: str | None = None, tls_ca: str | None = None,
                 username: str | None = None, password: str | None = None, topic: str = "canopy/v1/#"):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-sub-{port}-{time.monotonic_ns()}",
                                  clean_session=False)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(0.1, 0.5)
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca)
        if username:
            self.client.username_pw_set(username, password)
        self.topic = topic
        self.lock = threading.Lock()
        self.messages: list[tuple[str, dict, bool]] = []
        self.raw: list[tuple[str, bytes]] = []  # what arrived, as it arrived: for the schema check
        self._own: set[tuple[str, bytes]] = set()  # published by the test itself (publish())
        self._checked = 0
        self._problems: list[str] = []
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise AssertionError("subscriber could not subscribe")

    def _on_message(self, client, userdata, msg) -> None:
        payload = bytes(msg.payload)
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            body = None  # junk a test sent to a gateway; on a gateway topic the schema check reports it
        with self.lock:
            self.raw.append((msg.topic, payload))
            if body is not None:
                self.messages.append((msg.topic, body, bool(msg.retain)))

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False):
        """Publish as the test (an issuer, a fake peer): left out of the schema check."""
        with self.lock:
            self._own.add((topic, payload))
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def schema_problems(self) -> list[str]:
        """``topic: problem`` for every message a gateway published that its schema refuses (checked once each)."""
        from core.protocol.schemas import validate
        from core.protocol.topics import CENTRE_TO_GATEWAY, parse_topic

        with self.lock:
            todo, self._checked = self.raw[self._checked:], len(self.raw)
            own = set(self._own)
        seen: set[tuple[str, bytes]] = set()
        for topic, payload in todo:
            if (topic, payload) in own or (topic, payload) in seen:
                continue
            seen.add((topic, payload))
            name = parse_topic(topic)
            if name is not None and name.leaf in CENTRE_TO_GATEWAY:
                continue
            for problem in validate(topic, payload):
                self._problems.append(f"{topic}: {problem} in {payload[:300]!r}")
        return list(self._problems)

    def assert_valid(self) -> None:
        problems = self.schema_problems()
        assert not problems, f"{len(problems)} message(s) disagree with docs/schemas:\n" + "\n".join(problems[:20])

    def close(self) -> None:
        self.client.disconnect()  # first: then loop_stop() need not wait out paho's 1 s select
        self.client.loop_stop()

    # -- views -------------------------------------------------------------
    def of(self, suffix: str) -> list[dict]:
        with self.lock:
            return [m for t, m, _ in self.messages if t.endswith("/" + suffix)]

    def records(self, lane: str) -> list[dict]:
        """Every record of a lane, whatever topic it came on (alerts go to …/alert/{group})."""
        with self.lock:
            msgs = [m for t, m, _ in self.messages if isinstance(m, dict) and m.get("lane") == lane and "records" in m]
        return [r for m in msgs for r in m["records"]]

    def seqs(self, lane: str) -> list[int]:
        return [r["seq"] for r in self.records(lane)]

    def latest_state(self) -> dict | None:
        states = self.of("state")
        return states[-1] if states else None

    def by_point(self) -> dict[tuple[str, str], list[dict]]:
        out: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in self.records("telemetry"):
            out[(r["device"], r["point"])].append(r)
        return out


def site_config(tmp: Path, *, sim_port: int, broker: dict | None, devices: list[dict] | None = None,
                extra_buses: list[dict] | None = None, store: dict | None = None, **top) -> Path:
    """Write a site config for the farm simulator on ``sim_port``."""
    devices = devices if devices is not None else [
        {"id": "soil-1", "unit": 1, "profile": "soil_probe", "poll_interval": 0.5},
        {"id": "soil-2", "unit": 2, "profile": "soil_probe", "poll_interval": 0.5},
        {"id": "soil-3", "unit": 3, "profile": "soil_probe", "poll_interval": 0.5},
        {"id": "weather", "unit": 10, "profile": "weather_station", "poll_interval": 0.5},
        {"id": "meter-farm", "unit": 20, "profile": "water_meter", "poll_interval": 0.5},
        {"id": "tank", "unit": 30, "profile": "tank_level", "poll_interval": 0.5},
        {"id": "valves", "unit": 40, "profile": "valve_relay", "poll_interval": 0.5},
    ]
    data = {
        "site": "test-site",
        "gateway": "gw-1",
        "profiles_dir": str(PROFILES),
        "store": {"path": str(tmp / "outbox.sqlite"), "commit_interval": 0.2, **(store or {})},
        "uplink": {"state_interval": 1},
        "buses": [{"id": "field", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port, "timeout": 0.3,
                   "backoff_initial": 0.2, "backoff_max": 1.0, "devices": devices}] + (extra_buses or []),
        **top,
    }
    if broker is not None:
        data["broker"] = {"backoff_initial": 0.2, "backoff_max": 1.0, **broker}
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class GatewayProcess:
    """`canopy run` as a real child process."""

    def __init__(self, config: Path, *, log_level: str = "info", env: dict | None = None, args: list[str] | None = None):
        self.config = config
        self.args = args or []
        self.log = config.parent / "gateway.log"
        self.log_level = log_level
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "GatewayProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(self.config), "--log-level", self.log_level, *self.args],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 10) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)


def make_tls(tmp: Path) -> dict:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost (PEM files, keys 0600)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Canopy Test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
           .issuer_name(ca_name).public_key(srv_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
           .sign(ca_key, hashes.SHA256()))
    files = {"ca": tmp / "ca.pem", "cert": tmp / "server.pem", "key": tmp / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key_pem(srv_key))
    os.chmod(files["key"], 0o600)
    return {k: str(v) for k, v in files.items()}


def make_password_file(tmp: Path, user: str, password: str) -> str:
    path = tmp / "mosquitto.passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True, capture_output=True)
    os.chmod(path, 0o600)
    return str(path)
