#!/usr/bin/env python3
"""Three centre instances sharing the subscription, PostgreSQL store, a 10,000 records/s stream; one instance is
kill -9ed mid-stream and (run "restarted") comes back 3 s later or (run "never_back") never does.  In both the
store must end with every record exactly once: gap repair asks the publishers, with signed ``replay`` requests,
for what the broker kept for the dead member or dropped.  Prints one JSON line per run (progress on stderr).

Real parts: mosquitto (``max_queued_messages`` lowered so that the dead member's share overflows and is
dropped, as it is on a real broker at a larger scale), PostgreSQL, and three ``python -m centre run``
processes (ingest, leader lease, the replay requester signing with the site's key).  The publishers are
gateways written for the bench (a real gateway cannot produce 10,000 records/s from Modbus polling): each
keeps every record it sent, answers ``…/replay`` exactly as docs/protocol.md#replay says -- the envelope
parsed by ``core.protocol.envelope`` with the replay limits and its Ed25519 signature checked against the
public key ``keys show`` prints; junk ignored -- re-sends the range with the same seqs and bytes, and
answers ``replay.result`` on ``…/cmd/result``.

Figures: ``records_published``; ``records_stored_once`` (distinct keys of the published records in the
store); ``duplicates`` (rows - distinct keys: 0 by the primary key, checked anyway); ``missing``;
``repaired_by_replay`` (distinct records the publishers re-sent on request: what the broker kept for the
dead member or dropped, plus whatever a requested range held that arrived meanwhile);
``replay_requests``; ``gaps`` by state; ``seconds`` (stream start -> every record stored).

    .venv/bin/python bench/centre_failover.py [--seconds 20] [--rate 10000] [--runs restarted,never_back]
                                              [--victim follower|leader] [--wait 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import sqlalchemy as sa
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from centre.acting.keys import KeyStore  # noqa: E402
from centre.store import schema  # noqa: E402
from centre.store.engine import create_engine  # noqa: E402
from centre.store.migrate import upgrade_async  # noqa: E402
from core.protocol import envelope as envelopes  # noqa: E402
from core.protocol.keys import load_public_key  # noqa: E402
from core.protocol.topics import Topics  # noqa: E402
from tests.centre.pg import PgServer  # noqa: E402
from tests.support import Mosquitto, free_port  # noqa: E402

SITE = "bench-site"
GATEWAYS = 4
BATCH = 250  # records a message
QUEUED = 20  # mosquitto max_queued_messages: a dead member's share beyond it is dropped


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


class Gateway:
    """A publisher with a perfect memory: streams telemetry, answers signed replay requests from it."""

    def __init__(self, port: int, name: str, keys: list, epoch: str):
        self.name, self.epoch, self.keys = name, epoch, keys  # keys: issuer id -> Ed25519PublicKey
        self.topics = Topics(SITE, name)
        self.records: list[bytes] = []  # seq - 1 -> the record's JSON bytes
        self.events: list[bytes] = []  # its replay.result records (event lane): lost ones are asked for too
        self.lock = threading.Lock()
        self.counters = {"requests": 0, "resent": 0, "junk": 0}
        self.resent_seqs: set[int] = set()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{name}", protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(self.topics.replay, qos=1)
        self.client.loop_start()
        self.inbox: list = []
        self.wake = threading.Event()
        self.worker = threading.Thread(target=self._serve, daemon=True)
        self.worker.start()

    def online(self) -> None:
        """``…/state`` as a gateway publishes it every ``uplink.state_interval``: with each lane's last seq."""
        with self.lock:
            lanes = {"epoch": self.epoch, "telemetry": {"last_seq": len(self.records)},
                     "event": {"last_seq": len(self.events)}}
        doc = {"v": 2, "site": SITE, "gateway": self.name, "status": "online", "boot": 1, "ts": time.time(),
               "version": "0.2.0", "protocol": 2, "capabilities": ["replay"], "outbox": lanes}
        self.client.publish(self.topics.state, orjson.dumps(doc), qos=1, retain=True)

    def send(self, n: int) -> None:
        """``n`` new readings, one message."""
        with self.lock:
            first = len(self.records) + 1
            now = time.time()
            recs = [orjson.dumps({"seq": s, "ts": now, "device": f"soil-{s % 8}", "point": "moisture",
                                  "value": 20 + (s % 100) / 10, "unit": "%"}) for s in range(first, first + n)]
            self.records += recs
        self._publish_batch("telemetry", first, recs, self.topics.telemetry)

    def _publish_batch(self, lane: str, first: int, recs: list[bytes], topic: str) -> None:
        head = orjson.dumps({"v": 2, "site": SITE, "gateway": self.name, "epoch": self.epoch, "lane": lane,
                             "seq": [first, first + len(recs) - 1]})
        payload = head[:-1] + b',"records":[' + b",".join(recs) + b"]}"
        self.client.publish(topic, payload, qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            env = envelopes.parse(msg.payload, kind="replay")
        except envelopes.Malformed:
            env = None
        key = self.keys.get(env.issuer) if env is not None else None
        if key is None or not envelopes.verify(env, key) or (env.site, env.gateway) != (SITE, self.name) \
                or env.expires_at < time.time():
            self.counters["junk"] += 1  # unsigned, unknown issuer, bad signature, not ours, stale: no answer
            return
        self.inbox.append(env)
        self.wake.set()

    def _serve(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            while self.inbox:
                self._replay(self.inbox.pop(0))

    def _replay(self, env) -> None:
        p = env.params
        self.counters["requests"] += 1
        status, body = "rejected", {"reason": "invalid_params"}
        lane = p.get("lane")
        if env.action == "records" and lane in ("telemetry", "event") and p.get("epoch") == self.epoch:
            kept, topic = (self.records, self.topics.telemetry) if lane == "telemetry" else (self.events, self.topics.cmd_result)
            with self.lock:
                last = min(int(p["to_seq"]), len(kept))
                first = int(p["from_seq"])
                recs = kept[first - 1:last]
            for i in range(0, len(recs), BATCH):
                self._publish_batch(lane, first + i, recs[i:i + BATCH], topic)
            if lane == "telemetry":
                self.counters["resent"] += len(recs)
                self.resent_seqs.update(range(first, first + len(recs)))
            status, body = "done", {"lane": lane, "epoch": self.epoch, "sent": len(recs), "pending": 0,
                                    "missing": 0, **({"first": first, "last": last} if recs else {}),
                                    "detail": f"sent again {len(recs)} record(s)"}
        with self.lock:
            seq = len(self.events) + 1
            rec = orjson.dumps({"seq": seq, "ts": time.time(), "type": "replay.result", "id": env.id,
                                "issuer": env.issuer, "status": status, **body})
            self.events.append(rec)
        self._publish_batch("event", seq, [rec], self.topics.cmd_result)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Instance:
    def __init__(self, work: Path, name: str, url: str, port: int, keys_dir: Path):
        self.name = name
        self.file = work / f"centre-{name}.yaml"
        self.file.write_text(yaml.safe_dump({
            "instance": name, "database": {"url": url}, "keys_dir": str(keys_dir),
            "broker": {"host": "127.0.0.1", "port": port, "backoff_initial": 0.1, "backoff_max": 0.5,
                       "session_expiry": 600},
            "http": {"host": "127.0.0.1", "port": free_port()},
            "ingest": {"gap_report_after": 2.0, "gap_check_interval": 0.5},
            "acting": {"replay_interval": 5.0}}))
        self.log = work / f"centre-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Instance":
        self._from = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen([sys.executable, "-m", "centre", "run", "-c", str(self.file)], cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        return self

    def wait_connected(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while b"ingest connected" not in self.log.read_bytes()[self._from:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"centre {self.name} did not connect: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def leader(self) -> bool:
        return b"leader lease taken by " + self.name.encode() in self.log.read_bytes()[self._from:]

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def stored(engine) -> tuple[int, int]:
    t = schema.telemetry
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar_one()
        keys = sa.select(t.c.site, t.c.gateway, t.c.epoch, t.c.seq).distinct().subquery()
        distinct = (await conn.execute(sa.select(sa.func.count()).select_from(keys))).scalar_one()
    return rows, distinct


async def missing_runs(engine, gws: list) -> dict:
    """gateway -> the first runs of published seqs the store lacks, with the lane's floor (diagnostics)."""
    t, la, out = schema.telemetry, schema.lanes, {}
    async with engine.connect() as conn:
        for gw in gws:
            have = {r[0] for r in await conn.execute(sa.select(t.c.seq).where(t.c.gateway == gw.name))}
            gone = [s for s in range(1, len(gw.records) + 1) if s not in have]
            if gone:
                floor = (await conn.execute(sa.select(la.c.floor).where(la.c.gateway == gw.name,
                                                                        la.c.lane == "telemetry"))).scalar()
                out[gw.name] = {"first": gone[0], "last": gone[-1], "count": len(gone), "floor": floor,
                                "top": len(gw.records)}
    return out


async def gap_states(engine) -> dict:
    g = schema.gaps
    async with engine.connect() as conn:
        return {s: n for s, n in await conn.execute(sa.select(g.c.state, sa.func.count()).group_by(g.c.state))}


async def one_run(kind: str, seconds: float, rate: int, pg: PgServer, work: Path, wait: float = 300,
                  victim_role: str = "follower") -> dict:
    work.mkdir(parents=True)
    url = pg.create_database("failover")
    await upgrade_async(url)
    broker = Mosquitto(work)
    broker.conf.write_text(broker.conf.read_text().replace("max_queued_messages 1000000", f"max_queued_messages {QUEUED}"))
    broker.start()
    store = KeyStore(work / "keys")
    store.generate(SITE)
    keys = {k.issuer: load_public_key(k.public_key) for k in store.keys(SITE)}
    centres = [Instance(work, f"c{i}", url, broker.port, store.dir).start() for i in (1, 2, 3)]
    engine = create_engine(url)
    gws = []
    try:
        for c in centres:
            c.wait_connected()
        gws = [Gateway(broker.port, f"gw-{i}", keys, f"{i:016x}") for i in range(1, GATEWAYS + 1)]
        for gw in gws:
            gw.online()
        await asyncio.sleep(3)  # the lease is taken; every instance has the gateways' state
        leads = victim_role == "leader"  # the leader runs gap repair: its lease must move (within 10 s)
        victim = next((c for c in centres if c.leader() == leads), centres[-1])
        log(f"{kind}: leader {[c.name for c in centres if c.leader()]}, kill -9 of {victim.name} after {seconds / 3:.0f} s")
        per_msg_s = BATCH * GATEWAYS / rate
        start = time.monotonic()
        killed_at, back_at = start + seconds / 3, None
        n = 0
        state_at = start
        while (now := time.monotonic()) - start < seconds:
            for gw in gws:
                gw.send(BATCH)
            n += 1
            if now >= state_at:
                for gw in gws:
                    gw.online()
                state_at = now + 1.0
            if killed_at is not None and now >= killed_at:
                victim.kill9()
                log(f"{kind}: {victim.name} killed at {now - start:.1f} s")
                killed_at, back_at = None, (now + 3 if kind == "restarted" else None)
            if back_at is not None and now >= back_at:
                victim.start()
                log(f"{kind}: {victim.name} restarted at {now - start:.1f} s")
                back_at = None
            await asyncio.sleep(max(0.0, start + n * per_msg_s - time.monotonic()))
        stream_s = time.monotonic() - start
        published = sum(len(gw.records) for gw in gws)
        log(f"{kind}: published {published} in {stream_s:.1f} s ({published / stream_s:.0f}/s); waiting for the store")
        deadline = time.monotonic() + wait
        while True:
            for gw in gws:
                gw.online()  # the stream is over; the gateways stay online and say where their lanes end
            rows, distinct = await stored(engine)
            if distinct >= published or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        done_s = time.monotonic() - start
        rows, distinct = await stored(engine)
        return {"run": kind, "instances": 3, "killed": victim.name, "killed_was_leader": leads, "records_published": published,
                "stream_records_per_s": round(published / stream_s), "records_stored_once": distinct,
                "duplicates": rows - distinct, "missing": published - distinct,
                "repaired_by_replay": sum(len(gw.resent_seqs) for gw in gws),
                "replay_requests": sum(gw.counters["requests"] for gw in gws),
                "replay_junk": sum(gw.counters["junk"] for gw in gws),
                "gaps": await gap_states(engine), "seconds": round(done_s, 1),
                **({"missing_where": await missing_runs(engine, gws)} if distinct < published else {})}
    finally:
        for gw in gws:
            gw.close()
        for c in centres:
            c.stop()
        await engine.dispose()
        broker.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the stream")
    ap.add_argument("--rate", type=int, default=10_000, help="records/s, all gateways together")
    ap.add_argument("--runs", default="restarted,never_back")
    ap.add_argument("--wait", type=float, default=300, help="seconds to wait for the store after the stream")
    ap.add_argument("--victim", choices=("follower", "leader"), default="follower", help="which instance is killed")
    ap.add_argument("--keep", help="work in this (new) folder and keep it: the centres' and the broker's logs")
    args = ap.parse_args()
    pg = PgServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="canopy-failover-") as tmp:
            base = Path(args.keep) if args.keep else Path(tmp)
            for kind in args.runs.split(","):
                print(json.dumps(await one_run(kind, args.seconds, args.rate, pg, base / kind, args.wait,
                                                   args.victim)), flush=True)
    finally:
        pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
