"""Durable command state in ``state_dir/commands.sqlite``.

- ``seen``: command ids (per issuer) until their validity window is over, so
  a replay is refused even after a restart;
- ``cycles``: the open valve cycles, written *before* a valve is opened, so a
  cycle cut short by a crash or power loss is reported after the restart;
- ``runs``: automatic-program cycles per local day (at most K a day survives restarts);
- ``kv``: lockouts, the close-all hold, pending relocks.

Small synchronous transactions (commands are rare), WAL with synchronous=FULL:
an id the gateway acted on is on disk before the device is touched.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time

import orjson

log = logging.getLogger("canopy.commands")

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_until ON seen(until);
CREATE TABLE IF NOT EXISTS cycles (valve TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS runs (program TEXT NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (program, day));
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, body BLOB NOT NULL);
"""
MAX_SEEN = 200_000  # ids kept at most; the oldest-expiring go first beyond this


class CommandStore:
    def __init__(self, path: str):
        self.path = path
        self.db: sqlite3.Connection | None = None

    def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            self.db = self._connect()
        except sqlite3.DatabaseError as exc:
            # a corrupt state file must not keep valves from being driven safe: set it aside
            aside = f"{self.path}.corrupt-{int(time.time())}"
            log.error("command state %s is unreadable (%s); moved to %s and starting empty", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
            self.db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        db.execute("SELECT count(*) FROM seen").fetchone()
        if os.stat(self.path).st_mode & 0o077:
            os.chmod(self.path, 0o600)
        return db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    # -- replay ids ---------------------------------------------------------------------------
    def remember(self, key: str, until: float) -> bool:
        """Record an id; False if it was already there (a replay)."""
        try:
            self.db.execute("INSERT INTO seen (key, until) VALUES (?, ?)", (key, until))
            return True
        except sqlite3.IntegrityError:
            return False

    def seen(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM seen WHERE key = ?", (key,)).fetchone() is not None

    def purge(self, now: float) -> int:
        n = self.db.execute("DELETE FROM seen WHERE until < ?", (now,)).rowcount
        (count,) = self.db.execute("SELECT count(*) FROM seen").fetchone()
        if count > MAX_SEEN:
            self.db.execute("DELETE FROM seen WHERE key IN (SELECT key FROM seen ORDER BY until LIMIT ?)", (count - MAX_SEEN,))
        return n

    # -- cycles -----------------------------------------------------------------------------
    def save_cycle(self, valve: str, body: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO cycles (valve, body) VALUES (?, ?)", (valve, orjson.dumps(body)))

    def clear_cycle(self, valve: str) -> None:
        self.db.execute("DELETE FROM cycles WHERE valve = ?", (valve,))

    def cycles(self) -> dict[str, dict]:
        out = {}
        for valve, body in self.db.execute("SELECT valve, body FROM cycles"):
            try:
                out[valve] = orjson.loads(body)
            except orjson.JSONDecodeError:
                out[valve] = {}
        return out

    # -- program runs per day ---------------------------------------------------------------
    def runs(self, program: str, day: str) -> int:
        row = self.db.execute("SELECT count FROM runs WHERE program = ? AND day = ?", (program, day)).fetchone()
        return row[0] if row else 0

    def add_run(self, program: str, day: str) -> int:
        self.db.execute("INSERT INTO runs (program, day, count) VALUES (?, ?, 1) "
                        "ON CONFLICT(program, day) DO UPDATE SET count = count + 1", (program, day))
        self.db.execute("DELETE FROM runs WHERE program = ? AND day < date(?, '-7 days')", (program, day))
        return self.runs(program, day)

    # -- small values -----------------------------------------------------------------------
    def get(self, key: str, default=None):
        row = self.db.execute("SELECT body FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return orjson.loads(row[0])
        except orjson.JSONDecodeError:
            return default

    def put(self, key: str, value) -> None:
        if value is None:
            self.db.execute("DELETE FROM kv WHERE key = ?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO kv (key, body) VALUES (?, ?)", (key, orjson.dumps(value)))
