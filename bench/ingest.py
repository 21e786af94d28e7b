#!/usr/bin/env python3
"""Durable ingest -> broker (QoS 1) on one core: Canopy beside a raw aiosqlite+paho baseline.

Prints exactly one JSON line on stdout (progress goes to stderr).

The measured process is pinned to core 0; mosquitto (fresh, loopback, no
persistence, no subscribers: it acknowledges QoS 1 publishes by itself) and, in
modbus mode, the simulator process are pinned to the other core(s).

Modes
  memory  N fake devices (real ``Point`` objects, changing values) polled by real
          ``DevicePoller`` s into the real ``Outbox`` (exactly as
          ``runtime.Gateway._accept_readings``) and the real ``Uplink``: pipeline capacity.
  modbus  N soil probes served by ``simulator.modbus_tcp`` in a separate process,
          read through ``ModbusTcpEndpoint`` + ``ModbusDevice`` + ``DevicePoller``.

Baseline (same process, same core, same broker, right after Canopy's run): the
same producers feeding hand-written code - aiosqlite ``executemany`` of the same
JSON bodies committed every 0.5 s (WAL, synchronous=FULL like the Outbox), a reader connection selecting 500-record
batches, a plain paho client (VERSION2, driven from the asyncio loop) publishing
them at QoS 1 with 32 in flight, deleting ranges after ``on_publish``.

"readings_per_s" counts readings whose PUBACK arrived, over the steady window
after a 2 s warm-up.  "pending_at_end" is the end-to-end backlog (polled but not
yet acknowledged) when the window closes; "backlog_growth_per_s" says whether
ingest outran delivery during the window.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    Broker,
    ModbusFarm,
    baseline_client,
    busy_pct,
    cpu_busy_ticks,
    cpus,
    log,
    machine,
    other_cpus,
    pin_self,
    rss_mb,
)

WARMUP = 2.0
BATCH = 500
INFLIGHT = 32
COMMIT_INTERVAL = 0.5
TARGET = 50_000
UNITS = ["%", "degC", "uS/cm", "kPa", "m3", "", "V", "A", "hPa", "mm"]


# -- producers --------------------------------------------------------------------------
class FakeDevice:
    """Implements gateway.poll.poller.Pollable: P real Points, values change on every poll."""

    def __init__(self, id: str, points: list):
        self.id = id
        self.points = points
        self.n = 0

    async def read_all(self) -> list:
        self.n += 1
        n = self.n
        return [(p, ((n * 7 + i * 13) % 1000) / 10) for i, p in enumerate(self.points)]


def make_points(count: int) -> list:
    from drivers.modbus.profile import Point

    return [Point(name=f"p{i:02d}", table="holding", address=i, type="u16", scale=0.1, unit=UNITS[i % len(UNITS)])
            for i in range(count)]


def fake_devices(n: int, points: int) -> list[FakeDevice]:
    pts = make_points(points)
    return [FakeDevice(f"dev-{i:04d}", pts) for i in range(n)]


def compose(lane: str, rows: list) -> bytes:
    """The same telemetry message shape the Uplink sends (seq spliced into each body)."""
    head = b'{"v":1,"site":"bench","gateway":"gw-1","lane":"%s","seq":[%d,%d],"records":[' % (
        lane.encode(), rows[0][0], rows[-1][0])
    return head + b",".join(b'{"seq":%d,%s' % (seq, body[1:]) for seq, body in rows) + b"]}"


# -- measuring ---------------------------------------------------------------------------
class Window:
    """Snapshots of counters at the start and end of the steady window."""

    def __init__(self, broker: Broker, farm: ModbusFarm | None):
        self.broker = broker
        self.farm = farm

    def snap(self, **counters) -> dict:
        t = os.times()
        return {"t": time.monotonic(), "cpu": t.user + t.system, "sys": t.system, "cores": cpu_busy_ticks(), "broker_cpu": self.broker.cpu_seconds(),
                "sim_cpu": self.farm.cpu_seconds() if self.farm else 0.0, **counters}

    @staticmethod
    def rates(a: dict, b: dict) -> dict:
        dt = b["t"] - a["t"]

        def per_s(key):
            return round((b[key] - a[key]) / dt, 1)

        out = {
            "window_s": round(dt, 2),
            "readings_per_s": per_s("acked"),
            "accepted_per_s": per_s("accepted"),
            "polled_per_s": per_s("polled"),
            "commits_per_s": round((b["commits"] - a["commits"]) / dt, 2),
            "pending_at_end": b["polled"] - b["acked"],
            "backlog_growth_per_s": round(((b["polled"] - b["acked"]) - (a["polled"] - a["acked"])) / dt, 1),
            "cpu_pct": round(100 * (b["cpu"] - a["cpu"]) / dt, 1),
            "cpu_sys_pct": round(100 * (b["sys"] - a["sys"]) / dt, 1),
            # CPU of the whole measured process (producers included) per acknowledged reading,
            # and the rate one fully busy core would carry at that cost (a projection).
            "cpu_us_per_reading": round(1e6 * (b["cpu"] - a["cpu"]) / max(1, b["acked"] - a["acked"]), 2),
            "one_core_projection_per_s": round((b["acked"] - a["acked"]) / max(1e-9, b["cpu"] - a["cpu"])),
            "broker_cpu_pct": round(100 * (b["broker_cpu"] - a["broker_cpu"]) / dt, 1),
        }
        cores = busy_pct(a["cores"], b["cores"])
        out["core_busy_pct"] = {str(c): v for c, v in cores.items()}
        if 0 in cores:  # core 0 time used by other processes (shared machine): > ~5 % taints the run
            out["core0_others_pct"] = round(max(0.0, cores[0] - out["cpu_pct"]), 1)
        if "requests" in a:
            out["modbus_requests_per_s"] = per_s("requests")
            out["modbus_errors"] = b["errors"] - a["errors"]
            out["sim_cpu_pct"] = round(100 * (b["sim_cpu"] - a["sim_cpu"]) / dt, 1)
        return out


async def cancel_all(tasks: list[asyncio.Task], rounds: int = 50) -> int:
    """Cancel tasks until they are done; returns how many survived the first cancel().

    On Python <= 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives
    as the inner operation completes, so one cancel() is not always enough.
    """
    for t in tasks:
        t.cancel()
    done, pending = await asyncio.wait(tasks, timeout=0.5) if tasks else (set(), set())
    survivors = len(pending)
    if os.environ.get("BENCH_DEBUG_STUCK") and pending:
        for t in list(pending)[:3]:
            log(f"stuck task {t.get_name()}: " + " <- ".join(f"{f.f_code.co_filename.rsplit('/', 2)[-1]}:{f.f_lineno}" for f in t.get_stack(limit=8)))
    for _ in range(rounds):
        if not pending:
            break
        for t in pending:
            t.cancel()
        done, pending = await asyncio.wait(pending, timeout=0.2)
    return survivors


# -- Canopy ------------------------------------------------------------------------------
async def run_canopy(args, broker: Broker, farm: ModbusFarm | None, workdir: Path, profiler=None) -> dict:
    from core.clock import Clock
    from core.protocol.topics import Topics
    from core.records import Reading, reading_body
    from gateway.config.broker import BrokerConfig
    from gateway.outbox.store import Outbox
    from gateway.poll.health import Health
    from gateway.poll.poller import DevicePoller
    from gateway.uplink.uplink import Uplink

    clock = Clock()
    outbox = Outbox(str(workdir / "canopy-outbox.sqlite"), commit_interval=COMMIT_INTERVAL, clock=clock)
    await outbox.open()
    uplink = Uplink(BrokerConfig(host="127.0.0.1", port=broker.port, max_inflight=INFLIGHT, client_id="canopy-bench"),
                    Topics("bench", "gw-1"), outbox, batch_max_records=BATCH, state=lambda: {})
    outbox.on_commit.append(uplink.committed)  # as runtime.Gateway.start wires it
    commit_ms: list[float] = []
    inner_commit = getattr(outbox, "_commit", None)
    if inner_commit is not None:  # observe (not change) how long each commit transaction takes
        async def timed_commit(*a, **k):
            t0 = time.perf_counter()
            try:
                return await inner_commit(*a, **k)
            finally:
                commit_ms.append((time.perf_counter() - t0) * 1000)
        outbox._commit = timed_commit
    health = Health()
    polled = 0

    async def accept(readings: list[Reading]) -> None:  # runtime.Gateway._accept_readings
        nonlocal polled
        polled += len(readings)
        await outbox.put("telemetry", [reading_body(r) for r in readings], ts=readings[0].ts if readings else None)

    endpoints = []
    if args.mode == "memory":
        devices = fake_devices(args.devices, args.points)
        for d in devices:
            health.register(d.id, "memory")
    else:
        from bench.common import ROOT
        from drivers.modbus.device import ModbusDevice
        from drivers.modbus.tcp import ModbusTcpEndpoint
        from gateway.config.load import load_profile

        profile = load_profile(ROOT / "config" / "profiles" / "soil_probe.yaml")
        devices = []
        for e, ep in enumerate(farm.layout):
            endpoint = ModbusTcpEndpoint("127.0.0.1", ep["port"], timeout=1.0, clock=clock)
            endpoints.append(endpoint)
            for unit in ep["units"]:
                d = ModbusDevice(f"soil-{e}-{unit}", unit, profile, endpoint, max_read_registers=125, max_gap=8)
                devices.append(d)
                health.register(d.id, f"bus-{e}")

    uplink_task = asyncio.create_task(uplink.run(), name="uplink")
    pollers: list[asyncio.Task] = []
    out: dict = {}
    try:
        await asyncio.wait_for(uplink.connected.wait(), 10)
        pollers = [asyncio.create_task(DevicePoller(d, args.interval, accept, health, clock).run(), name=f"poll-{d.id}")
                   for d in devices]
        win = Window(broker, farm)

        def snap():
            c = outbox.counters["telemetry"]
            extra = {}
            if endpoints:
                extra = {"requests": sum(e.requests for e in endpoints), "errors": sum(e.errors for e in endpoints)}
            return win.snap(acked=uplink.acked_records["telemetry"], accepted=c.produced, polled=polled,
                            commits=outbox.commits, **extra)

        await asyncio.sleep(WARMUP)
        a = snap()
        commit_ms.clear()
        if profiler is not None:
            profiler.enable()
        await asyncio.sleep(args.seconds)
        if profiler is not None:
            profiler.disable()
        b = snap()
        out = Window.rates(a, b)
        if commit_ms:
            cm = sorted(commit_ms)
            out["commit_ms"] = {"p50": round(cm[len(cm) // 2], 1), "max": round(cm[-1], 1), "n": len(cm)}
        out["outbox_pending"] = outbox.counters["telemetry"].pending
        out["acked_total"] = uplink.acked_records["telemetry"]
        out["published_msgs"] = uplink.published["telemetry"]
        out["overruns"] = sum(st.overruns for st in health.devices.values())
        out["device_failures"] = sum(st.failures for st in health.devices.values())
        out["rss_mb"] = rss_mb()
        return out
    finally:
        stuck = await cancel_all(pollers)
        out["pollers_ignoring_first_cancel"] = stuck
        if stuck:
            log(f"note: {stuck} poller task(s) ignored their first cancel() and had to be cancelled again")
        try:
            await asyncio.wait_for(uplink.stop(timeout=1.0), 3)
        except Exception:
            pass
        uplink_task.cancel()
        await asyncio.gather(uplink_task, return_exceptions=True)
        await outbox.close()
        for e in endpoints:
            await e.close()


# -- baseline: raw aiosqlite + paho --------------------------------------------------------
async def run_baseline(args, broker: Broker, farm: ModbusFarm | None, workdir: Path) -> dict:
    import aiosqlite
    import orjson

    loop = asyncio.get_running_loop()
    path = str(workdir / "baseline.sqlite")
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute(f"PRAGMA synchronous={args.baseline_sync}")  # Outbox commits with FULL
    await db.execute("CREATE TABLE IF NOT EXISTS t (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, body BLOB NOT NULL)")
    rd = await aiosqlite.connect(path, isolation_level=None)

    st = {"polled": 0, "accepted": 0, "acked": 0, "commits": 0, "requests": 0, "errors": 0}
    buf: list[tuple[float, bytes]] = []
    acked_ranges: list[tuple[int, int]] = []
    inflight: dict[int, tuple[int, int, int]] = {}
    wake = asyncio.Event()
    dumps = orjson.dumps

    def body(ts, dev, name, value, unit):
        d = {"ts": round(ts, 3), "device": dev, "point": name, "value": value}
        if unit:
            d["unit"] = unit
        return dumps(d)

    # producers: same fake devices (memory) or raw pymodbus clients (modbus)
    async def produce_memory(dev: FakeDevice) -> None:
        next_at = time.monotonic()
        while True:
            ts = time.time()
            values = await dev.read_all()
            buf.extend((ts, body(ts, dev.id, p.name, v, p.unit)) for p, v in values)
            st["polled"] += len(values)
            next_at += args.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.monotonic()
                await asyncio.sleep(0)

    clients = []

    async def produce_modbus(port: int, units: list[int], e: int) -> None:
        from pymodbus.client import AsyncModbusTcpClient

        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0, reconnect_delay=0)
        clients.append(client)
        await client.connect()
        ids = {u: f"soil-{e}-{u}" for u in units}
        while True:
            started = time.monotonic()
            for u in units:
                ts = time.time()
                st["requests"] += 1
                try:
                    rr = await client.read_holding_registers(0, count=6, device_id=u)
                except Exception:
                    st["errors"] += 1
                    continue
                if rr.isError():
                    st["errors"] += 1
                    continue
                r = rr.registers
                t = r[1] - 65536 if r[1] & 0x8000 else r[1]
                wp = (r[4] << 16) | r[5]
                wp = wp - (1 << 32) if wp & 0x80000000 else wp
                dev = ids[u]
                buf.append((ts, body(ts, dev, "moisture", round(r[0] * 0.1, 10), "%")))
                buf.append((ts, body(ts, dev, "temperature", round(t * 0.1, 10), "degC")))
                buf.append((ts, body(ts, dev, "ec", float(r[2]), "uS/cm")))
                buf.append((ts, body(ts, dev, "water_potential", round(wp * 0.01, 10), "kPa")))
                st["polled"] += 4
            rest = args.interval - (time.monotonic() - started)
            await asyncio.sleep(rest if rest > 0 else 0)

    async def writer() -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL)
            rows = buf[:]
            del buf[:]
            acks = acked_ranges[:]
            del acked_ranges[:]
            if not rows and not acks:
                continue
            await db.execute("BEGIN IMMEDIATE")
            if rows:
                await db.executemany("INSERT INTO t (ts, body) VALUES (?, ?)", rows)
            if acks:
                await db.executemany("DELETE FROM t WHERE seq BETWEEN ? AND ?", acks)
            await db.execute("COMMIT")
            st["commits"] += 1
            st["accepted"] += len(rows)
            wake.set()

    client, glue = baseline_client("baseline-bench", INFLIGHT, inflight, acked_ranges, st, wake, loop)
    await glue.connect("127.0.0.1", broker.port)

    async def sender() -> None:
        cursor = 0
        topic = "canopy/v1/bench/gw-1/telemetry"
        while True:
            wake.clear()
            while len(inflight) < INFLIGHT:
                async with rd.execute("SELECT seq, body FROM t WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, BATCH)) as cur:
                    rows = await cur.fetchall()
                if not rows:
                    break
                info = client.publish(topic, compose("telemetry", rows), qos=1)
                inflight[info.mid] = (rows[0][0], rows[-1][0], len(rows))
                cursor = rows[-1][0]
            await wake.wait()

    tasks = [asyncio.create_task(writer()), asyncio.create_task(sender())]
    if args.mode == "memory":
        tasks += [asyncio.create_task(produce_memory(d)) for d in fake_devices(args.devices, args.points)]
    else:
        tasks += [asyncio.create_task(produce_modbus(ep["port"], ep["units"], e)) for e, ep in enumerate(farm.layout)]
    win = Window(broker, farm)

    def snap():
        extra = {"requests": st["requests"], "errors": st["errors"]} if args.mode == "modbus" else {}
        return win.snap(acked=st["acked"], accepted=st["accepted"], polled=st["polled"], commits=st["commits"], **extra)

    try:
        await asyncio.sleep(WARMUP)
        a = snap()
        await asyncio.sleep(args.seconds)
        b = snap()
        out = Window.rates(a, b)
        return out
    finally:
        await cancel_all(tasks)
        glue.close()
        for c in clients:
            c.close()
        await rd.close()
        await db.close()


# -- main ----------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/ingest.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--seconds", type=float, default=10.0, help="steady window (after a 2 s warm-up), per contender")
    p.add_argument("--mode", choices=("memory", "modbus"), default="memory")
    p.add_argument("--points", type=int, default=10, help="points per fake device (memory mode; modbus soil probes have 4)")
    p.add_argument("--interval", type=float, default=0.01, help="poll interval per device, seconds")
    p.add_argument("--endpoints", type=int, default=0,
                   help="modbus mode: Modbus TCP endpoints the devices are spread over (default: one per 25 devices)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--baseline-sync", choices=("FULL", "NORMAL"), default="FULL",
                   help="baseline's PRAGMA synchronous (the Outbox commits with FULL)")
    p.add_argument("--cprofile", metavar="FILE", help="write cProfile stats of Canopy's steady window to FILE")
    p.add_argument("--json-only", action="store_true", help="no progress on stderr")
    a = p.parse_args(argv)
    if a.devices < 1 or a.seconds <= 0 or a.points < 1 or a.interval <= 0:
        p.error("devices, seconds, points and interval must be positive")
    if a.mode == "modbus":
        a.points = 4
        if a.endpoints <= 0:
            a.endpoints = max(1, math.ceil(a.devices / 25))
    return a


async def run_all(args, broker: Broker, farm: ModbusFarm | None, workdir: Path, say) -> dict:
    profiler = None
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile()
    say(f"canopy: {args.mode}, {args.devices} devices x {args.points} points every {args.interval}s, "
        f"{WARMUP:.0f}+{args.seconds:g} s")
    canopy = await run_canopy(args, broker, farm, workdir, profiler)
    say(f"canopy: {canopy['readings_per_s']:.0f} readings/s acknowledged, cpu {canopy['cpu_pct']}%, "
        f"backlog {canopy['pending_at_end']}")
    if profiler is not None:
        profiler.dump_stats(args.cprofile)
        say(f"cProfile stats written to {args.cprofile}")
    gc.collect()
    baseline = None
    if not args.skip_baseline:
        say("baseline: raw aiosqlite + paho, same producers")
        baseline = await run_baseline(args, broker, farm, workdir)
        say(f"baseline: {baseline['readings_per_s']:.0f} readings/s acknowledged, cpu {baseline['cpu_pct']}%")
    return {"canopy": canopy, "baseline": baseline}


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet = args.json_only

    def say(msg: str) -> None:
        if not quiet:
            log(msg)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    available = cpus()
    pinned = pin_self(0) if (os.cpu_count() or 1) >= 2 else False
    helpers = other_cpus(0)
    workdir = Path(tempfile.mkdtemp(prefix="canopy-bench-"))
    broker = farm = None
    children: list = []

    def watchdog() -> None:  # a hung run must not leave children behind or block forever
        log("watchdog: run took too long; stopping children and exiting")
        for ch in children:
            ch.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        os._exit(3)

    limit = 2 * (WARMUP + args.seconds) * (1 if args.skip_baseline else 2) + 60
    timer = threading.Timer(limit, watchdog)
    timer.daemon = True
    timer.start()
    load_before = os.getloadavg()
    try:
        broker = Broker(workdir, helpers).start()
        children.append(broker)
        say(f"mosquitto on 127.0.0.1:{broker.port} (cpu {sorted(helpers)}), measured process on cpu "
            f"{0 if pinned else sorted(available)}")
        if args.mode == "modbus":
            farm = ModbusFarm(args.devices, args.endpoints, helpers).start()
            children.append(farm)
            say(f"modbus simulator: {args.devices} soil probes on {len(farm.layout)} endpoint(s), pid {farm.proc.pid}")
        res = asyncio.run(run_all(args, broker, farm, workdir, say))
    finally:
        timer.cancel()
        if farm is not None:
            farm.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    c, b = res["canopy"], res["baseline"]
    out = {
        "bench": "ingest",
        "mode": args.mode,
        "devices": args.devices,
        "points_per_device": args.points,
        "seconds": args.seconds,
        "interval_s": args.interval,
        "offered_readings_per_s": round(args.devices * args.points / args.interval),
        "readings_per_s": c["readings_per_s"],
        "baseline_readings_per_s": b["readings_per_s"] if b else None,
        "ratio": round(c["readings_per_s"] / b["readings_per_s"], 3) if b and b["readings_per_s"] else None,
        # baseline CPU per reading / Canopy CPU per reading: 1.0 = no framework overhead
        "cpu_efficiency_ratio": round(b["cpu_us_per_reading"] / c["cpu_us_per_reading"], 3)
        if b and c["cpu_us_per_reading"] else None,
        "commits_per_s": c["commits_per_s"],
        "pending_at_end": c["pending_at_end"],
        # CPU time other processes took on the measured core during each window (shared machine)
        "core0_others_pct": [c.get("core0_others_pct"), b.get("core0_others_pct") if b else None],
        "rss_mb": c["rss_mb"]["peak"],
        "rss_current_mb": c["rss_mb"]["current"],
        "machine": {**machine(), "pinned_core": 0 if pinned else None,
                    "loadavg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
        "target_readings_per_s": TARGET,
        "canopy": {k: v for k, v in c.items() if k != "rss_mb"},
        "baseline": b,
    }
    if args.mode == "modbus":
        out["endpoints"] = args.endpoints
        out["modbus_requests_per_s"] = c.get("modbus_requests_per_s")
    print(json.dumps(out, separators=(",", ":")), flush=True)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stderr.flush()
        os._exit(0)  # a worker thread (e.g. an unclosed aiosqlite connection) must not hang the exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
