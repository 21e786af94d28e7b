"""Outage bench: how fast the uplink is back after a broker outage, and how often it knocks meanwhile.

    python bench/outage.py --mode all --outages 20 --down 5-10       # ~10 min
    python bench/outage.py --mode all --outages 20 --down 25-35      # ~30 min
    python bench/outage.py --mode all --outages 20 --down 295-305    # ~4 h
    python bench/outage.py --mode linkdown --outages 20 --down 5-10  # root

The real ``Uplink`` and ``Outbox`` run in this process with the production broker
settings (keepalive 30 s, connect_timeout 10 s, default pacing) and put 10 telemetry
records/s.  One mosquitto has three listeners: the gateway's, the baseline's, and one for a
checking subscriber (persistent session, never behind the proxy).

- ``refused``: the broker process is stopped (SIGTERM; its persistence is kept) and
  started again on the same port; the gateway connects straight to it, so each
  attempt meanwhile is a SYN answered by RST.
- ``blackhole``: the gateway goes through simulator/netfault.py; at the start of the
  outage its open connection is reset (the link dropped) and everything sent later is
  held until the link returns (a SYN that reached the proxy counts, as the bytes behind it wait).
- ``linkdown`` (not in ``all``; root): a real routed path in private network namespaces
  (``unshare -n``: this process -- a router -- the broker's namespace); the router's routes
  become blackhole routes, so SYNs and data vanish with no ICMP or RST and the kernel's own
  retransmission timers decide when a packet tries again, as on a link that went dark.

Each outage lasts a duration drawn uniformly from ``--down``: give a range, or the broker's
return keeps one phase against a retry schedule (a fixed 30 s flatters paho's 31 s attempt).  Resume: from the moment the broker listens
again (its port seen in LISTEN in /proc/net/tcp, no connection made to check) or the
proxy passes bytes again, to the uplink's first PUBACK after it.  Attempts are counted on
the broker's side: every TCP SYN to the gateway's port, from a packet socket on ``lo``
with a kernel filter (a retransmitted SYN is the same attempt: counted once); without
root, the uplink's own count.  ``lost``: records put that the subscriber never received,
once everything drained.

Baseline, in the same run through its own listener (or proxy) and counter: the published
peer, paho-mqtt's own reconnect loop (``loop_start``; waits 1 s, doubling to 120 s, its
defaults) publishing QoS 1 every 100 ms.  One JSON line out.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import ctypes
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import free_port, log, machine, percentile, stop_process  # noqa: E402
from core.protocol.topics import Topics  # noqa: E402
from core.records import Reading, reading_body  # noqa: E402
from gateway.config.broker import BrokerConfig  # noqa: E402
from gateway.outbox.store import Outbox  # noqa: E402
from gateway.uplink.resume import retry_interval  # noqa: E402
from gateway.uplink.uplink import Uplink  # noqa: E402
from simulator.netfault import FaultProxy  # noqa: E402

TOPICS = Topics("bench", "gw-outage")
RATE = 10.0  # telemetry records/s put while the bench runs


# -- broker side -------------------------------------------------------------------
def listening(host: str, port: int, pid: int) -> bool:
    """Is something listening on host:port in the network namespace of ``pid``?  From /proc: no connection made."""
    needle = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X} 00000000:0000 0A"
    with open(f"/proc/{pid}/net/tcp") as f:
        return any(needle in line for line in f)


class Mosquitto:
    """mosquitto with three listeners (gateway, baseline peer, checker); stopped and started again on the same ports."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1", prefix: tuple[str, ...] = ()):
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.host, self.prefix = host, prefix  # prefix: e.g. nsenter into the broker's network namespace
        self.port, self.peer_port, self.check_port = free_port(), free_port(), free_port()
        self.conf = workdir / "mosquitto.conf"
        lines = [f"listener {p} {host}" for p in (self.port, self.peer_port, self.check_port)]
        lines += ["allow_anonymous true", "persistence true", f"persistence_location {workdir}/", "autosave_interval 0",
                  "max_queued_messages 1000000", "max_queued_bytes 0", "max_inflight_messages 0"]
        lines += ["user root"] if os.geteuid() == 0 else []
        self.conf.write_text("\n".join(lines) + "\n")
        self.log_path = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> dict[int, float]:
        """Start it; returns {port: monotonic time first seen listening} for the gateway's and the peer's port."""
        self.proc = subprocess.Popen([*self.prefix, self.exe, "-c", str(self.conf)], stdout=open(self.log_path, "ab"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline, seen = time.monotonic() + timeout, {}
        while len(seen) < 2:
            for port in {self.port, self.peer_port} - set(seen):
                if listening(self.host, port, self.proc.pid):
                    seen[port] = time.monotonic()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {self.log_path.read_text()[-1000:]}")
            time.sleep(0.001)
        return seen

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class SynCounter:
    """Every TCP connection attempt to one port, seen on one interface by a packet socket with a kernel filter (root).

    ``attempts(t0, t1)``: the distinct SYNs (source port, sequence number) first seen in [t0, t1).
    """

    def __init__(self, port: int, interface: str = "lo"):
        # ETH_P_ALL: a socket bound to one protocol sees only what comes in, not what goes out
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((interface, 0x0003))
        self.loopback = interface == "lo"
        self._filter(port)
        self.seen: dict[tuple[int, int], float] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._read, name="syn-counter", daemon=True)
        self._thread.start()

    def _filter(self, port: int) -> None:
        # IPv4, TCP, destination port, SYN without ACK (the classic BPF `tcpdump -dd` would give)
        prog = [(0x28, 0, 0, 12), (0x15, 0, 8, 0x0800), (0x30, 0, 0, 23), (0x15, 0, 6, 6), (0xB1, 0, 0, 14),
                (0x48, 0, 0, 16), (0x15, 0, 3, port), (0x50, 0, 0, 27), (0x54, 0, 0, 0x12), (0x15, 1, 0, 0x02),
                (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFF)]
        code = b"".join(struct.pack("HBBI", *insn) for insn in prog)
        self._code = ctypes.create_string_buffer(code)
        fprog = struct.pack("HL", len(prog), ctypes.addressof(self._code))
        self.sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
        self.sock.settimeout(0.2)

    def _read(self) -> None:
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(128)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.loopback and addr[2] == socket.PACKET_OUTGOING:
                continue  # lo shows each packet twice: as sent and as received
            tcp = 14 + (data[14] & 0x0F) * 4
            key = struct.unpack_from("!H2xI", data, tcp)
            self.seen.setdefault(key, time.monotonic())

    def attempts(self, t0: float, t1: float) -> list[float]:
        return sorted(t for t in list(self.seen.values()) if t0 <= t < t1)

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self.sock.close()


class LinkNet:
    """This process (10.9.1.1) -- a router -- the broker's namespace (10.9.2.2), over veth pairs.

    ``cut()`` turns the router's two routes into blackhole routes: what it would forward is
    dropped silently both ways (no ICMP, no RST), while every link stays up.  Run inside
    ``unshare -n`` (main() does): nothing outside this process's own namespaces changes.
    """

    HOST, BROKER = "10.9.1.1", "10.9.2.2"

    def __init__(self):
        self.holders = [subprocess.Popen(["unshare", "-n", "sleep", "1000000"]) for _ in range(2)]
        time.sleep(0.2)
        router, broker = (str(p.pid) for p in self.holders)
        self.router, self.broker = ("nsenter", "-t", router, "-n"), ("nsenter", "-t", broker, "-n")
        self._sh("ip link set lo up; ip link add va type veth peer name ra; ip link set ra netns " + router)
        self._sh("ip link add rb type veth peer name vb; ip link set vb netns " + broker, self.router)
        self._sh("ip addr add 10.9.1.1/24 dev va; ip link set va up; ip route add 10.9.2.0/24 via 10.9.1.2")
        self._sh("ip link set lo up; ip addr add 10.9.1.2/24 dev ra; ip link set ra up; ip addr add 10.9.2.1/24 dev rb;"
                 "ip link set rb up; sysctl -qw net.ipv4.ip_forward=1", self.router)
        self._sh("ip link set lo up; ip addr add 10.9.2.2/24 dev vb; ip link set vb up; ip route add default via 10.9.2.1",
                 self.broker)

    @staticmethod
    def _sh(script: str, prefix: tuple[str, ...] = ()) -> None:
        subprocess.run([*prefix, "sh", "-ec", script], check=True)

    def cut(self) -> None:
        self._sh("ip route replace blackhole 10.9.2.0/24; ip route replace blackhole 10.9.1.0/24", self.router)

    def restore(self) -> None:
        self._sh("ip route replace 10.9.2.0/24 dev rb src 10.9.2.1; ip route replace 10.9.1.0/24 dev ra src 10.9.1.2",
                 self.router)

    def close(self) -> None:
        for p in self.holders:
            stop_process(p)


# -- the checking subscriber -------------------------------------------------------------
class Checker:
    """A persistent-session QoS 1 subscriber on the broker's other listener: which seqs arrived."""

    def __init__(self, host: str, port: int):
        self.seqs: set[int] = set()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="outage-checker", clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe(TOPICS.telemetry, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        body = orjson.loads(bytes(msg.payload))
        self.seqs.update(r["seq"] for r in body["records"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the two clients ----------------------------------------------------------------------
def first_at_or_after(times: list[float], t: float) -> float | None:
    i = bisect.bisect_left(times, t)
    return times[i] if i < len(times) else None


class Gateway:
    """Outbox + Uplink with production broker settings; records put at RATE/s; PUBACK times kept."""

    def __init__(self, workdir: Path, host: str, port: int, args):
        self.outbox = Outbox(str(workdir / "outbox.sqlite"))
        self.broker = BrokerConfig(host=host, port=port, backoff_max=args.backoff_max, connect_timeout=args.connect_timeout,
                                   client_id="canopy-bench-outage")
        self.acked_at: list[float] = []
        self.put = 0
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        await self.outbox.open()
        self.uplink = Uplink(self.broker, TOPICS, self.outbox)
        self.outbox.on_commit.append(self.uplink.committed)
        self.uplink.on_acked.append(lambda *_: self.acked_at.append(time.monotonic()))
        self.tasks = [asyncio.create_task(self.uplink.run()), asyncio.create_task(self._produce())]

    async def _produce(self) -> None:
        while True:
            self.put += 1
            await self.outbox.put("telemetry", [reading_body(Reading(time.time(), "soil-1", "moisture", self.put, "%"))])
            await asyncio.sleep(1 / RATE)

    async def stop_producing(self) -> None:
        self.tasks[1].cancel()
        await asyncio.gather(self.tasks[1], return_exceptions=True)

    async def stop(self) -> None:
        await self.uplink.stop()
        await asyncio.wait_for(self.tasks[0], 10)
        await self.outbox.close()


class Peer:
    """The baseline: paho-mqtt's own reconnect loop with its defaults, QoS 1 every 100 ms; PUBACK times kept."""

    def __init__(self, host: str, port: int):
        self.acked_at: list[float] = []
        self.attempts = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="outage-peer", protocol=mqtt.MQTTv5)
        self.client.on_publish = lambda *_: self.acked_at.append(time.monotonic())
        self.client.on_pre_connect = lambda *_: setattr(self, "attempts", self.attempts + 1)
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="outage-peer", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        while not self._stop.wait(1 / RATE):
            self.client.publish(f"{TOPICS.telemetry}/peer", b"x", qos=1)  # queued by paho while disconnected

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.client.disconnect()
        self.client.loop_stop()


# -- one mode -----------------------------------------------------------------------------
async def outage(broker: Mosquitto, proxies: dict[str, FaultProxy], net: LinkNet | None,
                 seconds: float) -> tuple[float, dict[str, float]]:
    """One outage of about ``seconds``; returns (down, {side: back}) in monotonic time."""
    down = time.monotonic()
    if net is not None:  # linkdown: the path goes dark in the middle
        await asyncio.to_thread(net.cut)
        await asyncio.sleep(max(0.0, down + seconds - time.monotonic()))
        await asyncio.to_thread(net.restore)
        back = time.monotonic()
        return down, {"canopy": back, "peer": back}
    if not proxies:  # refused: the broker process is stopped
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(max(0.0, down + seconds - time.monotonic()))
        seen = await asyncio.to_thread(broker.start)
        return down, {"canopy": seen[broker.port], "peer": seen[broker.peer_port]}
    for proxy in proxies.values():
        proxy.reset()
        proxy.blackhole()
    await asyncio.sleep(seconds)
    back = {}
    for side, proxy in proxies.items():
        back[side] = time.monotonic()
        proxy.passthrough()
    return down, back


class Tally:
    """One side's resume times and connection attempts over the outages."""

    def __init__(self, counter: SynCounter | None, own_count):
        self.counter, self.own_count = counter, own_count
        self.resumes: list[float] = []
        self.attempt_times: list[list[float]] = []
        self.outage_s = 0.0
        self._base = 0

    def down(self) -> None:
        self._base = self.own_count()

    def back(self, down: float, back: float, acked: float | None) -> None:
        self.resumes.append(float("inf") if acked is None else acked - back)
        self.outage_s += back - down
        self.attempt_times.append(self.counter.attempts(down, back) if self.counter else
                                  [down] * (self.own_count() - self._base))

    def result(self) -> dict:
        gaps = [b - a for times in self.attempt_times for a, b in zip(times, times[1:])]
        attempts = sum(len(t) for t in self.attempt_times)
        return {"resume_p50_s": _r(percentile(self.resumes, 50)), "resume_p99_s": _r(percentile(self.resumes, 99)),
                "resume_max_s": _r(max(self.resumes)), "attempts_per_s_during_outage": _r(attempts / self.outage_s),
                "attempts": attempts, "outage_s": round(self.outage_s, 1),
                "min_attempt_gap_s": _r(min(gaps)) if gaps else None,
                "attempts_counted_by": "syn" if self.counter else "client"}


async def run_mode(mode: str, args, workdir: Path, say) -> dict:
    net = LinkNet() if mode == "linkdown" else None
    host = net.BROKER if net else "127.0.0.1"
    broker = Mosquitto(workdir, host, net.broker if net else ())
    broker.start()
    proxies = {side: FaultProxy("127.0.0.1", port) for side, port in (("canopy", broker.port), ("peer", broker.peer_port))} \
        if mode == "blackhole" else {}
    for proxy in proxies.values():
        await proxy.start()
    ports = {side: proxy.port for side, proxy in proxies.items()} or {"canopy": broker.port, "peer": broker.peer_port}
    checker = Checker(host, broker.check_port)
    gw, peer = Gateway(workdir, host, ports["canopy"], args), Peer(host, ports["peer"])
    counters = {side: SynCounter(port, "va" if net else "lo") if os.geteuid() == 0 else None for side, port in ports.items()}
    tallies = {"canopy": Tally(counters["canopy"], lambda: gw.uplink.attempts),
               "peer": Tally(counters["peer"], lambda: peer.attempts)}
    acked = {"canopy": gw.acked_at, "peer": peer.acked_at}
    rng = random.Random(args.seed)
    try:
        await gw.start()
        for i in range(args.outages):
            await asyncio.sleep(rng.uniform(1.0, 3.0))  # connected and publishing before the next outage
            for tally in tallies.values():
                tally.down()
            down, back = await outage(broker, proxies, net, rng.uniform(*args.down))
            for side, tally in tallies.items():
                tally.back(down, back[side], await wait_for_ack(acked[side], back[side], args.resume_timeout))
            ours = tallies["canopy"]
            say(f"{mode} outage {i + 1}/{args.outages}: {back['canopy'] - down:.1f} s down, attempts at "
                f"{[round(t - down, 2) for t in ours.attempt_times[-1]]}, first PUBACK {ours.resumes[-1]:.3f} s after "
                f"the broker was back (peer: {tallies['peer'].resumes[-1]:.3f} s)")
        await gw.stop_producing()
        lost = await settle(gw, checker)
    finally:
        if gw.tasks:
            await gw.stop()
        peer.close()
        checker.close()
        for counter in counters.values():
            if counter:
                counter.close()
        for proxy in proxies.values():
            await proxy.stop()
        broker.stop()
        if net is not None:
            net.close()
    ours, baseline = tallies["canopy"].result(), tallies["peer"].result()
    return {"mode": mode, **ours, "lost": lost, "records": gw.put, "baseline": baseline,
            "ratio_resume_p99": _r(baseline["resume_p99_s"] / max(ours["resume_p99_s"], 1e-3))}


async def wait_for_ack(times: list[float], t: float, timeout: float) -> float | None:
    """The first PUBACK at or after ``t``, waiting up to ``timeout``; None if none came."""
    deadline = time.monotonic() + timeout
    while (acked := first_at_or_after(times, t)) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    return acked


async def settle(gw: Gateway, checker: Checker, timeout: float = 60.0) -> int:
    """Wait for the outbox to drain and the checker to hold every record; returns how many never arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.outbox.pending("telemetry") == 0 and len(checker.seqs) >= gw.put:
            break
        await asyncio.sleep(0.1)
    return len(set(range(1, gw.put + 1)) - checker.seqs)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["refused", "blackhole", "all", "linkdown"], default="all",
                    help="all: refused then blackhole; linkdown (root) runs alone, in private network namespaces")
    ap.add_argument("--outages", type=int, default=20)
    ap.add_argument("--down", default="30", help="outage length in s, or a range LO-HI drawn uniformly (default 30)")
    ap.add_argument("--backoff-max", type=float, default=60.0,
                    help="broker.backoff_max of the gateway (the pace is min(2 s, this); default: the config default)")
    ap.add_argument("--connect-timeout", type=float, default=10.0, help="broker.connect_timeout of the gateway (default 10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--resume-timeout", type=float, default=180.0, help="give up waiting for a PUBACK after this (s)")
    args = ap.parse_args(argv)
    lo, _, hi = args.down.partition("-")
    args.down = (float(lo), float(hi or lo))
    return args


async def amain(args) -> dict:
    modes = ["refused", "blackhole"] if args.mode == "all" else [args.mode]
    results = []
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix=f"canopy-outage-{mode}-") as d:
            results.append(await run_mode(mode, args, Path(d), log))
    worst = {k: max(r[k] for r in results) for k in ("resume_p50_s", "resume_p99_s", "attempts_per_s_during_outage")}
    baseline = {f"baseline_{k}": max(r["baseline"][k] for r in results) for k in ("resume_p50_s", "resume_p99_s")}
    return {"bench": "outage", **worst, "lost": sum(r["lost"] for r in results), **baseline, "outages": args.outages,
            "down_s": list(args.down), "interval_s": retry_interval(args.backoff_max),
            "connect_timeout_s": args.connect_timeout, "modes": results,
            "machine": machine()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mode == "linkdown" and os.environ.get("CANOPY_OUTAGE_NETNS") != "1":
        if os.geteuid() != 0 or not shutil.which("unshare"):
            print("linkdown needs root and unshare (util-linux)", file=sys.stderr)
            return 2
        argv = sys.argv[1:] if argv is None else argv
        env = {**os.environ, "CANOPY_OUTAGE_NETNS": "1"}
        return subprocess.run(["unshare", "-n", sys.executable, __file__, *argv], env=env).returncode
    print(json.dumps(asyncio.run(amain(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
