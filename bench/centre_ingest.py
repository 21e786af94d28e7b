#!/usr/bin/env python3
"""Centre ingest: records/s stored per instance into PostgreSQL and SQLite, beside a hand-written baseline,
and gateway publish -> stored latency at 5,000 records/s.  Prints exactly one JSON line (progress on stderr).

Store throughput (``pg_records_per_s``, ``sqlite_records_per_s``): the centre's own path from
the bytes of a message to committed rows -- ``parse_message`` (bounded parser) + ``writer.write``
(telemetry rows ON CONFLICT DO NOTHING RETURNING, hourly rollup, lanes, gateway last-seen) in
one transaction per ``ingest.batch_max_records`` -- on real telemetry batches (500 records a
message, 10 gateways, 10% of the messages sent twice).  Baseline, same run, same payloads,
same batch size: ``orjson.loads``, then asyncpg ``COPY`` into a temporary table and
``INSERT … SELECT … ON CONFLICT DO NOTHING`` into the same telemetry table (PostgreSQL), or
sqlite3 ``executemany`` with ``INSERT OR IGNORE`` (SQLite) -- the de-duplicating insert alone.
Both stores are durable (PostgreSQL fsync on, SQLite WAL synchronous=FULL); each run starts
from an empty, migrated database; the four kinds alternate for ``--rounds`` rounds and each
keeps its best (the machine is shared).

``pg_mqtt_records_per_s``: the whole instance (paho receive, manual ack after commit) draining
a backlog the broker kept for its session.  ``e2e_p50_ms``/``e2e_p99_ms``: 10 simulated
gateways publish 5,000 readings/s in total (one message per gateway per 0.5 s, as the outbox
commits) from a separate process; latency = commit of the centre's transaction - the
record's ts (set when the gateway publishes), PostgreSQL store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from centre.ingest.parse import parse_message  # noqa: E402
from centre.ingest.service import Ingest  # noqa: E402
from centre.ingest.writer import write  # noqa: E402
from centre.service import Centre  # noqa: E402
from centre.store.engine import create_engine, write_transaction  # noqa: E402
from centre.store.migrate import upgrade_async  # noqa: E402
from tests.centre.pg import PgServer  # noqa: E402
from tests.centre.support import centre_config, envelope  # noqa: E402
from tests.support import Mosquitto  # noqa: E402

EPOCH = "0123456789abcdef"
T0 = 1_795_348_800.0


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def payloads(n_records: int, per_msg: int = 500, gateways: int = 10, dup_every: int = 10) -> list[tuple[str, bytes]]:
    """Telemetry messages of ``gateways`` gateways, every ``dup_every``-th message sent twice."""
    out, seq = [], {}
    for i in range(n_records // per_msg):
        gw = f"gw-{i % gateways}"
        first = seq.get(gw, 1)
        recs = [{"seq": s, "ts": T0 + s * 0.1, "device": f"soil-{s % 20}", "point": "moisture", "value": 20 + (s % 17) * 0.5,
                 "unit": "%"} for s in range(first, first + per_msg)]
        seq[gw] = first + per_msg
        msg = (f"canopy/v1/farm/{gw}/telemetry", envelope("farm", gw, "telemetry", recs))
        out.append(msg)
        if i % dup_every == dup_every - 1:
            out.append(msg)
    return out


def batches(msgs: list, max_records: int, per_msg: int = 500) -> list[list]:
    k = max(1, max_records // per_msg)
    return [msgs[i:i + k] for i in range(0, len(msgs), k)]


async def centre_store(url: str, msgs, max_records: int) -> float:
    engine = create_engine(url)
    try:
        t = time.perf_counter()
        for group in batches(msgs, max_records):
            items = [parse_message(topic, payload) for topic, payload in group]
            async with write_transaction(engine) as conn:
                await write(conn, items, time.time())
        elapsed = time.perf_counter() - t
        await check_stored(engine, msgs)
        return elapsed
    finally:
        await engine.dispose()


async def check_stored(engine, msgs) -> None:
    """Every unique record is in the store, once (a bench that stores nothing is fast)."""
    import sqlalchemy as sa

    from centre.store import schema

    async with engine.connect() as conn:
        n = (await conn.execute(sa.select(sa.func.count()).select_from(schema.telemetry))).scalar_one()
    assert n == len(set(msgs)) * 500, f"{n} rows stored, {len(set(msgs)) * 500} expected"


async def pg_baseline(url: str, msgs, max_records: int) -> float:
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"))
    cols = ["site", "gateway", "epoch", "seq", "ts", "device", "point", "value", "unit", "received_at"]
    try:
        t = time.perf_counter()
        for group in batches(msgs, max_records):
            rows, now = [], time.time()
            for _topic, payload in group:
                m = orjson.loads(payload)
                for r in m["records"]:
                    rows.append((m["site"], m["gateway"], m["epoch"], r["seq"], r["ts"], r["device"], r["point"],
                                 float(r["value"]), r.get("unit"), now))
            async with conn.transaction():
                await conn.execute("CREATE TEMP TABLE IF NOT EXISTS t_in (LIKE telemetry INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                await conn.copy_records_to_table("t_in", records=rows, columns=cols)
                await conn.execute(f"INSERT INTO telemetry ({','.join(cols)}) SELECT {','.join(cols)} FROM t_in "
                                   "ON CONFLICT DO NOTHING")
        return time.perf_counter() - t
    finally:
        await conn.close()


def sqlite_baseline(path: str, msgs, max_records: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    sql = ("INSERT OR IGNORE INTO telemetry (site, gateway, epoch, seq, ts, device, point, value, unit, received_at) "
           "VALUES (?,?,?,?,?,?,?,?,?,?)")
    t = time.perf_counter()
    for group in batches(msgs, max_records):
        rows, now = [], time.time()
        for _topic, payload in group:
            m = orjson.loads(payload)
            rows += [(m["site"], m["gateway"], m["epoch"], r["seq"], r["ts"], r["device"], r["point"], float(r["value"]),
                      r.get("unit"), now) for r in m["records"]]
        db.execute("BEGIN")
        db.executemany(sql, rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - t
    db.close()
    return elapsed


def _publisher(port: int, rate: int, seconds: float, gateways: int, ready) -> None:
    """A separate process: ``gateways`` gateways, each one message every 0.5 s, ``rate`` records/s in total."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.loop_start()
    ready.wait()
    per_msg = max(1, int(rate * 0.5 / gateways))
    seq = dict.fromkeys(range(gateways), 1)
    start = time.time()
    tick = 0
    while time.time() - start < seconds:
        for g in range(gateways):  # spread the gateways over the half second
            due = start + tick * 0.5 + g * 0.5 / gateways
            time.sleep(max(0.0, due - time.time()))
            now = time.time()
            recs = [{"seq": s, "ts": now, "device": f"soil-{s % 20}", "point": "moisture", "value": 21.5, "unit": "%"}
                    for s in range(seq[g], seq[g] + per_msg)]
            seq[g] += per_msg
            c.publish(f"canopy/v1/farm/lat-{g}/telemetry", envelope("farm", f"lat-{g}", "telemetry", recs), qos=1)
        tick += 1
    time.sleep(1.0)
    c.loop_stop()
    c.disconnect()


class TimedIngest:
    """A centre instance whose commits are timed: latency per record, and when the last one landed."""

    def __init__(self, url: str, port: int, instance: str):
        self.cfg = centre_config(url, port, instance=instance, gap_check_interval=3600)
        self.engine = create_engine(url)
        self.ingest = Ingest(Centre(self.cfg, self.engine))
        self.latencies: list[float] = []
        self.stored = 0
        self.last_commit = 0.0
        orig = self.ingest._store

        async def timed(items):
            written = await orig(items)
            now = time.time()
            self.stored += written.stored
            self.last_commit = now
            self.latencies += [now - r["ts"] for p in items for r in p.records]
            return written

        self.ingest._store = timed
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.ingest.run(self.stop))
        while not self.ingest.connected:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.stop.set()
        await self.task
        await self.engine.dispose()


async def mqtt_drain(url: str, broker: Mosquitto, msgs) -> float:
    """Records/s of one instance draining what the broker kept for its session while it was away."""
    t = TimedIngest(url, broker.port, "drain")
    await t.start()
    await t.close()  # the session now exists on the broker; fill it while the instance is away
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-fill", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    infos = [pub.publish(topic, payload, qos=1) for topic, payload in msgs]
    for i in infos:
        i.wait_for_publish(60)
    pub.loop_stop()
    pub.disconnect()
    unique = len({(topic, payload) for topic, payload in msgs}) * 500
    t = TimedIngest(url, broker.port, "drain")
    start = time.time()
    await t.start()
    while t.stored < unique:
        await asyncio.sleep(0.05)
    await t.close()
    return unique / (t.last_commit - start)


async def e2e(url: str, broker: Mosquitto, rate: int, seconds: float) -> tuple[float, float]:
    t = TimedIngest(url, broker.port, "e2e")
    await t.start()
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_publisher, args=(broker.port, rate, seconds, 10, ready))
    proc.start()
    await asyncio.sleep(1.0)
    ready.set()
    while proc.is_alive():
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    await t.close()
    lat = sorted(t.latencies[len(t.latencies) // 10:])  # skip the first 10 % (warm-up)
    return lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


async def _check(url: str, msgs) -> None:
    engine = create_engine(url)
    try:
        await check_stored(engine, msgs)
    finally:
        await engine.dispose()


async def main_async(args) -> dict:
    msgs = payloads(args.records)
    unique = len(set(msgs)) * 500
    pg = PgServer(durable=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="centre-bench-"))
    broker = Mosquitto(tmp).start()
    result = {}
    try:
        rates: dict[str, float] = {}
        for rnd in range(args.rounds):  # alternate, keep each one's best: the machine is shared
            for name in ("pg", "pg_baseline", "sqlite", "sqlite_baseline"):
                url = pg.create_database("bench") if name.startswith("pg") else f"sqlite:///{tmp / f'{name}-{rnd}.sqlite'}"
                await upgrade_async(url)
                if name in ("pg", "sqlite"):
                    secs = await centre_store(url, msgs, args.batch)
                elif name == "pg_baseline":
                    secs = await pg_baseline(url, msgs, args.batch)
                    await _check(url, msgs)
                else:
                    secs = sqlite_baseline(url.removeprefix("sqlite:///"), msgs, args.batch)
                    await _check(url, msgs)
                rates[name] = max(rates.get(name, 0.0), unique / secs)
                log(f"round {rnd + 1} {name}: {unique / secs:,.0f} records/s ({unique} unique records, {secs:.2f} s)")
        result.update(pg_records_per_s=round(rates["pg"]), pg_baseline_records_per_s=round(rates["pg_baseline"]),
                      pg_ratio=round(rates["pg"] / rates["pg_baseline"], 3), sqlite_records_per_s=round(rates["sqlite"]),
                      sqlite_baseline_records_per_s=round(rates["sqlite_baseline"]),
                      sqlite_ratio=round(rates["sqlite"] / rates["sqlite_baseline"], 3))
        url = pg.create_database("drain")
        await upgrade_async(url)
        result["pg_mqtt_records_per_s"] = round(await mqtt_drain(url, broker, msgs[: len(msgs) // 2]))
        log(f"pg via mqtt: {result['pg_mqtt_records_per_s']:,} records/s")
        url = pg.create_database("e2e")
        await upgrade_async(url)
        p50, p99 = await e2e(url, broker, args.rate, args.seconds)
        result.update(e2e_p50_ms=round(p50, 1), e2e_p99_ms=round(p99, 1), e2e_rate=args.rate)
        log(f"e2e at {args.rate}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    finally:
        broker.stop()
        pg.stop()
    result["cpus"] = len(os.sched_getaffinity(0))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000, help="records per store run (before duplicates)")
    ap.add_argument("--rounds", type=int, default=3, help="store runs of each kind, alternating; the best counts")
    ap.add_argument("--batch", type=int, default=5000, help="records per transaction (ingest.batch_max_records)")
    ap.add_argument("--rate", type=int, default=5000, help="records/s for the latency run")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
