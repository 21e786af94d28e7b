"""The outbox's tables, and the upgrade of files written by earlier versions.

Each lane has its own table whose AUTOINCREMENT key is the lane's sequence
number.  ``topic`` is the record's topic suffix under
``canopy/v1/{site}/{gateway}/`` (``cmd/result``, ``alert/{group}``), or several
separated by one space (``event alert/property-office``: the record is
published on each, docs/protocol.md *Topic routing*); NULL sends the record on
its lane's own topic.

``retained_{lane}`` holds the records the broker acknowledged, moved there
(same seq, ts, body and topic, plus ``acked_at``) by the commit that used to
delete them, and kept for a while so a centre can ask for them again
(``retention.py``, docs/protocol.md#replay).  "Retained" as in retention: it
has nothing to do with MQTT's retained messages.

Version 1 files (before the column) kept the suffix inside the JSON body
(``"topic":"cmd/result"``) and the uplink parsed every body at send time to
find it.  ``migrate`` upgrades such a file once, in the transaction that
opens it: it adds the column and moves the suffix out of every pending
body, so the send path never parses JSON and a crash half-way leaves the
version 1 file as it was, to be upgraded at the next start.  Version 3 only
adds the ``retained_{lane}`` tables, and ``emitted`` (marks.py) needs no version
of its own: ``SCHEMA`` creates missing tables on every open.
"""

from __future__ import annotations

import logging
import re

import aiosqlite
import orjson

from core.records import LANES, compact_json

log = logging.getLogger("canopy.store")

VERSION = 3  # PRAGMA user_version once migrated; 0 for files of version 1 (and before the first open)

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (lane TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (lane, name))",
    *(
        f"CREATE TABLE IF NOT EXISTS {lane} (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, body BLOB NOT NULL, topic TEXT)"
        for lane in LANES
    ),
    *(
        f"CREATE TABLE IF NOT EXISTS retained_{lane} (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, body BLOB NOT NULL, "
        "topic TEXT, acked_at REAL NOT NULL)"
        for lane in LANES
    ),
    # which producer's record got which seq, written by the commit that stored it (marks.py)
    "CREATE TABLE IF NOT EXISTS emitted (n INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, lane TEXT NOT NULL, "
    "seq INTEGER NOT NULL)",
]
TABLES = ("meta", "counters", *LANES, *(f"retained_{lane}" for lane in LANES), "emitted")

_SUFFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*")  # no wildcard, space or empty level
_CHUNK = 1000  # version 1 rows rewritten per statement: bounded memory however large the backlog


async def migrate(db: aiosqlite.Connection) -> int:
    """Bring the file up to VERSION inside the caller's transaction; returns how many bodies gave up a topic."""
    async with db.execute("PRAGMA user_version") as cur:
        version = (await cur.fetchone())[0]
    if version >= VERSION:
        return 0
    moved = await _add_topic_column(db) if version < 2 else 0  # 2 -> 3: SCHEMA made the retained tables
    await db.execute(f"PRAGMA user_version={VERSION}")
    return moved


async def _add_topic_column(db: aiosqlite.Connection) -> int:
    """Version 1 -> 2: the topic column, and the topic moved out of every pending alarm and event body."""
    moved = 0
    for lane in LANES:
        async with db.execute(f"PRAGMA table_info({lane})") as cur:
            columns = {row[1] for row in await cur.fetchall()}
        if "topic" not in columns:
            await db.execute(f"ALTER TABLE {lane} ADD COLUMN topic TEXT")  # O(1): no row is rewritten
        if lane != "telemetry":  # telemetry never had a topic of its own
            moved += await _move_topics_out(db, lane)
    return moved


async def _move_topics_out(db: aiosqlite.Connection, lane: str) -> int:
    moved, after = 0, 0
    while True:
        async with db.execute(f"SELECT seq, body FROM {lane} WHERE seq > ? AND instr(body, ?) > 0 ORDER BY seq LIMIT ?",
                              (after, b'"topic":', _CHUNK)) as cur:
            rows = await cur.fetchall()
        updates = []
        for seq, body in rows:
            split = split_topic(body)
            if split is not None:
                updates.append((split[1], split[0], seq))
        if updates:
            await db.executemany(f"UPDATE {lane} SET body = ?, topic = ? WHERE seq = ?", updates)
        moved += len(updates)
        if len(rows) < _CHUNK:
            return moved
        after = rows[-1][0]


def split_topic(body: bytes) -> tuple[str, bytes] | None:
    """(suffix, body without it) of a version 1 body that names its topic; None if it names none.

    The version 1 uplink routed a record by a non-empty string ``topic`` and
    sent any other body unchanged on its lane's topic: such bodies stay as they are.
    """
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError:
        log.warning("outbox: a version 1 record is not JSON; it goes to its lane's topic unchanged")
        return None
    suffix = record.get("topic") if isinstance(record, dict) else None
    if not isinstance(suffix, str) or not suffix:
        return None
    del record["topic"]
    return suffix, compact_json(record)


def check_topic(lane: str, topic: str | None) -> str | None:
    """The topic column of a record put on ``lane``: None, or suffixes separated by one space; ValueError otherwise."""
    if not topic:
        return None
    if lane == "telemetry":
        raise ValueError(f"telemetry records always go to the telemetry topic, not {topic!r}")
    suffixes = topic.split(" ")
    bad = [s for s in suffixes if not _SUFFIX.fullmatch(s)]
    if bad:
        raise ValueError(f"topic {topic!r}: {bad[0]!r} is not a topic suffix such as 'event' or 'alert/volunteers' "
                         "(several are separated by one space)")
    if len(set(suffixes)) != len(suffixes):
        raise ValueError(f"topic {topic!r} names a topic twice")
    return topic
