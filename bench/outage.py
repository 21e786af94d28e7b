"""Outage bench: how fast the uplink is back after a broker outage, and how often it knocks meanwhile.

    python bench/outage.py --mode refused --outages 20 --down 5-10
    python bench/outage.py --mode blackhole --outages 20 --down 30
    python bench/outage.py --mode all --outages 20 --down 300     # long: ~4 h

The real ``Uplink`` and ``Outbox`` run in this process with the production broker
settings (keepalive 30 s, connect_timeout 10 s, default pacing) and put 10 telemetry
records/s.  One mosquitto has two listeners: the gateway's, and one for a checking
subscriber (persistent session) that the outages never touch.

- ``refused``: the broker process is stopped (SIGTERM; its persistence is kept) and
  started again on the same port; the gateway connects straight to it, so each
  attempt meanwhile is a SYN answered by RST.
- ``blackhole``: the gateway goes through simulator/netfault.py; at the start of the
  outage its open connection is reset (the link dropped) and everything sent later is
  held until the link returns (a SYN that reached the proxy counts, as the bytes behind it wait).

Each outage lasts a duration drawn uniformly from ``--down`` (so the broker's return has
no fixed phase against the retry schedule).  Resume: from the moment the broker listens
again (its port seen in LISTEN in /proc/net/tcp, no connection made to check) or the
proxy passes bytes again, to the uplink's first PUBACK after it.  Attempts are counted on
the broker's side: every TCP SYN to the gateway's port, from a packet socket on ``lo``
with a kernel filter (a retransmitted SYN is the same attempt: counted once); without
root, the proxy's accepted connections or the uplink's own count.  ``lost``: records put
that the subscriber never received, once everything drained.  One JSON line out.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
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
def listening(port: int) -> bool:
    """Is something listening on 127.0.0.1:port?  Read from /proc/net/tcp: no connection attempt made."""
    needle = f"0100007F:{port:04X} 00000000:0000 0A"
    with open("/proc/net/tcp") as f:
        return any(needle in line for line in f)


class Mosquitto:
    """mosquitto with the gateway's listener and the checker's; stopped and started again on the same ports."""

    def __init__(self, workdir: Path):
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port, self.check_port = free_port(), free_port()
        self.conf = workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", f"listener {self.check_port} 127.0.0.1", "allow_anonymous true",
                 "persistence true", f"persistence_location {workdir}/", "autosave_interval 0",
                 "max_queued_messages 1000000", "max_queued_bytes 0", "max_inflight_messages 0"]
        lines += ["user root"] if os.geteuid() == 0 else []
        self.conf.write_text("\n".join(lines) + "\n")
        self.log_path = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> float:
        """Start it; returns the monotonic time its gateway port was first seen listening."""
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=open(self.log_path, "ab"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {self.log_path.read_text()[-1000:]}")
            time.sleep(0.001)
        return time.monotonic()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class SynCounter:
    """Every TCP connection attempt to one port on lo, seen by a packet socket with a kernel filter (root).

    ``attempts(t0, t1)``: the distinct SYNs (source port, sequence number) first seen in [t0, t1).
    """

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        self.sock.bind(("lo", 0x0800))
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
        import ctypes

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
            if addr[2] == socket.PACKET_OUTGOING:
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


# -- the checking subscriber -------------------------------------------------------------
class Checker:
    """A persistent-session QoS 1 subscriber on the broker's other listener: which seqs arrived."""

    def __init__(self, port: int):
        self.seqs: set[int] = set()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="outage-checker", clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe(TOPICS.telemetry, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        body = orjson.loads(bytes(msg.payload))
        self.seqs.update(r["seq"] for r in body["records"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the gateway -------------------------------------------------------------------------
class Gateway:
    """Outbox + Uplink with production broker settings; records put at RATE/s; PUBACK times kept."""

    def __init__(self, workdir: Path, port: int, backoff_max: float):
        self.outbox = Outbox(str(workdir / "outbox.sqlite"))
        self.broker = BrokerConfig(host="127.0.0.1", port=port, backoff_max=backoff_max,
                                   client_id="canopy-bench-outage")
        self.acked_at: list[float] = []
        self.put = 0
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        await self.outbox.open()
        self.uplink = Uplink(self.broker, TOPICS, self.outbox)
        self.outbox.on_commit.append(self.uplink.wake)
        self.uplink.on_acked.append(lambda *_: self.acked_at.append(time.monotonic()))
        self.tasks = [asyncio.create_task(self.uplink.run()), asyncio.create_task(self._produce())]

    async def _produce(self) -> None:
        while True:
            self.put += 1
            await self.outbox.put("telemetry", [reading_body(Reading(time.time(), "soil-1", "moisture", self.put, "%"))])
            await asyncio.sleep(1 / RATE)

    async def wait_ack_after(self, t: float, timeout: float) -> float | None:
        """The first PUBACK at or after ``t`` (monotonic), waiting up to ``timeout``; None if none came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            i = bisect.bisect_left(self.acked_at, t)
            if i < len(self.acked_at):
                return self.acked_at[i]
            await asyncio.sleep(0.001)
        return None

    async def stop_producing(self) -> None:
        self.tasks[1].cancel()
        await asyncio.gather(self.tasks[1], return_exceptions=True)

    async def stop(self) -> None:
        await self.uplink.stop()
        await asyncio.wait_for(self.tasks[0], 10)
        await self.outbox.close()


# -- one mode -----------------------------------------------------------------------------
async def outage(mode: str, broker: Mosquitto, proxy: FaultProxy | None, seconds: float) -> tuple[float, float]:
    """One outage of about ``seconds``; returns (down, back) monotonic times."""
    down = time.monotonic()
    if mode == "refused":
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(max(0.0, down + seconds - time.monotonic()))
        back = await asyncio.to_thread(broker.start)
    else:
        proxy.reset()
        proxy.blackhole()
        await asyncio.sleep(seconds)
        back = time.monotonic()
        proxy.passthrough()
    return down, back


async def run_mode(mode: str, args, workdir: Path, say) -> dict:
    broker = Mosquitto(workdir)
    broker.start()
    proxy = FaultProxy("127.0.0.1", broker.port) if mode == "blackhole" else None
    if proxy is not None:
        await proxy.start()
    port = proxy.port if proxy is not None else broker.port
    checker = Checker(broker.check_port)
    counter = SynCounter(port) if os.geteuid() == 0 else None
    gw = Gateway(workdir, port, args.backoff_max)
    rng = random.Random(args.seed)
    resumes: list[float] = []
    attempt_times: list[list[float]] = []
    outage_s = 0.0
    try:
        await gw.start()
        for i in range(args.outages):
            await asyncio.sleep(rng.uniform(1.0, 3.0))  # connected and publishing before the next outage
            base = gw.uplink.attempts
            down, back = await outage(mode, broker, proxy, rng.uniform(*args.down))
            acked = await gw.wait_ack_after(back, 60.0)
            resumes.append(float("inf") if acked is None else acked - back)
            outage_s += back - down
            attempt_times.append(counter.attempts(down, back) if counter else [down] * (gw.uplink.attempts - base))
            say(f"{mode} outage {i + 1}/{args.outages}: {back - down:.1f} s down, attempts at {[round(t - down, 2) for t in attempt_times[-1]]}, "
                f"first PUBACK {resumes[-1]:.3f} s after the broker was back")
        await gw.stop_producing()
        lost = await settle(gw, checker)
    finally:
        if gw.tasks:
            await gw.stop()
        checker.close()
        if counter:
            counter.close()
        if proxy is not None:
            await proxy.stop()
        broker.stop()
    gaps = [b - a for times in attempt_times for a, b in zip(times, times[1:])]
    attempts = sum(len(t) for t in attempt_times)
    return {"mode": mode, "resume_p50_s": _r(percentile(resumes, 50)), "resume_p99_s": _r(percentile(resumes, 99)),
            "resume_max_s": _r(max(resumes)), "attempts_per_s_during_outage": _r(attempts / outage_s),
            "attempts": attempts, "outage_s": round(outage_s, 1), "min_attempt_gap_s": _r(min(gaps)) if gaps else None,
            "attempts_counted_by": "syn" if counter else "uplink", "lost": lost, "records": gw.put}


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
    ap.add_argument("--mode", choices=["refused", "blackhole", "all"], default="all")
    ap.add_argument("--outages", type=int, default=20)
    ap.add_argument("--down", default="30", help="outage length in s, or a range LO-HI drawn uniformly (default 30)")
    ap.add_argument("--backoff-max", type=float, default=60.0,
                    help="broker.backoff_max of the gateway (the pace is min(2 s, this); default: the config default)")
    ap.add_argument("--seed", type=int, default=1)
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
    return {"bench": "outage", **worst, "lost": sum(r["lost"] for r in results), "outages": args.outages,
            "down_s": list(args.down), "interval_s": retry_interval(args.backoff_max), "modes": results,
            "machine": machine()}


def main(argv=None) -> int:
    args = parse_args(argv)
    print(json.dumps(asyncio.run(amain(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
