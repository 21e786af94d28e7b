"""Junk-flood bench (issue 12): the real daemon, mosquitto and the community simulator under 10,000 junk msgs/s.

    python bench/flood.py [--seconds 30] [--rate 10000] [--kinds unparseable,unknown_issuer,bad_signature,replay]

A quiet phase first (``--seconds``), then for each kind of junk a flood of ``--rate``
messages/s on ``…/cmd`` for ``--seconds``.  All the while a valid signed command
(``lock door-101``, duty desk, protocol v2) is sent every second, and the smoke
detectors are set off and cleared in turn (a ``state`` rule raises a critical alert).
Junk kinds: ``unparseable`` (not JSON, 300-deep params, 9 KB, missing fields),
``unknown_issuer`` (signed by a key the gateway does not know), ``bad_signature``
(names the centre, a configured issuer other than the valid sender, with a wrong key)
and ``replay`` (a captured valid command of the duty desk, sent again and again).

Measured:
- ``valid_answered_ratio``: valid commands sent during the flood that were executed and
  answered within 2 s (the minimum over the kinds at the top level); ``valid_p99_s``;
- ``alarm_p99_ms_quiet`` / ``_flood``: from the ``alert.raised`` record's ``ts`` (the
  rule firing, in the daemon) to the moment this process received it from the broker
  (so at least the broker's acknowledgement); ``alarm_p50_ms_*`` the median, which
  tells a slower path from a few late ones;
- ``rss_growth_mb``: the daemon's largest RSS during the floods minus its RSS at the end
  of the quiet phase (per kind: during that flood minus before it);
- ``junk_records_per_min``: durable records caused by junk (``cmd.result``/``cmd.audit``
  of anything but the valid commands, and ``cmd.junk`` summaries) received in a window
  of max(60 s, flood + 5 s) from the flood's start, per minute of that window (the
  summary comes a minute after the junk starts, hence the window);
- ``daemon_cpu_us_per_junk``: the daemon's CPU in that window beyond its quiet-phase rate,
  per junk message it counted (``loadavg`` says how busy the machine was).  An upper
  bound of what a junk message costs: a daemon that keeps up wakes for a few packets at a
  time, and each wake has its own cost; behind, it reads 64 KiB at a time for less.

The junk publisher is a separate process that writes pre-encoded MQTT 3.1.1 QoS 0
PUBLISH packets to a socket every 10 ms (``_publish`` below): a paho publisher tops out
near 10k msgs/s here and would take the cores the daemon is measured on.  The rate it
reached is reported per kind.  Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Broker, current_rss_bytes, log, machine, percentile, proc_cpu_seconds  # noqa: E402

SITE, GATEWAY = "sunny-court", "gw-3"
CMD_TOPIC = f"canopy/v1/{SITE}/{GATEWAY}/cmd"
KINDS = ("unparseable", "unknown_issuer", "bad_signature", "replay")
ANSWER_WITHIN = 2.0
TARGETS = {"valid_answered_ratio": 0.99, "valid_p99_s": 2.0, "alarm_p99_ms_flood": 100.0, "rss_growth_mb": 10.0,
           "junk_records_per_min": 1.0}


# -- the junk publisher (a child process) -----------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _varint(len(body)) + body


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def publish_main(port: int, topic: str, payload_file: str, rate: float, seconds: float) -> int:
    """Send the payloads (one per line, cycled) as QoS 0 PUBLISH packets at ``rate``/s for ``seconds``."""
    payloads = [line.rstrip(b"\n") for line in Path(payload_file).read_bytes().splitlines(keepends=True)]
    packets = [_packet(0x30, _utf8(topic) + p) for p in payloads]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # CONNECT: MQTT 3.1.1, clean session, keepalive 0 (no PINGREQ needed)
    sock.sendall(_packet(0x10, _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + _utf8(f"junk-{os.getpid()}")))
    if sock.recv(4)[:1] != b"\x20":
        print(json.dumps({"error": "no CONNACK"}), flush=True)
        return 1
    tick, sent, i = 0.01, 0, 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    while (now := time.monotonic()) < deadline:
        due = int((now - t0) * rate) - sent
        if due > 0:
            chunk = [packets[(i + k) % len(packets)] for k in range(due)]
            sock.sendall(b"".join(chunk))
            i, sent = (i + due) % len(packets), sent + due
        time.sleep(max(0.0, tick - (time.monotonic() - now)))
    elapsed = time.monotonic() - t0
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    print(json.dumps({"sent": sent, "seconds": round(elapsed, 3), "rate": round(sent / elapsed, 1)}), flush=True)
    return 0


# -- the site --------------------------------------------------------------------------------
def write_site(workdir: Path, sim_port: int, broker_port: int) -> tuple[Path, dict]:
    import yaml

    from core.protocol import envelope
    from tests.support import PROFILES

    keys = {name: envelope.generate() for name in ("duty", "centre")}
    loc = {"building": "3"}
    devices = [{"id": "smoke-shed", "unit": 1, "profile": "smoke_gas_detector", "poll_interval": 0.2, "location": loc},
               {"id": "smoke-hall", "unit": 2, "profile": "smoke_gas_detector", "poll_interval": 0.2, "location": loc},
               {"id": "door-101", "unit": 10, "profile": "door_lock", "poll_interval": 0.5, "location": loc}]
    site = {
        "site": SITE, "gateway": GATEWAY, "profiles_dir": str(PROFILES),
        "store": {"path": str(workdir / "outbox.sqlite"), "commit_interval": 0.2},
        "uplink": {"state_interval": 1},
        "broker": {"host": "127.0.0.1", "port": broker_port, "backoff_initial": 0.2, "backoff_max": 1.0},
        "buses": [{"id": "block-3", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port, "timeout": 0.3,
                   "devices": devices}],
        "rules": {"groups": {"property-office": {"recipients": ["duty-desk"]}},
                  "classes": {"fire": {"escalation": [{"group": "property-office", "after": 0}]}},
                  "rules": [{"id": "smoke-alarm", "type": "state", "devices": ["smoke-shed", "smoke-hall"],
                             "point": "alarm", "to": True, "severity": "critical", "class": "fire"}]},
        "commands": {"issuers": {name: {"public_key": envelope.public_key_text(k.public_key()), "actions": ["lock", "unlock"],
                                        "buildings": ["3"]} for name, k in keys.items()},
                     "locks": [{"id": "door-101", "device": "door-101", "relock_after": 2}]},
    }
    path = workdir / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, keys


def junk_payloads(kind: str, keys: dict, captured: bytes | None, n: int = 2000) -> list[bytes]:
    import orjson

    from core.protocol import envelope

    def cmd(issuer: str, key, i: int, **kw) -> bytes:
        env = envelope.make(v=2, issuer=issuer, site=SITE, gateway=GATEWAY, target="door-101", action="unlock",
                            id=f"junk-{i}", **kw)
        return orjson.dumps(envelope.sign(env, key))

    if kind == "unparseable":
        deep = b'{"v":2,"kind":"command","id":"deep","params":' + b"[" * 300 + b"]" * 300 + b"}"
        shapes = [b"not json at all", deep, b'{"action":"unlock","target":"door-101"}', b"{" + b" " * 9000 + b"}"]
        return [shapes[i % len(shapes)] for i in range(n)]
    if kind == "unknown_issuer":
        stranger = envelope.generate()
        return [cmd("mallory", stranger, i) for i in range(n)]
    if kind == "bad_signature":
        stranger = envelope.generate()
        return [cmd("centre", stranger, i) for i in range(n)]
    return [captured]


# -- watching the broker ---------------------------------------------------------------------
class Watcher:
    """Every record on …/cmd/result, …/event, …/alert/+ and …/state, with the time it arrived.

    The subscriber runs in its own process (``_watch`` below) and stamps each message there: in this
    process its paho thread would wait on the GIL behind the simulator and the valid sender, and an
    alarm's arrival would be stamped late by the bench itself, not by the gateway or the broker."""

    def __init__(self, port: int):
        self.lock = threading.Lock()
        self.records: list[tuple[float, str, dict]] = []  # (received at, topic leaf, record)
        self.state: dict = {}
        self.proc = subprocess.Popen([sys.executable, __file__, "_watch", str(port)], stdout=subprocess.PIPE, cwd=ROOT)
        ready = self.proc.stdout.readline()
        if ready.strip() != b"subscribed":
            raise RuntimeError(f"the watcher did not subscribe: {ready!r}")
        self.reader = threading.Thread(target=self._read, daemon=True, name="flood-watch-reader")
        self.reader.start()

    def _read(self) -> None:
        import orjson

        for line in self.proc.stdout:
            t, leaf, payload = line.rstrip(b"\n").split(b" ", 2)
            try:
                body = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            with self.lock:
                if leaf == b"state":
                    self.state = body
                else:
                    self.records.extend((float(t), leaf.decode(), r) for r in body.get("records", []))

    def find(self, type_: str, since: float = 0.0, **match) -> list[tuple[float, dict]]:
        with self.lock:
            return [(t, r) for t, _, r in self.records if r.get("type") == type_ and t >= since
                    and all(r.get(k) == v for k, v in match.items())]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.reader.join(5)


def watch_main(port: int) -> int:
    """The watcher's process: one line per message, ``arrival-time leaf payload``, stamped on arrival."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    base = f"canopy/v1/{SITE}/{GATEWAY}/"
    out = sys.stdout.buffer
    subscribed = threading.Event()

    def on_message(client, userdata, msg) -> None:
        out.write(b"%.6f %s %s\n" % (time.time(), msg.topic.split("/", 4)[-1].encode(), msg.payload.replace(b"\n", b" ")))
        out.flush()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-watch-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe([(base + t, 1) for t in ("cmd/result", "event", "alert/+", "state")])
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not subscribed.wait(10):
        return 1
    out.write(b"subscribed\n")
    out.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def wait_for(cond, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(step)
    return None


# -- load that runs all the time: valid commands, smoke alarms, RSS ----------------------------------
class Valid(threading.Thread):
    """A signed ``lock door-101`` from the duty desk every second; remembers when each was sent."""

    def __init__(self, port: int, key, watcher: Watcher):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        super().__init__(daemon=True, name="valid-sender")
        self.key, self.watcher = key, watcher
        self.sent: list[tuple[float, str, bytes]] = []  # (wall time, id, payload)
        self.stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-valid-{os.getpid()}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def run(self) -> None:
        import orjson

        from core.protocol import envelope

        while not self.stop.wait(1.0 - time.time() % 1.0):
            env = envelope.sign(envelope.make(v=2, issuer="duty", site=SITE, gateway=GATEWAY, target="door-101",
                                              action="lock", valid_for=300), self.key)
            payload = orjson.dumps(env)
            self.sent.append((time.time(), env["id"], payload))
            self.client.publish(CMD_TOPIC, payload, qos=1)

    def latencies(self, start: float, end: float) -> list[float | None]:
        """Seconds to the ``executed`` answer of each command sent in [start, end), None if none came."""
        out = []
        for t, cmd_id, _ in [s for s in self.sent if start <= s[0] < end]:
            done = self.watcher.find("cmd.result", id=cmd_id, status="executed")
            out.append(done[0][0] - t if done else None)
        return out

    def close(self) -> None:
        self.stop.set()
        self.join(3)
        self.client.loop_stop()
        self.client.disconnect()


class Alarms(threading.Thread):
    """Smoke on, the raise seen on the broker, smoke off, the resolution seen; the two detectors in turn."""

    def __init__(self, sim, watcher: Watcher):
        super().__init__(daemon=True, name="smoke-alarms")
        self.sim, self.watcher = sim, watcher
        self.stop = threading.Event()
        self.missed = 0

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            device = ("smoke-shed", "smoke-hall")[n % 2]
            n += 1
            model = self.sim.device(device).model
            since = time.time()
            model.trigger_smoke()
            if not wait_for(lambda: self.watcher.find("alert.raised", since, device=device), 5):
                self.missed += 1
            model.clear()
            wait_for(lambda: self.watcher.find("alert.resolved", since, device=device), 5)
            self.stop.wait(0.3)

    def latencies_ms(self, start: float, end: float) -> list[float]:
        """Rule firing (the record's ts) -> first copy received, for alerts raised in [start, end)."""
        first: dict[str, tuple[float, float]] = {}  # alert -> (ts, first arrival)
        for t, rec in self.watcher.find("alert.raised"):
            if start <= rec["ts"] < end:
                ts, seen = first.get(rec["alert"], (rec["ts"], t))
                first[rec["alert"]] = (ts, min(seen, t))
        return [1000 * (seen - ts) for ts, seen in first.values()]

    def close(self) -> None:
        self.stop.set()
        self.join(12)


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True, name="rss")
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.samples.append((time.time(), current_rss_bytes(self.pid) / 2**20))

    def peak(self, start: float, end: float) -> float:
        return max((mb for t, mb in self.samples if start <= t <= end), default=0.0)

    def close(self) -> None:
        self.stop.set()
        self.join(2)

    def at(self, when: float) -> float:
        before = [mb for t, mb in self.samples if t <= when]
        return before[-1] if before else 0.0


# -- phases ----------------------------------------------------------------------------------
def flood_phase(kind: str, args, ctx: dict) -> dict:
    """One kind of junk at --rate for --seconds; what the valid commands, the alarms and the daemon did meanwhile."""
    w, valid, alarms, rss, gw = ctx["watcher"], ctx["valid"], ctx["alarms"], ctx["rss"], ctx["gateway"]
    captured = valid.sent[-2][2] if kind == "replay" else None  # surely received and executed by now
    payload_file = ctx["workdir"] / f"junk-{kind}.txt"
    payload_file.write_bytes(b"\n".join(junk_payloads(kind, ctx["keys"], captured)) + b"\n")
    counted_before = junk_total(w.state)
    cpu0, start = proc_cpu_seconds(gw.proc.pid), time.time()
    pub = subprocess.Popen([sys.executable, __file__, "_publish", str(ctx["broker"].port), CMD_TOPIC, str(payload_file),
                            str(args.rate), str(args.seconds)], stdout=subprocess.PIPE, cwd=ROOT)
    out, _ = pub.communicate(timeout=args.seconds + 60)
    end = time.time()
    cpu = proc_cpu_seconds(gw.proc.pid) - cpu0
    sent = json.loads(out.decode().strip().splitlines()[-1])
    window = max(65.0, args.seconds + 5.0)  # the summary comes a minute after the junk starts
    time.sleep(max(0.0, start + window - time.time()))
    extra_cpu = proc_cpu_seconds(gw.proc.pid) - cpu0 - ctx["quiet_cpu_per_s"] * (time.time() - start)
    counted = junk_total(w.state) - counted_before
    lat = valid.latencies(start, end)
    answered = [x for x in lat if x is not None and x <= ANSWER_WITHIN]
    valid_ids = {cmd_id for _, cmd_id, _ in valid.sent}
    junk_records = [r for typ in ("cmd.result", "cmd.audit") for _, r in w.find(typ, start) if r.get("id") not in valid_ids
                    and _ts_in(r, start, start + window)] + [r for _, r in w.find("cmd.junk", start) if _ts_in(r, start, start + window)]
    alarm_ms = alarms.latencies_ms(start, end)
    res = {"rate_reached": sent.get("rate"), "sent": sent.get("sent"),
           "counted_by_gateway": counted,
           "daemon_cpu_us_per_junk": round(1e6 * extra_cpu / counted, 1) if counted else None,
           "valid_sent": len(lat), "valid_answered": len(answered),
           "valid_answered_ratio": round(len(answered) / len(lat), 4) if lat else None,
           "valid_p99_s": _round(percentile([x for x in lat if x is not None], 99), 3),
           "valid_unanswered": sum(1 for x in lat if x is None),
           "alarm_p99_ms": _round(percentile(alarm_ms, 99), 1), "alarm_p50_ms": _round(percentile(alarm_ms, 50), 1),
           "alarms": len(alarm_ms),
           "rss_growth_mb": round(rss.peak(start, start + window) - rss.at(start), 1),
           "junk_records": len(junk_records), "junk_records_per_min": round(len(junk_records) / (window / 60), 2),
           "daemon_cpu_pct": round(100 * cpu / max(1e-9, end - start), 1)}
    log(f"{kind}: {json.dumps(res)}")
    return {**res, "_lat": lat, "_alarm_ms": alarm_ms, "_window": (start, start + window)}


def junk_total(state: dict) -> int:
    junk = ((state.get("commands") or {}).get("counters") or {}).get("junk") or {}
    return sum(sum(r.values()) for r in junk.values())


def _ts_in(rec: dict, start: float, end: float) -> bool:
    return start <= rec.get("ts", 0) < end


def _round(v, digits):
    return None if v is None else round(v, digits)


def run(args) -> dict:
    from tests.conftest import SimThread
    from tests.support import GatewayProcess

    ctx: dict = {}
    with tempfile.TemporaryDirectory(prefix="canopy-flood-") as d, Broker(Path(d), cpu_set=set(range(os.cpu_count() or 1))) as broker:
        workdir = Path(d)
        sim = SimThread("community", speed=1.0)
        cfg, keys = write_site(workdir, sim.port, broker.port)
        gw = GatewayProcess(cfg, log_level="warning").start()
        watcher = Watcher(broker.port)
        ctx.update(workdir=workdir, keys=keys, broker=broker, watcher=watcher, gateway=gw)
        parts = []
        try:
            if not wait_for(lambda: watcher.state.get("status") == "online", 30):
                raise RuntimeError(f"the gateway did not come online; log:\n{gw.output()[-2000:]}")
            ctx["rss"] = RssSampler(gw.proc.pid)
            ctx["valid"] = Valid(broker.port, keys["duty"], watcher)
            ctx["alarms"] = Alarms(sim, watcher)
            parts = [ctx["rss"], ctx["valid"], ctx["alarms"]]
            for p in parts:
                p.start()
            if not wait_for(lambda: watcher.find("cmd.result", status="executed"), 15):
                raise RuntimeError("no valid command was executed")
            log(f"quiet phase: {args.seconds:g} s")
            q0, qcpu = time.time(), proc_cpu_seconds(gw.proc.pid)
            time.sleep(args.seconds)
            ctx["quiet_cpu_per_s"] = (proc_cpu_seconds(gw.proc.pid) - qcpu) / (time.time() - q0)
            quiet = {"alarm_ms": ctx["alarms"].latencies_ms(q0, time.time()), "valid": ctx["valid"].latencies(q0, time.time()),
                     "rss_mb": ctx["rss"].at(time.time()), "cpu_pct": round(100 * ctx["quiet_cpu_per_s"], 1)}
            by_kind = {kind: flood_phase(kind, args, ctx) for kind in args.kinds}
        except BaseException:
            log(f"the gateway's log, last lines:\n{gw.output()[-3000:]}")
            raise
        finally:
            for p in reversed(parts):
                p.close()
            watcher.close()
            gw_alive = gw.alive()
            if gw_alive:
                try:
                    gw.terminate()
                except subprocess.TimeoutExpired:
                    log("the gateway did not stop within 10 s of SIGTERM: killed")
                    gw.close()
            sim.stop()
    return summarise(args, quiet, by_kind, gw_alive)


def summarise(args, quiet: dict, by_kind: dict, gw_alive: bool) -> dict:
    flood_lat = [x for r in by_kind.values() for x in r["_lat"] if x is not None]
    flood_alarms = [x for r in by_kind.values() for x in r["_alarm_ms"]]
    clean = {k: {f: v for f, v in r.items() if not f.startswith("_")} for k, r in by_kind.items()}
    ratios = [r["valid_answered_ratio"] for r in clean.values() if r["valid_answered_ratio"] is not None]
    out = {
        "bench": "flood", "seconds": args.seconds, "rate": args.rate,
        "valid_answered_ratio": min(ratios) if ratios else None,
        "valid_p99_s": _round(percentile(flood_lat, 99), 3),
        "alarm_p99_ms_quiet": _round(percentile(quiet["alarm_ms"], 99), 1),
        "alarm_p99_ms_flood": _round(percentile(flood_alarms, 99), 1),
        "alarm_p50_ms_quiet": _round(percentile(quiet["alarm_ms"], 50), 1),
        "alarm_p50_ms_flood": _round(percentile(flood_alarms, 50), 1),
        "rss_growth_mb": max((r["rss_growth_mb"] for r in clean.values()), default=None),
        "junk_records_per_min": max((r["junk_records_per_min"] for r in clean.values()), default=None),
        "by_kind": clean,
        "quiet": {"alarms": len(quiet["alarm_ms"]), "valid_sent": len(quiet["valid"]),
                  "valid_p99_s": _round(percentile([x for x in quiet["valid"] if x is not None], 99), 3),
                  "rss_mb": quiet["rss_mb"], "daemon_cpu_pct": quiet["cpu_pct"]},
        "gateway_alive": gw_alive, "targets": TARGETS, "machine": machine(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_watch":
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        return watch_main(int(argv[1]))
    if argv and argv[0] == "_publish":
        port, topic, payload_file, rate, seconds = argv[1:6]
        return publish_main(int(port), topic, payload_file, float(rate), float(seconds))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the quiet phase and of each flood (default 30)")
    ap.add_argument("--rate", type=float, default=10_000.0, help="junk messages per second (default 10000)")
    ap.add_argument("--kinds", type=lambda t: [k for k in t.split(",") if k], default=list(KINDS),
                    help=f"comma-separated, of {', '.join(KINDS)}")
    args = ap.parse_args(argv)
    if unknown := set(args.kinds) - set(KINDS):
        ap.error(f"unknown kind(s): {', '.join(sorted(unknown))}")
    if args.seconds <= 0 or args.rate <= 0:
        ap.error("--seconds and --rate must be positive")
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
