"""Cross-instance live updates: every hub change goes out with PostgreSQL NOTIFY, and comes in with LISTEN.

Instance B ingests an alert and publishes it on its own hub; the bridge on B sends it as
``NOTIFY canopy_hub``; the bridge on A receives it and publishes it on A's hub, where A's
browsers' streams pick it up (well within the 2 s a duty desk allows).  Changes received
from another instance are marked (:class:`Remote`) so they are never sent on again.

NOTIFY payloads are limited to 8000 bytes: a big ``reading`` change is sent as several,
any other one too big is sent with its scalar fields only and ``partial: true`` (a page
re-reads it).  When the link to PostgreSQL breaks, changes from other instances are missed:
after reconnecting the bridge publishes a local ``resync`` so every stream re-reads.
SQLite means one instance: no bridge.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import asyncpg
import orjson

from centre.hub import Change
from centre.web.context import Web
from core.backoff import Backoff, FailureLog

log = logging.getLogger("centre.web.bridge")

CHANNEL = "canopy_hub"
MAX_PAYLOAD = 7900  # bytes; PostgreSQL's limit is 8000
KEEPALIVE_S = 10.0
APPLICATION_NAME = "canopy-centre-bridge"  # how the connection shows in pg_stat_activity
RESYNC = "resync"


class Remote(dict):
    """The data of a change that came from another instance (a dict: consumers read it as any change's data)."""


def encode(origin: str, change: Change) -> list[str]:
    """The NOTIFY payloads for one change (usually one)."""
    def dump(data) -> str:
        return orjson.dumps({"o": origin, "c": change.channel, "d": data}).decode()

    whole = dump(change.data)
    if len(whole.encode()) <= MAX_PAYLOAD:
        return [whole]
    readings = change.data.get("readings") if change.channel == "reading" else None
    if isinstance(readings, list) and len(readings) > 1:
        half = len(readings) // 2
        head, tail = ({**change.data, "readings": part} for part in (readings[:half], readings[half:]))
        return encode(origin, Change(change.channel, head)) + encode(origin, Change(change.channel, tail))
    small = {k: v for k, v in change.data.items() if isinstance(v, (str, int, float, bool)) and len(str(v)) <= 256}
    return [dump({**small, "partial": True})]


def decode(payload: str, origin: str) -> Change | None:
    """A change sent by another instance, or None (ours, or not a change)."""
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict) or msg.get("o") == origin or not isinstance(msg.get("c"), str) \
            or not isinstance(msg.get("d"), dict):
        return None
    return Change(msg["c"], Remote(msg["d"]))


class Bridge:
    def __init__(self, web: Web):
        self.web = web
        self.dsn = web.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.counters: Counter = Counter()  # sent, received, junk, reconnects, dropped
        self.connected = asyncio.Event()
        self._lost = asyncio.Event()

    async def run(self) -> None:
        """Until cancelled: forward local changes, publish remote ones; reconnect with backoff."""
        sub = self.web.hub.subscribe(None)  # one subscription for the bridge's life: nothing local is lost in a reconnect
        backoff, fails = Backoff(0.5, 10.0), FailureLog(log, "PostgreSQL LISTEN/NOTIFY")
        first = True
        try:
            while True:
                try:
                    await self._connected(sub, first, backoff, fails)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionLostError) as exc:
                    fails.failed(f"{type(exc).__name__}: {exc}")
                first = False
                self.connected.clear()
                self.counters["reconnects"] += 1
                await asyncio.sleep(backoff.next())
        finally:
            self.web.hub.unsubscribe(sub)

    async def _connected(self, sub, first: bool, backoff: Backoff, fails: FailureLog) -> None:
        con = await asyncpg.connect(self.dsn, server_settings={"application_name": APPLICATION_NAME})
        self._lost.clear()
        con.add_termination_listener(lambda _c: self._lost.set())
        try:
            await con.add_listener(CHANNEL, self._on_notify)
            self.connected.set()
            backoff.reset()
            fails.recovered()
            if not first:  # changes crossing while we were away are lost both ways: every stream re-reads
                why = {"reason": "the link between centre instances was restored"}
                await con.execute("SELECT pg_notify($1, $2)", CHANNEL,
                                  orjson.dumps({"o": self.web.instance, "c": RESYNC, "d": why}).decode())
                self.web.hub.publish([Change(RESYNC, why)])
            await self._forward(con, sub)
        finally:
            if not con.is_closed():
                await con.close(timeout=2)

    async def _forward(self, con, sub) -> None:
        dropped = sub.dropped
        while True:
            get = asyncio.ensure_future(sub.get())
            lost = asyncio.ensure_future(self._lost.wait())
            done, _ = await asyncio.wait({get, lost}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
            lost.cancel()
            if get not in done:
                get.cancel()
                if self._lost.is_set():
                    raise ConnectionLostError("the PostgreSQL connection closed")
                await con.execute("SELECT 1")  # notices a half-open connection
                continue
            batch = [get.result()]
            while not sub.queue.empty():
                batch.append(sub.queue.get_nowait())
            payloads = [p for ch in batch if self._local(ch) for p in encode(self.web.instance, ch)]
            if sub.dropped != dropped:  # we fell behind: tell the others their streams should re-read
                self.counters["dropped"] += sub.dropped - dropped
                dropped = sub.dropped
                payloads.append(orjson.dumps({"o": self.web.instance, "c": RESYNC, "d": {"reason": "changes lost"}}).decode())
            if payloads:
                await con.executemany("SELECT pg_notify($1, $2)", [(CHANNEL, p) for p in payloads])
                self.counters["sent"] += len(payloads)

    @staticmethod
    def _local(change: Change) -> bool:
        return not isinstance(change.data, Remote) and change.channel != RESYNC

    def _on_notify(self, _con, _pid, _channel, payload: str) -> None:
        change = decode(payload, self.web.instance)
        if change is None:
            self.counters["ignored"] += 1
            return
        self.counters["received"] += 1
        self.web.hub.publish([change])


class ConnectionLostError(Exception):
    pass
