"""Test parts for the centre: a gateway-like publisher written with core.protocol, and a centre run in-process.

The publisher sends batch envelopes exactly as docs/protocol.md defines them (one topic per
message, ``seq`` bounds, records in seq order), at QoS 1, and can repeat records (lost
PUBACKs, lifecycle copies on ``…/alert/{group}``) the way a gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import sqlalchemy as sa
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from centre.config import CentreConfig
from centre.ingest.service import Ingest
from centre.service import Centre
from centre.store.engine import create_engine
from core.protocol.topics import Topics
from tests.support import ROOT

EPOCH = "0123456789abcdef"


def reading(seq: int, ts: float, device: str = "soil-1", point: str = "moisture", value=21.5, unit: str | None = "%") -> dict:
    rec = {"seq": seq, "ts": ts, "device": device, "point": point, "value": value}
    if unit is not None:
        rec["unit"] = unit
    return rec


def envelope(site: str, gateway: str, lane: str, records: list[dict], epoch: str = EPOCH, v: int = 2) -> bytes:
    return orjson.dumps({"v": v, "site": site, "gateway": gateway, "epoch": epoch, "lane": lane,
                         "seq": [records[0]["seq"], records[-1]["seq"]], "records": records})


class Publisher:
    """A gateway's uplink, minus the outbox: publish batches and wait for every PUBACK."""

    def __init__(self, port: int, site: str = "green-valley", gateway: str = "farm-gw-01", epoch: str = EPOCH):
        self.site, self.gateway, self.epoch = site, gateway, epoch
        self.topics = Topics(site, gateway)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{gateway}-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._infos: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self._infos.append(self.client.publish(topic, payload, qos=1, retain=retain))

    def telemetry(self, records: list[dict]) -> None:
        self.publish(self.topics.telemetry, envelope(self.site, self.gateway, "telemetry", records, self.epoch))

    def events(self, lane: str, records: list[dict], topic: str | None = None) -> None:
        self.publish(topic or self.topics.event, envelope(self.site, self.gateway, lane, records, self.epoch))

    def state(self, status: str = "online", **extra) -> None:
        doc = {"v": 2, "site": self.site, "gateway": self.gateway, "status": status, "boot": 1, **extra}
        if status == "online":
            doc.setdefault("ts", time.time())
            doc.setdefault("version", "0.2.0")
            doc.setdefault("protocol", 2)
            doc.setdefault("capabilities", ["replay", "meta"])
        self.publish(self.topics.state, orjson.dumps(doc), retain=True)

    def flush(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for info in self._infos:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
            assert info.is_published(), "the broker did not acknowledge a publish in time"
        self._infos.clear()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def centre_config(db_url: str, broker_port: int, *, protocol: str = "5", instance: str = "c1", **ingest) -> CentreConfig:
    ingest = {"gap_report_after": 1.0, "gap_check_interval": 0.2, **ingest}
    return CentreConfig.model_validate({
        "instance": instance, "database": {"url": db_url},
        "http": {"host": "127.0.0.1", "port": _free_port()},  # never the default 8080: tests run side by side
        "broker": {"host": "127.0.0.1", "port": broker_port, "protocol": protocol, "backoff_initial": 0.1,
                   "backoff_max": 0.5, "session_expiry": 600},
        "ingest": ingest})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CentreRun:
    """The centre's ingest in this test's event loop; ``stop()`` is the clean stop (SIGTERM)."""

    def __init__(self, cfg: CentreConfig):
        self.cfg = cfg
        self.engine = create_engine(cfg.database.url)
        self.centre = Centre(cfg, self.engine)
        self.ingest = Ingest(self.centre)
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> "CentreRun":
        self._task = asyncio.create_task(self.ingest.run(self._stop))
        deadline = time.monotonic() + 10
        while not self.ingest.connected:
            if self._task.done():
                self._task.result()
            assert time.monotonic() < deadline, "the centre did not connect to the broker"
            await asyncio.sleep(0.02)
        return self

    async def crash(self) -> None:
        """Die like kill -9 as far as the broker can tell: the socket closes, nothing more is acknowledged."""
        self.ingest.mqtt.close()
        self._task.cancel()
        await asyncio.wait([self._task], timeout=1)  # a query stuck in a driver thread is left to finish alone

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 20)
        await self.engine.dispose()


async def count(engine, table: sa.Table, *where) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(table).where(*where))).scalar_one()


async def wait_for(cond, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.05)


class CentreProcess:
    """``python -m centre run -c centre.yaml`` as a child process (for kill -9)."""

    def __init__(self, workdir: Path, db_url: str, broker_port: int, instance: str = "c1", **ingest):
        self.file = workdir / f"centre-{instance}.yaml"
        self.file.write_text(yaml.safe_dump({
            "instance": instance, "database": {"url": db_url},
            "broker": {"host": "127.0.0.1", "port": broker_port, "backoff_initial": 0.1, "backoff_max": 0.5,
                       "session_expiry": 600},
            "ingest": {"gap_report_after": 1.0, "gap_check_interval": 0.5, **ingest}}))
        self.log = workdir / f"centre-{instance}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "CentreProcess":
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen([sys.executable, "-m", "centre", "run", "-c", str(self.file)], cwd=ROOT, env=env,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        return self

    async def wait_connected(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while b"ingest connected" not in self.log.read_bytes()[self._log_from:]:
            assert self.proc.poll() is None, f"the centre exited: {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the centre did not connect: {self.log.read_text()[-3000:]}"
            await asyncio.sleep(0.05)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(20)
        self.proc.kill()
        return self.proc.wait()
