#!/usr/bin/env python3
"""Delivery-contract bench: alarms behind a 1,000,000-row backlog, drain rate, commits/s, RSS in an outage.

Prints exactly one JSON line on stdout (progress goes to stderr).  Issue 4's
``bench/backlog.py`` acceptance point; targets from docs/PRODUCT.md:

  alarm     1,000,000 pending telemetry rows (``reading_body`` JSON, written straight
            into the outbox schema, counters included, then opened with ``Outbox``),
            a real ``Uplink`` (default settings, default ``max_inflight_bytes``) to
            mosquitto through ``simulator.netfault`` throttled to ``--link-bytes-per-s``
            (1 MB/s) so the backlog drains slowly; meanwhile ``--alarms`` alarms are
            raised at random moments (``--alarm-gap-ms`` apart) with
            ``outbox.put("alarm", [body], wait_commit=True)``.  Latency = from that
            call ("rule firing") to the PUBACK of the message that carried the alarm
            (``outbox.ack`` of its seq, which ``Uplink._on_publish`` calls; the seq of
            each alarm is learnt from the message the uplink composes).  Also reported:
            the split commit / fire->publish / publish->PUBACK and the event/telemetry
            bytes in flight (what an alarm queues behind), sampled every 10 ms.
            Target p99 < 100 ms.
  drain     the same backlog, no proxy: Canopy (Outbox + Uplink, defaults) drains it
            to PUBACK + delete; then, in the same run and on the same copy of the file,
            the minimal hand-written equivalent: aiosqlite reading 500-row batches, one
            plain paho QoS 1 client with the same in-flight window (32), range deletes
            committed every 0.5 s after ``on_publish``.  Target >= 50,000 readings/s.
  commits   ``--ingest-rate`` readings/s (20,000) for ``--ingest-seconds`` (10) from fake
            devices through real ``DevicePoller`` s into ``Outbox.put`` (as
            ``runtime.Gateway._accept_readings``), uplink connected: ``outbox.commits``/s.
            Target <= 2/s.
  outage    ``--outage-rate`` readings/s (2,000) plus an event per second and an alarm
            every 10 s; after ``--outage-warmup`` s mosquitto is stopped for
            ``--outage-seconds`` (default 60; the acceptance asks 600:
            ``--outage-seconds 600``) while RSS is sampled every second; then mosquitto
            is restarted, the backlog must drain, and the counters must reconcile
            (produced == acknowledged + pending + expired + dropped, per lane, in memory
            and in the file).  Target: RSS flat within +/-10 %.

The measured process is pinned to core 0, mosquitto and the proxy to the other
core(s).  Every child is started by this script and stopped in ``finally``;
everything listens on 127.0.0.1.  The outage phase runs first so its RSS is
not coloured by the 1,000,000-row phases.

    python bench/backlog.py                       # default, ~3-4 minutes
    python bench/backlog.py --outage-seconds 600  # the acceptance's 10-minute outage
    python bench/backlog.py --phases alarm --link-bytes-per-s 250000
    python bench/backlog.py --phases alarm --link-delay-ms 100   # + 200 ms RTT (a second proxy in front)
    python bench/backlog.py --phases drain --cprofile /tmp/drain.prof
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    Broker,
    NetFault,
    baseline_client,
    cpus,
    current_rss_bytes,
    log,
    machine,
    other_cpus,
    percentile,
    pin_self,
)
from bench.ingest import compose as baseline_compose  # noqa: E402
from bench.ingest import fake_devices  # noqa: E402

BATCH = 500  # records per message (Uplink default batch_max_records)
INFLIGHT = 32  # QoS 1 window (BrokerConfig default max_inflight)
COMMIT_INTERVAL = 0.5  # StoreConfig default
PHASES = ("outage", "commits", "alarm", "drain")
TARGETS = {"alarm_p99_ms": 100.0, "drain_readings_per_s": 50_000, "commits_per_s": 2.0, "rss_ratio": 1.10}
POINTS = [("moisture", "%"), ("temperature", "degC"), ("ec", "uS/cm"), ("water_potential", "kPa"),
          ("humidity", "%"), ("pressure", "hPa"), ("rain", "mm"), ("flow", "m3"), ("battery", "V"), ("level", "")]


def _r(x: float | None, nd: int = 1):
    return None if x is None else round(x, nd)


# -- the backlog file ------------------------------------------------------------------------
def build_backlog(path: Path, rows: int, seed: int) -> dict:
    """Write `rows` pending telemetry rows (real reading bodies) into the outbox schema, counters included."""
    from core.records import Reading, reading_body
    from gateway.outbox.schema import SCHEMA, VERSION

    rng = random.Random(seed)
    t0 = time.perf_counter()
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=OFF")
        for stmt in SCHEMA:
            con.execute(stmt)
        con.execute(f"PRAGMA user_version={VERSION}")  # today's layout: nothing to migrate on open
        devices = [f"soil-{i:04d}" for i in range(200)]
        per_poll = len(devices) * len(POINTS)
        start = time.time() - 3600.0  # an hour of backlog, well inside the telemetry TTL
        step = 3600.0 / max(1, rows // per_poll)
        base_values = [rng.uniform(5, 60) for _ in range(per_poll)]
        con.execute("BEGIN")
        chunk = 50_000
        size = 0
        for lo in range(0, rows, chunk):
            batch = []
            for i in range(lo, min(rows, lo + chunk)):
                poll, k = divmod(i, per_poll)
                dev, (point, unit) = devices[k // len(POINTS)], POINTS[k % len(POINTS)]
                value = round(base_values[k] + rng.uniform(-0.5, 0.5), 1)
                body = reading_body(Reading(start + poll * step + k * 1e-4, dev, point, value, unit))
                size += len(body)
                batch.append((start + poll * step, body))
            con.executemany("INSERT INTO telemetry (ts, body) VALUES (?, ?)", batch)
        con.execute("INSERT OR REPLACE INTO counters (lane, name, value) VALUES ('telemetry', 'produced', ?)", (rows,))
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return {"rows": rows, "body_bytes_avg": round(size / max(1, rows), 1), "file_mb": round(path.stat().st_size / 2**20, 1),
            "build_s": round(time.perf_counter() - t0, 2)}


def file_counters(path: Path) -> dict:
    """Counters and row counts read straight from a closed outbox file: do they reconcile per lane?"""
    from core.records import LANES

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for lane in LANES:
            vals = dict(con.execute("SELECT name, value FROM counters WHERE lane=?", (lane,)).fetchall())
            pending = con.execute(f"SELECT count(*) FROM {lane}").fetchone()[0]
            dropped = sum(v for k, v in vals.items() if k.startswith("dropped:"))
            produced, acked, expired = vals.get("produced", 0), vals.get("acknowledged", 0), vals.get("expired", 0)
            out[lane] = {"produced": produced, "acknowledged": acked, "pending": pending, "expired": expired,
                         "dropped": dropped, "reconciles": produced == acked + pending + expired + dropped}
        return out
    finally:
        con.close()


def memory_reconciles(outbox) -> bool:
    return all(c.reconciles() for c in outbox.counters.values())


# -- Canopy pieces -----------------------------------------------------------------------------
def make_uplink(outbox, port: int, args, **kw):
    from core.protocol.topics import Topics
    from gateway.config.broker import BrokerConfig
    from gateway.uplink.uplink import Uplink

    broker = BrokerConfig(host="127.0.0.1", port=port, client_id="canopy-backlog-bench", backoff_max=args.backoff_max)
    uplink = Uplink(broker, Topics("bench", "gw-1"), outbox, state=lambda: {}, **kw)
    outbox.on_commit.append(uplink.committed)  # as runtime.Gateway.start wires it
    return uplink


async def stop_uplink(uplink, task: asyncio.Task | None) -> None:
    try:
        await asyncio.wait_for(uplink.stop(timeout=1.0), 3)
    except Exception:
        pass
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def wait_until(pred, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


def cpu_now() -> float:
    t = os.times()
    return t.user + t.system


# -- phase: alarm latency behind the backlog on a slow link -----------------------------------
async def phase_alarm(args, broker: Broker, backlog: Path, workdir: Path, helpers: set[int], say) -> dict:
    import orjson

    from core.records import event_body
    from gateway.outbox.store import Outbox

    path = workdir / "alarm.sqlite"
    shutil.copyfile(backlog, path)
    outbox = Outbox(str(path), commit_interval=COMMIT_INTERVAL, policy=POLICY[0])
    t = time.perf_counter()
    await outbox.open()
    open_s = time.perf_counter() - t
    tc = outbox.counters["telemetry"]
    if tc.pending != args.rows or not tc.reconciles():
        raise RuntimeError(f"backlog file did not open as {args.rows} pending rows: {tc.as_dict()}")
    proxy = NetFault(broker.port, helpers).start()
    proxy.throttle(args.link_bytes_per_s)
    delay = None
    if args.link_delay_ms > 0:  # a WAN-like link: gateway -> delay proxy -> throttle proxy -> broker
        delay = NetFault(proxy.port, helpers).start()
        delay.command(f"delay {args.link_delay_ms / 1000}")
    kw = {"max_inflight_bytes": args.inflight_bytes} if args.inflight_bytes else {}
    uplink = make_uplink(outbox, (delay or proxy).port, args, **kw)
    say(f"alarm: {args.rows} rows pending, link throttled to {args.link_bytes_per_s} B/s"
        f"{f' + {args.link_delay_ms:g} ms each way' if delay else ''}, uplink max_inflight_bytes={uplink.max_inflight_bytes}")

    fired: dict[int, float] = {}
    committed: dict[int, float] = {}
    published: dict[int, float] = {}
    acked: dict[int, float] = {}
    seq_to_k: dict[int, int] = {}
    orig_publish, orig_ack = uplink._publish, outbox.ack

    def publish_hook(client, lane, rows, memory_epoch=None):
        last = orig_publish(client, lane, rows, memory_epoch)
        if lane == "alarm" and last is not None:
            now = time.perf_counter()
            for seq, body, *_ in rows:
                if seq > last:
                    break  # not in this message: it goes in a later one
                k = orjson.loads(body).get("n")
                if isinstance(k, int):
                    seq_to_k[seq] = k
                    published.setdefault(k, now)
        return last

    def ack_hook(lane, first, last):
        if lane == "alarm":
            now = time.perf_counter()
            for seq in range(first, last + 1):
                k = seq_to_k.get(seq)
                if k is not None:
                    acked.setdefault(k, now)
        orig_ack(lane, first, last)

    uplink._publish = publish_hook
    outbox.ack = ack_hook
    task = asyncio.create_task(uplink.run(), name="uplink")
    rng = random.Random(args.seed)
    fire_tasks: list[asyncio.Task] = []
    try:
        if not await wait_until(uplink.connected.is_set, 15):
            raise RuntimeError(f"uplink did not connect through the proxy: {uplink.last_error}")
        await asyncio.sleep(args.alarm_warmup)  # the pipe is full of telemetry by now
        a_t, a_acked, a_stats = time.perf_counter(), uplink.acked_records["telemetry"], proxy.stats()
        inflight_samples: list[int] = []

        async def watch_inflight() -> None:  # what an alarm has to queue behind, sampled every 10 ms
            while True:
                inflight_samples.append(uplink._inflight_bytes)
                await asyncio.sleep(0.01)

        fire_tasks.append(asyncio.create_task(watch_inflight()))

        async def fire(k: int) -> None:
            fired[k] = time.perf_counter()
            body = event_body(time.time(), "alarm.bench", severity="critical", rule="bench", n=k)
            await outbox.put("alarm", [body], wait_commit=True)
            committed[k] = time.perf_counter()

        lo, hi = args.alarm_gap_ms
        for k in range(args.alarms):
            await asyncio.sleep(rng.uniform(lo, hi) / 1000)
            fire_tasks.append(asyncio.create_task(fire(k)))
        await wait_until(lambda: len(acked) >= args.alarms, args.alarm_timeout, step=0.05)
        b_t, b_acked, b_stats = time.perf_counter(), uplink.acked_records["telemetry"], proxy.stats()
        dt = b_t - a_t
        lat = [1000 * (acked[k] - fired[k]) for k in acked]
        commit = [1000 * (committed[k] - fired[k]) for k in committed]
        to_pub = [1000 * (published[k] - fired[k]) for k in published]
        wire = [1000 * (acked[k] - published[k]) for k in acked if k in published]

        def dist(v):
            return {"p50": _r(percentile(v, 50)), "p99": _r(percentile(v, 99)), "max": _r(max(v) if v else None)}

        res = {
            "alarm_latency_ms": {**dist(lat), "n": len(lat), "raised": args.alarms, "missing": args.alarms - len(lat)},
            "breakdown_ms": {"commit": dist(commit), "fire_to_publish": dist(to_pub), "publish_to_puback": dist(wire)},
            "max_inflight_bytes": uplink.max_inflight_bytes,
            "inflight_bytes_sampled": {"mean": round(sum(inflight_samples) / max(1, len(inflight_samples))),
                                       "max": max(inflight_samples, default=0)},
            "link_bytes_per_s": args.link_bytes_per_s,
            "link_delay_ms_each_way": args.link_delay_ms,
            "link_used_up_bytes_per_s": round((b_stats["bytes_up"] - a_stats["bytes_up"]) / dt),
            "telemetry_drained_per_s": round((b_acked - a_acked) / dt),
            "proxy_buffered_up_at_end": b_stats["buffered_up"],
            "window_s": round(dt, 2),
            "open_s": round(open_s, 2),
        }
        say(f"alarm: p50 {res['alarm_latency_ms']['p50']} ms, p99 {res['alarm_latency_ms']['p99']} ms, "
            f"max {res['alarm_latency_ms']['max']} ms (n={len(lat)}); telemetry {res['telemetry_drained_per_s']}/s over the link")
        return res
    finally:
        for ft in fire_tasks:
            ft.cancel()
        await asyncio.gather(*fire_tasks, return_exceptions=True)
        await stop_uplink(uplink, task)
        if delay is not None:
            delay.stop()
        proxy.stop()
        await outbox.close()
        fc = file_counters(path)
        recon = memory_reconciles(outbox) and all(v["reconciles"] for v in fc.values())
        RECONCILE["alarm"] = recon
        path.unlink(missing_ok=True)


# -- phase: drain with a free link, Canopy and the hand-written baseline ----------------------
async def phase_drain_canopy(args, broker: Broker, backlog: Path, workdir: Path, say) -> dict:
    from gateway.outbox.store import Outbox

    path = workdir / "drain.sqlite"
    shutil.copyfile(backlog, path)
    outbox = Outbox(str(path), commit_interval=COMMIT_INTERVAL, policy=POLICY[0])
    await outbox.open()
    kw = {"max_inflight_bytes": args.inflight_bytes} if args.inflight_bytes else {}
    uplink = make_uplink(outbox, broker.port, args, **kw)
    c = outbox.counters["telemetry"]
    profiler = None
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile()
    task = asyncio.create_task(uplink.run(), name="uplink")
    try:
        if not await wait_until(uplink.connected.is_set, 15):
            raise RuntimeError(f"uplink did not connect: {uplink.last_error}")
        t0, cpu0, b0 = time.perf_counter(), cpu_now(), broker.cpu_seconds()
        if profiler:
            profiler.enable()
        t_acked = None
        deadline = time.monotonic() + args.drain_timeout
        while c.pending > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if t_acked is None and uplink.acked_records["telemetry"] >= args.rows:
                t_acked = time.perf_counter()
        if profiler:
            profiler.disable()
        t1, cpu1, b1 = time.perf_counter(), cpu_now(), broker.cpu_seconds()
        drained = args.rows - c.pending
        res = {"readings_per_s": round(drained / (t1 - t0)), "seconds": round(t1 - t0, 2), "drained": drained,
               "puback_readings_per_s": round(args.rows / (t_acked - t0)) if t_acked else None,
               "messages": uplink.published["telemetry"], "commits": outbox.commits,
               "max_inflight_bytes": uplink.max_inflight_bytes,
               "cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1), "broker_cpu_pct": round(100 * (b1 - b0) / (t1 - t0), 1)}
        say(f"drain canopy: {res['readings_per_s']} readings/s to PUBACK+delete ({res['seconds']} s, cpu {res['cpu_pct']}%)")
        if profiler:
            import io
            import pstats

            profiler.dump_stats(args.cprofile)
            s = io.StringIO()
            pstats.Stats(profiler, stream=s).sort_stats("tottime").print_stats(args.cprofile_top)
            say(f"cProfile of the drain written to {args.cprofile}; top by tottime:\n{s.getvalue()}")
        return res
    finally:
        await stop_uplink(uplink, task)
        await outbox.close()
        fc = file_counters(path)
        RECONCILE["drain"] = memory_reconciles(outbox) and all(v["reconciles"] for v in fc.values())
        path.unlink(missing_ok=True)


async def phase_drain_baseline(args, broker: Broker, backlog: Path, workdir: Path, say) -> dict:
    """The minimal hand-written equivalent: aiosqlite batches of 500 + one paho QoS 1 client, delete after PUBACK."""
    import aiosqlite

    loop = asyncio.get_running_loop()
    path = workdir / "baseline.sqlite"
    shutil.copyfile(backlog, path)
    db = await aiosqlite.connect(str(path), isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=FULL")  # the same durability as the outbox
    rd = await aiosqlite.connect(str(path), isolation_level=None)
    inflight: dict[int, tuple[int, int, int]] = {}
    acked_ranges: list[tuple[int, int]] = []
    st = {"acked": 0, "deleted": 0, "messages": 0}
    wake = asyncio.Event()

    client, glue = baseline_client("baseline-backlog", INFLIGHT, inflight, acked_ranges, st, wake, loop)
    tasks: list[asyncio.Task] = []
    try:
        await glue.connect("127.0.0.1", broker.port)

        async def sender() -> None:
            cursor = 0
            topic = "canopy/v1/bench/gw-1/telemetry"
            while True:
                wake.clear()
                while len(inflight) < INFLIGHT:
                    async with rd.execute("SELECT seq, body FROM telemetry WHERE seq > ? ORDER BY seq LIMIT ?",
                                          (cursor, BATCH)) as cur:
                        rows = await cur.fetchall()
                    if not rows:
                        break
                    info = client.publish(topic, baseline_compose("telemetry", rows), qos=1)
                    inflight[info.mid] = (rows[0][0], rows[-1][0], len(rows))
                    st["messages"] += 1
                    cursor = rows[-1][0]
                await wake.wait()

        async def deleter() -> None:
            while True:
                await asyncio.sleep(COMMIT_INTERVAL)
                if not acked_ranges:
                    continue
                acks = acked_ranges[:]
                del acked_ranges[:]
                await db.execute("BEGIN IMMEDIATE")
                before = db.total_changes
                await db.executemany("DELETE FROM telemetry WHERE seq BETWEEN ? AND ?", acks)
                await db.execute("COMMIT")
                st["deleted"] += db.total_changes - before

        t0, cpu0, b0 = time.perf_counter(), cpu_now(), broker.cpu_seconds()
        tasks = [asyncio.create_task(sender()), asyncio.create_task(deleter())]
        t_acked = None
        deadline = time.monotonic() + args.drain_timeout
        while st["deleted"] < args.rows and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if t_acked is None and st["acked"] >= args.rows:
                t_acked = time.perf_counter()
        t1, cpu1, b1 = time.perf_counter(), cpu_now(), broker.cpu_seconds()
        res = {"readings_per_s": round(st["deleted"] / (t1 - t0)), "seconds": round(t1 - t0, 2), "drained": st["deleted"],
               "puback_readings_per_s": round(args.rows / (t_acked - t0)) if t_acked else None,
               "messages": st["messages"], "cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
               "broker_cpu_pct": round(100 * (b1 - b0) / (t1 - t0), 1)}
        say(f"drain baseline: {res['readings_per_s']} readings/s to PUBACK+delete ({res['seconds']} s, cpu {res['cpu_pct']}%)")
        return res
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        glue.close()
        await rd.close()
        await db.close()
        path.unlink(missing_ok=True)


# -- steady ingest helpers ----------------------------------------------------------------------
def ingest_shape(rate: float, points: int = 10) -> tuple[int, float]:
    """(devices, interval) giving `rate` readings/s with `points` per device and polls every 0.1 s or slower."""
    interval = 0.1
    devices = max(1, round(rate * interval / points))
    return devices, devices * points / rate


def start_pollers(outbox, devices: int, interval: float, counter: dict) -> list[asyncio.Task]:
    from core.clock import Clock
    from core.records import reading_body
    from gateway.poll.health import Health
    from gateway.poll.poller import DevicePoller

    clock = Clock()
    health = Health()

    async def accept(readings) -> None:  # runtime.Gateway._accept_readings
        counter["polled"] += len(readings)
        await outbox.put("telemetry", [reading_body(r) for r in readings], ts=readings[0].ts if readings else None)

    tasks = []
    for d in fake_devices(devices, 10):
        health.register(d.id, "memory")
        tasks.append(asyncio.create_task(DevicePoller(d, interval, accept, health, clock).run(), name=f"poll-{d.id}"))
    return tasks


async def cancel_all(tasks: list[asyncio.Task]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def settle(outbox, uplink, timeout: float) -> bool:
    """Commit everything queued, then wait until the broker has it all and the deletes are committed."""
    await outbox.flush()
    ok = await wait_until(lambda: not uplink._inflight and all(c.pending == 0 for c in outbox.counters.values()),
                          timeout, step=0.05)
    await outbox.flush()
    return ok


# -- phase: commits per second during steady ingest -----------------------------------------------
async def phase_commits(args, broker: Broker, workdir: Path, say) -> dict:
    from gateway.outbox.store import Outbox

    path = workdir / "commits.sqlite"
    outbox = Outbox(str(path), commit_interval=COMMIT_INTERVAL, policy=POLICY[0])
    await outbox.open()
    uplink = make_uplink(outbox, broker.port, args)
    task = asyncio.create_task(uplink.run(), name="uplink")
    counter = {"polled": 0}
    pollers: list[asyncio.Task] = []
    devices, interval = ingest_shape(args.ingest_rate)
    try:
        if not await wait_until(uplink.connected.is_set, 15):
            raise RuntimeError(f"uplink did not connect: {uplink.last_error}")
        say(f"commits: {devices} devices x 10 points every {interval:g} s = {args.ingest_rate:g} readings/s "
            f"for 2+{args.ingest_seconds:g} s")
        pollers = start_pollers(outbox, devices, interval, counter)
        c = outbox.counters["telemetry"]
        await asyncio.sleep(2.0)
        a = (time.perf_counter(), outbox.commits, c.produced, uplink.acked_records["telemetry"], counter["polled"], cpu_now())
        await asyncio.sleep(args.ingest_seconds)
        b = (time.perf_counter(), outbox.commits, c.produced, uplink.acked_records["telemetry"], counter["polled"], cpu_now())
        dt = b[0] - a[0]
        res = {"commits_per_s": round((b[1] - a[1]) / dt, 2), "ingest_rate": args.ingest_rate,
               "polled_per_s": round((b[4] - a[4]) / dt), "accepted_per_s": round((b[2] - a[2]) / dt),
               "acked_per_s": round((b[3] - a[3]) / dt), "pending_at_end": c.pending,
               "cpu_pct": round(100 * (b[5] - a[5]) / dt, 1), "window_s": round(dt, 2)}
        say(f"commits: {res['commits_per_s']}/s at {res['accepted_per_s']} readings/s accepted, {res['acked_per_s']}/s acknowledged")
        await cancel_all(pollers)
        pollers = []
        res["settled"] = await settle(outbox, uplink, 30)
        return res
    finally:
        await cancel_all(pollers)
        await stop_uplink(uplink, task)
        await outbox.close()
        fc = file_counters(path)
        RECONCILE["commits"] = memory_reconciles(outbox) and all(v["reconciles"] for v in fc.values())


# -- phase: RSS across a broker outage, then recovery and reconciliation ----------------------------
async def phase_outage(args, broker: Broker, workdir: Path, say) -> dict:
    from core.records import event_body
    from gateway.outbox.store import Outbox

    path = workdir / "outage.sqlite"
    outbox = Outbox(str(path), commit_interval=COMMIT_INTERVAL, policy=POLICY[0])
    await outbox.open()
    uplink = make_uplink(outbox, broker.port, args)
    task = asyncio.create_task(uplink.run(), name="uplink")
    counter = {"polled": 0, "events": 0, "alarms": 0}
    devices, interval = ingest_shape(args.outage_rate)
    samples: list[tuple[float, int]] = []
    side: list[asyncio.Task] = []
    pollers: list[asyncio.Task] = []

    async def sampler() -> None:
        t0 = time.monotonic()
        while True:
            samples.append((time.monotonic() - t0, current_rss_bytes()))
            await asyncio.sleep(1.0)

    async def events() -> None:  # device status changes: one event a second
        n = 0
        while True:
            await asyncio.sleep(1.0)
            n += 1
            await outbox.put("event", [event_body(time.time(), "device.status", device=f"dev-{n % 20:04d}", status="ok", n=n)])
            counter["events"] += 1

    async def alarms() -> None:  # a safety alarm every 10 s, durably committed
        n = 0
        while True:
            await asyncio.sleep(10.0)
            n += 1
            await outbox.put("alarm", [event_body(time.time(), "alarm.bench", severity="critical", n=n)], wait_commit=True)
            counter["alarms"] += 1

    def rss_at(t: float) -> int:
        return min(samples, key=lambda s: abs(s[0] - t))[1]

    try:
        if not await wait_until(uplink.connected.is_set, 15):
            raise RuntimeError(f"uplink did not connect: {uplink.last_error}")
        say(f"outage: {devices} devices x 10 points every {interval:g} s = {args.outage_rate:g} readings/s, "
            f"+1 event/s, +1 alarm/10 s; warm-up {args.outage_warmup:g} s, then mosquitto down {args.outage_seconds:g} s")
        side = [asyncio.create_task(sampler()), asyncio.create_task(events()), asyncio.create_task(alarms())]
        pollers = start_pollers(outbox, devices, interval, counter)
        t_start = time.monotonic()
        await asyncio.sleep(args.outage_warmup)
        gc.collect()
        t_down = time.monotonic() - t_start
        rss_start = current_rss_bytes()
        broker.stop()
        say(f"outage: mosquitto stopped, RSS {rss_start / 2**20:.1f} MB")
        next_report = time.monotonic() + 30
        end = time.monotonic() + args.outage_seconds
        while time.monotonic() < end:
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
            if time.monotonic() >= next_report:
                next_report += 30
                say(f"outage: {time.monotonic() - (t_start + t_down):.0f} s down, RSS {current_rss_bytes() / 2**20:.1f} MB, "
                    f"telemetry pending {outbox.counters['telemetry'].pending}")
        rss_end = current_rss_bytes()
        t_up = time.monotonic() - t_start
        during = [r for t, r in samples if t_down <= t <= t_up] + [rss_start, rss_end]
        pending_peak = outbox.counters["telemetry"].pending
        broker.start()
        t_restart = time.monotonic()
        say(f"outage: mosquitto restarted, RSS {rss_end / 2**20:.1f} MB, {pending_peak} telemetry rows pending")
        reconnected = await wait_until(uplink.connected.is_set, args.backoff_max * 1.6 + 15, step=0.05)
        t_conn = time.monotonic()
        # the backlog has drained once what is pending is no more than ~1 s of ingest
        drained = reconnected and await wait_until(lambda: outbox.counters["telemetry"].pending <= args.outage_rate,
                                                   args.drain_timeout, step=0.05)
        t_drained = time.monotonic()
        await cancel_all(pollers + side[1:])
        pollers = []
        settled = await settle(outbox, uplink, 60)
        rss_after = current_rss_bytes()
        warm = [r for t, r in samples if 5.0 <= t < t_down] or [rss_start]
        res = {
            "rss_mb": {"start": _r(rss_start / 2**20), "end": _r(rss_end / 2**20), "max": _r(max(during) / 2**20),
                       "min": _r(min(during) / 2**20), "warmup_max": _r(max(warm) / 2**20),
                       "after_recovery": _r(rss_after / 2**20)},
            "rss_ratio": round(max(during) / rss_start, 3),
            "rss_end_ratio": round(rss_end / rss_start, 3),
            "outage_seconds": args.outage_seconds,
            "outage_rate": args.outage_rate,
            "pending_at_restart": pending_peak,
            "reconnect_s": round(t_conn - t_restart, 2) if reconnected else None,
            "drain_after_restart_s": round(t_drained - t_conn, 2) if drained else None,
            "backlog_drained": bool(drained and settled),
            "events": counter["events"], "alarms": counter["alarms"], "connects": uplink.connects,
        }
        say(f"outage: RSS start {res['rss_mb']['start']} MB, max {res['rss_mb']['max']} MB, end {res['rss_mb']['end']} MB "
            f"(ratio {res['rss_ratio']}); reconnect {res['reconnect_s']} s, drained in {res['drain_after_restart_s']} s")
        return res
    finally:
        await cancel_all(pollers + side)
        await stop_uplink(uplink, task)
        await outbox.close()
        fc = file_counters(path)
        ok = memory_reconciles(outbox) and all(v["reconciles"] for v in fc.values())
        RECONCILE["outage"] = ok
        OUTAGE_COUNTERS.update(fc)


RECONCILE: dict[str, bool] = {}
OUTAGE_COUNTERS: dict[str, dict] = {}


# -- main ------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/backlog.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--rows", type=int, default=1_000_000, help="pending telemetry rows in the backlog")
    p.add_argument("--link-bytes-per-s", type=int, default=1_000_000, help="proxy throttle per direction (alarm phase)")
    p.add_argument("--link-delay-ms", type=float, default=0.0,
                   help="also delay every chunk this long each way (a second proxy in front): a WAN-like link")
    p.add_argument("--alarms", type=int, default=200)
    p.add_argument("--alarm-gap-ms", type=float, nargs=2, default=(50.0, 100.0), metavar=("MIN", "MAX"),
                   help="random gap between alarms")
    p.add_argument("--alarm-warmup", type=float, default=3.0, help="seconds of backlog drain before the first alarm")
    p.add_argument("--alarm-timeout", type=float, default=60.0, help="seconds to wait for the last alarm's PUBACK")
    p.add_argument("--inflight-bytes", type=int, default=0,
                   help="override Uplink max_inflight_bytes in the alarm and drain phases (default: the Uplink's default)")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--ingest-rate", type=float, default=20_000, help="readings/s in the commits phase")
    p.add_argument("--ingest-seconds", type=float, default=10.0)
    p.add_argument("--outage-seconds", type=float, default=60.0, help="broker outage (acceptance: 600)")
    p.add_argument("--outage-rate", type=float, default=2_000, help="readings/s during the outage phase")
    p.add_argument("--outage-warmup", type=float, default=15.0, help="seconds of ingest before the broker is stopped")
    p.add_argument("--backoff-max", type=float, default=5.0, help="uplink reconnect backoff cap (config default is 60)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--retain-for", type=float, default=None,
                   help="store.retain_for in seconds (default: the product's, 6 h; 0: acknowledged rows are deleted, "
                        "as before replay existed)")
    p.add_argument("--cprofile", metavar="FILE", help="cProfile the Canopy drain, write stats to FILE, top to stderr")
    p.add_argument("--cprofile-top", type=int, default=25)
    p.add_argument("--json-only", action="store_true", help="no progress on stderr")
    a = p.parse_args(argv)
    a.phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    bad = [x for x in a.phases if x not in PHASES]
    if bad:
        p.error(f"unknown phase(s) {bad}; choose from {PHASES}")
    if a.rows < BATCH or a.alarms < 1 or a.link_bytes_per_s <= 0 or a.outage_seconds <= 0 or a.ingest_rate <= 0:
        p.error("rows >= 500 and alarms, link, outage seconds and ingest rate must be positive")
    return a


async def run_phases(args, broker: Broker, workdir: Path, helpers: set[int], say) -> dict:
    out: dict = {}
    if "outage" in args.phases:
        out["outage"] = await phase_outage(args, broker, workdir, say)
        gc.collect()
    if "commits" in args.phases:
        out["commits"] = await phase_commits(args, broker, workdir, say)
        gc.collect()
    if "alarm" in args.phases or "drain" in args.phases:
        backlog = workdir / "backlog.sqlite"
        say(f"building a {args.rows}-row telemetry backlog")
        out["backlog"] = await asyncio.to_thread(build_backlog, backlog, args.rows, args.seed)
        say(f"backlog: {out['backlog']}")
        if "alarm" in args.phases:
            out["alarm"] = await phase_alarm(args, broker, backlog, workdir, helpers, say)
            gc.collect()
        if "drain" in args.phases:
            out["drain"] = await phase_drain_canopy(args, broker, backlog, workdir, say)
            gc.collect()
            out["baseline"] = await phase_drain_baseline(args, broker, backlog, workdir, say)
    return out


POLICY: list = [None]  # the outbox policy of every phase (None: the product's default)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.retain_for is not None:
        from gateway.outbox.policy import StorePolicy

        POLICY[0] = StorePolicy(retain_for=args.retain_for)

    def say(msg: str) -> None:
        if not args.json_only:
            log(msg)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.json_only:
        logging.disable(logging.WARNING)
    available = cpus()
    pinned = pin_self(0) if (os.cpu_count() or 1) >= 2 else False
    helpers = other_cpus(0)
    workdir = Path(tempfile.mkdtemp(prefix="canopy-backlog-"))
    broker = None
    t0 = time.monotonic()
    try:
        broker = Broker(workdir, helpers).start()
        say(f"mosquitto on 127.0.0.1:{broker.port} (cpu {sorted(helpers)}), measured process on cpu "
            f"{0 if pinned else sorted(available)}; phases {','.join(args.phases)}")
        res = asyncio.run(run_phases(args, broker, workdir, helpers, say))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    al, dr, bl, cm, ou = (res.get(k) or {} for k in ("alarm", "drain", "baseline", "commits", "outage"))
    lat = al.get("alarm_latency_ms") or {}
    drain, base = dr.get("readings_per_s"), bl.get("readings_per_s")
    out = {
        "bench": "backlog",
        "alarm_latency_ms": {k: lat.get(k) for k in ("p50", "p99", "max", "n")} if lat else None,
        "max_inflight_bytes": al.get("max_inflight_bytes"),
        "link_bytes_per_s": args.link_bytes_per_s if al else None,
        "backlog_rows": args.rows if (al or dr) else None,
        "drain_readings_per_s": drain,
        "baseline_drain_readings_per_s": base,
        "drain_ratio": round(drain / base, 3) if drain and base else None,
        "commits_per_s": cm.get("commits_per_s"),
        "ingest_rate": cm.get("ingest_rate"),
        "rss_mb": {k: (ou.get("rss_mb") or {}).get(k) for k in ("start", "end", "max")} if ou else None,
        "rss_ratio": ou.get("rss_ratio"),
        "outage_seconds": args.outage_seconds if ou else None,
        "reconciled": bool(RECONCILE) and all(RECONCILE.values()),
        "targets": TARGETS,
        "met": {
            "alarm_p99": lat.get("p99") is not None and lat["p99"] < TARGETS["alarm_p99_ms"] and not lat.get("missing") if lat else None,
            "drain": drain >= TARGETS["drain_readings_per_s"] if drain is not None else None,
            "commits": cm["commits_per_s"] <= TARGETS["commits_per_s"] if cm else None,
            "rss_flat": abs(ou["rss_ratio"] - 1) <= TARGETS["rss_ratio"] - 1 and abs(ou["rss_end_ratio"] - 1) <= TARGETS["rss_ratio"] - 1 if ou else None,
        },
        "machine": {**machine(), "pinned_core": 0 if pinned else None},
        "seconds": round(time.monotonic() - t0, 1),
        "details": {"reconciled_by_phase": RECONCILE, "outage_counters": OUTAGE_COUNTERS or None, **res},
    }
    print(json.dumps(out, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
