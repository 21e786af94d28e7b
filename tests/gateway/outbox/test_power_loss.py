"""Power loss: no acknowledged alarm/event is lost, no sequence number is reused.

The outbox promises that a record counts as accepted only once committed to
SQLite, and that this holds through kill -9 *and power loss*.  kill -9 is
covered in test_store.py; power loss needs a disk that forgets.  The harness
in tests/powerloss.py is an apsw VFS whose files keep, durably, only what was
written before the last xSync: a crash drops everything else (or, "torn",
keeps a random subset of the unsynced sectors, modelling reordering).

apsw links its own SQLite, and Python's sqlite3 (which the outbox uses via
aiosqlite) cannot see an apsw VFS.  So these tests drive the *same SQL
protocol* as gateway/outbox/store.py through apsw: ``replica_open_db`` (with
``replica_migrate``) and ``replica_commit`` below repeat ``Outbox._open_db``
(with ``opening.connect_checked``, ``opening.start_boot``, ``schema.migrate`` and
``counters.load_counters``) and ``Outbox._commit`` (with ``transaction.commit_in``
and ``counters.add_counts_in``) statement for statement, and
``test_replica_mirrors_store_sql`` fails as soon as the two drift apart.
(apsw bundles SQLite 3.54; the venv's sqlite3 may be older.  The WAL commit
and recovery logic these tests exercise has been stable for a decade.)

Each run is a chain of "boots" on one database file: open like the outbox,
commit a random mix of alarms, events, telemetry batches and ack-deletes, and
cut the power at a random mutating I/O operation (mid-transaction, mid-commit,
mid-checkpoint...).  After each crash a fresh connection sees the durable
image only, and it must be *exactly* the state of every commit that returned,
plus all or nothing of the one transaction in flight (nothing, if its COMMIT
had not been issued yet).  The writer's autocheckpoint is SQLite's default
one re-done in Python (``autocheckpoint_like_sqlite``) only so that apsw does
not report a durable COMMIT as failed when the power goes during the
checkpoint that follows it.
"""

from __future__ import annotations

import ast
import inspect
import random
import secrets
import textwrap
import time
from dataclasses import dataclass, field

import apsw
import pytest

from core.records import LANES
from gateway.outbox import counters, marks, opening, schema, transaction
from gateway.outbox.policy import StorePolicy
from gateway.outbox.schema import SCHEMA, split_topic
from gateway.outbox.store import Outbox
from tests.powerloss import SECTOR, PowerLossVFS, _FileState, assert_no_mmap, autocheckpoint_like_sqlite

# =========================================================================== the replica
# KEEP IN STEP WITH gateway/outbox/: Outbox._open_db (opening.connect_checked, opening.start_boot,
# schema.migrate, counters.load_counters), Outbox._commit (transaction.write_commit,
# counters.add_counts), statement for
# statement (the same SQL text, order, execute vs executemany).
# test_replica_mirrors_store_sql compares them.


def replica_open_db(db: apsw.Connection, max_bytes: int = StorePolicy().max_bytes) -> dict:
    """Outbox._open_db, through apsw.  Returns boot and the per-lane counters it read."""
    db.execute("PRAGMA busy_timeout=5000").fetchall()
    result = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
    if result != ["ok"]:
        raise apsw.CorruptError("quick_check: " + "; ".join(result[:3]))
    db.execute("PRAGMA journal_mode=WAL").fetchall()
    db.execute("PRAGMA synchronous=FULL").fetchall()
    db.execute("PRAGMA journal_size_limit=16777216").fetchall()
    page_size = db.execute("PRAGMA page_size").fetchall()[0][0]
    db.execute(f"PRAGMA max_page_count={max(64, max_bytes // page_size)}").fetchall()
    db.execute("BEGIN IMMEDIATE")
    for stmt in SCHEMA:
        db.execute(stmt)
    replica_migrate(db)
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    boot = int(meta.get("boot", 0)) + 1
    epoch = meta.get("epoch") or secrets.token_hex(8)
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [("boot", str(boot)), ("epoch", epoch)])
    db.execute("COMMIT")
    counters = {}
    for lane in LANES:
        counters[lane] = dict(db.execute("SELECT name, value FROM counters WHERE lane=?", (lane,)).fetchall())
        counters[lane]["pending"] = db.execute(f"SELECT count(*) FROM {lane}").fetchall()[0][0]
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (lane,)).fetchall()
        counters[lane]["last_seq"] = row[0][0] if row else 0
    return {"boot": boot, "epoch": epoch, "counters": counters}


def replica_migrate(db: apsw.Connection) -> None:
    """schema.migrate (with its _add_topic_column and _move_topics_out), through apsw."""
    version = db.execute("PRAGMA user_version").fetchall()[0][0]
    if version >= schema.VERSION:
        return
    if version < 2:
        replica_add_topic_column(db)
    db.execute(f"PRAGMA user_version={schema.VERSION}")


def replica_add_topic_column(db: apsw.Connection) -> None:
    for lane in LANES:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({lane})").fetchall()}
        if "topic" not in columns:
            db.execute(f"ALTER TABLE {lane} ADD COLUMN topic TEXT")
        if lane != "telemetry":
            replica_move_topics_out(db, lane)


def replica_move_topics_out(db: apsw.Connection, lane: str) -> None:
    after = 0
    while True:
        rows = db.execute(f"SELECT seq, body FROM {lane} WHERE seq > ? AND instr(body, ?) > 0 ORDER BY seq LIMIT ?",
                          (after, b'"topic":', 1000)).fetchall()
        updates = [(split[1], split[0], seq) for seq, body in rows if (split := split_topic(body)) is not None]
        if updates:
            db.executemany(f"UPDATE {lane} SET body = ?, topic = ? WHERE seq = ?", updates)
        if len(rows) < 1000:
            return
        after = rows[-1][0]


def replica_commit(db: apsw.Connection, rows: dict[str, list[tuple[float, bytes, str | None]]],
                   acks: dict[str, list[tuple[int, int]]], meta: list[tuple[str, str]] | None = None,
                   retain_at: float | None = None,
                   marks: list[tuple[str, str, int]] | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """Outbox._commit (transaction.write_commit, counters.add_counts inlined), through apsw.

    Returns (last seq, rows deleted) per lane.  ``meta``: the boot rows a start on a full disk could not write.
    ``retain_at``: acknowledged rows move to ``retained_{lane}`` (retention on).
    (Records published from memory and acknowledged before the commit only add to the counters: the
    same statements.)"""
    db.execute("BEGIN IMMEDIATE")
    if meta:
        db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
    deleted: dict[str, int] = {}
    for lane in LANES:
        if rows[lane]:
            db.executemany(f"INSERT INTO {lane} (ts, body, topic) VALUES (?, ?, ?)", rows[lane])
        if acks[lane]:
            if retain_at is not None:
                db.executemany(f"INSERT INTO counters (lane, name, value) SELECT ?, 'retained_bytes', "
                               f"coalesce(sum(length(body)), 0) FROM {lane} WHERE seq BETWEEN ? AND ? "
                               "ON CONFLICT (lane, name) DO UPDATE SET value = value + excluded.value",
                               [(lane, a, b) for a, b in acks[lane]])
                db.executemany(f"INSERT OR IGNORE INTO retained_{lane} (seq, ts, body, topic, acked_at) "
                               f"SELECT seq, ts, body, topic, ? FROM {lane} WHERE seq BETWEEN ? AND ?",
                               [(retain_at, a, b) for a, b in acks[lane]])
            before = db.total_changes()
            db.executemany(f"DELETE FROM {lane} WHERE seq BETWEEN ? AND ?", acks[lane])
            deleted[lane] = db.total_changes() - before
    delta = [(len(rows[lane]), lane, "produced") for lane in LANES if rows[lane]]
    delta += [(n, lane, "acknowledged") for lane, n in deleted.items() if n]
    if retain_at is not None:
        delta += [(n, lane, "retained") for lane, n in deleted.items() if n]
    if delta:  # counters.add_counts
        db.executemany("INSERT OR IGNORE INTO counters (lane, name, value) VALUES (?, ?, 0)", [(l, n) for _, l, n in delta])
        db.executemany("UPDATE counters SET value = value + ? WHERE lane = ? AND name = ?", delta)
    seqs = {}
    for lane in LANES:
        if rows[lane]:
            seqs[lane] = db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (lane,)).fetchall()[0][0]
    if marks:  # marks.write_in: (key, lane, index of the record in rows[lane])
        db.executemany("INSERT OR REPLACE INTO emitted (key, lane, seq) VALUES (?, ?, ?)",
                       [(k, lane, seqs[lane] - len(rows[lane]) + 1 + i) for k, lane, i in marks])
        db.execute("DELETE FROM emitted WHERE n <= (SELECT max(n) FROM emitted) - ?", (1000,))
    if retain_at is not None and any(deleted.values()):
        db.execute("SELECT lane, name, value FROM counters WHERE name IN ('retained', 'retained_bytes')").fetchall()
    db.execute("COMMIT")
    return seqs, deleted


# =========================================================================== keeping the replica honest

_SQL_WORDS = ("PRAGMA", "BEGIN", "COMMIT", "ROLLBACK", "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER")


def _sql_text(node: ast.expr) -> str:
    """A statement argument as text; f-string holes become ``{}``; a variable is ``<name>``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return f"<{ast.unparse(node)}>"


def sql_calls(func, inline: dict | None = None) -> list[tuple[str, str]]:
    """(method, statement) of every execute/executemany in ``func``, in source order.

    ``inline`` maps a function or method name (e.g. ``add_counts``) to a
    function whose calls are spliced in where ``name(...)`` or ``x.<name>(...)``
    is called (recursively, with the same map).
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    out: list[tuple[str, str]] = []

    class V(ast.NodeVisitor):
        def visit_Call(self, node: ast.Call) -> None:
            self.generic_visit(node)
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if isinstance(node.func, ast.Attribute) and name in ("execute", "executemany") and node.args:
                out.append((name, _sql_text(node.args[0])))
            elif inline and name in inline:
                out.extend(sql_calls(inline[name], inline))

    V().visit(tree)
    return out


def test_replica_mirrors_store_sql():
    store_open = sql_calls(Outbox._open_db, inline={"connect_checked": opening.connect_checked,
                                                    "start_boot": opening.start_boot, "migrate": schema.migrate,
                                                    "_add_topic_column": schema._add_topic_column,
                                                    "_move_topics_out": schema._move_topics_out,
                                                    "load_counters": counters.load_counters})
    store_commit = sql_calls(Outbox._commit, inline={"write_commit": transaction.commit_in,  # the SQL it runs
                                                     "add_counts_in": counters.add_counts_in,
                                                     "write_in": marks.write_in})
    # the guarantees under test, spelled out
    assert ("execute", "PRAGMA synchronous=FULL") in store_open
    assert ("execute", "PRAGMA journal_mode=WAL") in store_open
    assert store_commit[0] == ("execute", "BEGIN IMMEDIATE") and store_commit[-1] == ("execute", "COMMIT")
    assert all(s.startswith(_SQL_WORDS) or s.startswith("<") for _, s in store_open + store_commit)
    # and the replica says exactly the same, in the same order
    replica_open = sql_calls(replica_open_db, inline={"replica_migrate": replica_migrate,
                                                      "replica_add_topic_column": replica_add_topic_column,
                                                      "replica_move_topics_out": replica_move_topics_out})
    assert replica_open == store_open, "gateway/outbox Outbox._open_db/migrate changed: update replica_open_db"
    assert sql_calls(replica_commit) == store_commit, "gateway/outbox Outbox._commit/add_counts changed: update replica_commit"
    # the loop variable both use runs over the very same SCHEMA list
    assert ("execute", "<stmt>") in store_open


# =========================================================================== the model


@dataclass
class DbState:
    rows: dict[str, dict[int, tuple[bytes, str | None]]]  # seq -> (body, topic)
    counters: dict[tuple[str, str], int]
    seq: dict[str, int]
    boot: int
    kept: dict[str, dict[int, tuple[bytes, str | None]]] = field(default_factory=lambda: {l: {} for l in LANES})  # retained_{lane}

    def reconciles(self) -> list[str]:
        bad = []
        for lane in LANES:
            c = {name: v for (l, name), v in self.counters.items() if l == lane}
            dropped = sum(v for name, v in c.items() if name.startswith("dropped:"))
            if c.get("produced", 0) != c.get("acknowledged", 0) + len(self.rows[lane]) + c.get("expired", 0) + dropped:
                bad.append(f"{lane} counters do not reconcile: {c} with {len(self.rows[lane])} rows")
        return bad


def read_state(db: apsw.Connection) -> DbState:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
    rows = {lane: {q: (b, t) for q, b, t in db.execute(f"SELECT seq, body, topic FROM {lane}").fetchall()}
            if lane in tables else {} for lane in LANES}
    counters = {(l, n): v for l, n, v in db.execute("SELECT lane, name, value FROM counters").fetchall()} if "counters" in tables else {}
    seq = dict(db.execute("SELECT name, seq FROM sqlite_sequence").fetchall()) if "sqlite_sequence" in tables else {}
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
    kept = {lane: {q: (b, t) for q, b, t in db.execute(f"SELECT seq, body, topic FROM retained_{lane}").fetchall()}
            if f"retained_{lane}" in tables else {} for lane in LANES}
    return DbState(rows, counters, {lane: seq.get(lane, 0) for lane in LANES}, int(meta.get("boot", 0)), kept)


@dataclass
class Model:
    """What the program knows is durable: every commit that returned."""

    state: DbState = field(default_factory=lambda: DbState({l: {} for l in LANES}, {}, {l: 0 for l in LANES}, 0))
    hwm: dict[str, int] = field(default_factory=lambda: {l: 0 for l in LANES})  # highest seq a returned commit handed out
    acked: dict[str, set[tuple[bytes, str | None]]] = field(default_factory=lambda: {l: set() for l in LANES})  # deleted by returned commits
    inflight: tuple | None = None  # ("open",) or ("commit", rows, acks, retain), between its BEGIN and its return
    commit_issued: bool = False
    returned_commits: int = 0

    def applied(self) -> DbState:
        """The state if the transaction in flight committed."""
        s = self.state
        rows = {l: dict(r) for l, r in s.rows.items()}
        kept = {l: dict(r) for l, r in s.kept.items()}
        counters, seq = dict(s.counters), dict(s.seq)
        if self.inflight[0] == "open":
            return DbState(rows, counters, seq, s.boot + 1, kept)
        _, new, acks, retain = self.inflight
        for lane in LANES:  # in replica_commit's order: a lane's inserts, then its deletes (moves, retaining)
            if new[lane]:
                for _, body, topic in new[lane]:
                    seq[lane] += 1  # AUTOINCREMENT: one writer, so the batch gets consecutive seqs
                    rows[lane][seq[lane]] = (body, topic)  # a record: body and topic column
                counters[(lane, "produced")] = counters.get((lane, "produced"), 0) + len(new[lane])
            n = size = 0
            for a, b in acks[lane]:
                for q in [q for q in rows[lane] if a <= q <= b]:
                    if retain:
                        kept[lane][q] = rows[lane][q]
                        size += len(rows[lane][q][0])
                    del rows[lane][q]
                    n += 1
            if acks[lane] and retain:  # the bytes' upsert makes its row even for nothing moved
                counters[(lane, "retained_bytes")] = counters.get((lane, "retained_bytes"), 0) + size
            if n:
                counters[(lane, "acknowledged")] = counters.get((lane, "acknowledged"), 0) + n
                if retain:
                    counters[(lane, "retained")] = counters.get((lane, "retained"), 0) + n
        return DbState(rows, counters, seq, s.boot, kept)

    def returned(self, seqs: dict[str, int] | None = None, deleted: dict[str, int] | None = None) -> None:
        new = self.applied()
        if self.inflight[0] == "commit":
            _, _, acks, _ = self.inflight
            assert new.seq == {l: seqs.get(l, self.state.seq[l]) for l in LANES}, "commit returned unexpected seqs"
            for lane in LANES:
                gone = self.state.rows[lane].keys() - new.rows[lane].keys()
                assert len(gone) == deleted.get(lane, 0), "commit deleted an unexpected number of rows"
                self.acked[lane] |= {self.state.rows[lane][q] for q in gone}
                self.hwm[lane] = max(self.hwm[lane], seqs.get(lane, 0))
            self.returned_commits += 1
        self.state, self.inflight, self.commit_issued = new, None, False

    def check(self, db: DbState) -> tuple[list[str], DbState | None]:
        """Violations of durability by the state found after a crash, and the state it matched."""
        candidates = [self.state]
        if self.inflight is not None and self.commit_issued:
            candidates.append(self.applied())  # a COMMIT in flight may or may not have made it: all or nothing
        for c in candidates:
            if db == c:
                return db.reconciles(), c
        c = candidates[-1] if len(candidates) > 1 and _distance(db, candidates[-1]) < _distance(db, candidates[0]) else candidates[0]
        bad = []
        for lane in LANES:
            for q, body in self.state.rows[lane].items():  # committed, returned, not deleted by a returned commit
                if db.rows[lane].get(q) != body and q in c.rows[lane]:
                    bad.append(f"lost: {lane} seq {q} committed but {'missing' if q not in db.rows[lane] else 'changed'}")
            for q in c.rows[lane].keys() - self.state.rows[lane].keys() - db.rows[lane].keys():
                bad.append(f"partial: {lane} seq {q} of the transaction in flight is missing, others made it")
            for q, body in db.rows[lane].items():
                if c.rows[lane].get(q) == body:
                    continue
                if body in self.acked[lane]:
                    bad.append(f"resurrected: {lane} seq {q} was deleted by a returned commit")
                elif q not in self.state.rows[lane]:
                    bad.append(f"uncommitted: {lane} seq {q} is from a transaction that did not commit")
            for q in c.kept[lane].keys() ^ db.kept[lane].keys():
                bad.append(f"retained: {lane} seq {q} {'missing from' if q in c.kept[lane] else 'unexpected in'} retained_{lane}")
            if db.seq[lane] < self.hwm[lane]:
                bad.append(f"seq_reuse: {lane} sqlite_sequence {db.seq[lane]} < {self.hwm[lane]} already handed out")
            elif db.seq[lane] != c.seq[lane]:
                bad.append(f"sequence: {lane} sqlite_sequence {db.seq[lane]}, expected {c.seq[lane]}")
        if db.counters != c.counters:
            bad.append(f"counters: {db.counters} != expected {c.counters}")
        if db.boot < self.state.boot:
            bad.append(f"boot went back: {db.boot} < {self.state.boot}")
        return bad + db.reconciles() or ["mismatch (unclassified)"], None


def _distance(db: DbState, c: DbState) -> int:
    return (sum(len(set(db.rows[l].items()) ^ set(c.rows[l].items())) + len(set(db.kept[l].items()) ^ set(c.kept[l].items()))
                for l in LANES) + (db.counters != c.counters) + (db.seq != c.seq))


# =========================================================================== the workload


@dataclass
class ChainResult:
    crashes: int = 0
    commits: int = 0
    applied_in_flight: int = 0  # crashes where the COMMIT in flight turned out durable
    violations: list[tuple[int, list[str]]] = field(default_factory=list)
    crash_ops: dict = field(default_factory=dict)
    checkpoints: int = 0
    sectors_lost: int = 0
    sectors_kept: int = 0


class Workload:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.n = 0

    def body(self, lane: str) -> bytes:
        self.n += 1
        pad = "x" * self.rng.randint(40, 400 if lane == "telemetry" else 120)
        return f'{{"n":{self.n},"lane":"{lane}","pad":"{pad}"}}'.encode()

    def topic(self, lane: str) -> str | None:
        """Some alarms and events name a topic of their own (no rng draw: the crash points stay put)."""
        return None if lane == "telemetry" else (None, "cmd/result", None, "alert/volunteers")[self.n % 4]

    def step(self, model: Model, reader: apsw.Connection) -> tuple[dict, dict]:
        """The next commit, as the outbox writer would batch it: records and/or acked ranges."""
        rng = self.rng
        rows = {lane: [] for lane in LANES}
        acks = {lane: [] for lane in LANES}
        r = rng.random()
        sizes = {"alarm": (1, 2), "event": (1, 3), "telemetry": (5, 80)}
        lanes = ["alarm"] if r < 0.25 else ["event"] if r < 0.45 else ["telemetry"] if r < 0.75 else \
            [l for l in LANES if rng.random() < 0.6]
        for lane in lanes:
            ts = 1.7e9 + self.n
            rows[lane] = [(ts, self.body(lane), self.topic(lane)) for _ in range(rng.randint(*sizes[lane]))]
        if rng.random() < 0.45 or not any(rows.values()):
            for lane in LANES:
                if rng.random() < 0.6:
                    acks[lane] = self.acks_for(model, reader, lane)
        return rows, acks

    def acks_for(self, model: Model, reader: apsw.Connection, lane: str) -> list[tuple[int, int]]:
        """PUBACKed ranges, from what the uplink fetched through the read-only connection."""
        fetched = reader.execute(f"SELECT seq, body, topic FROM {lane} WHERE seq > ? ORDER BY seq LIMIT ?", (0, 100)).fetchall()
        expected = [(q, b, t) for q, (b, t) in sorted(model.state.rows[lane].items())[:100]]
        assert fetched == expected, "the reader does not see exactly the committed rows"
        ranges, i = [], 0
        while i < len(fetched) and len(ranges) < 3:
            j = min(len(fetched), i + self.rng.randint(1, 40))
            if self.rng.random() < 0.7:
                # may reach over gaps left by earlier deletes, never past what was published
                ranges.append((fetched[i][0], min(fetched[j - 1][0] + self.rng.randint(0, 2), fetched[-1][0])))
            i = j + self.rng.randint(0, 5)
        merged: list[tuple[int, int]] = []
        for a, b in ranges:
            if merged and a <= merged[-1][1]:
                a = merged[-1][1] + 1
            if a <= b:
                merged.append((a, b))
        return merged


def run_chain(tmp_path, *, seed: int, crashes: int, synchronous: str = "FULL", torn: bool = False,
              writeback: float = 0.0, stop_at_violation: bool = False) -> ChainResult:
    """Boot, work, lose power at a random I/O operation, check the durable image; ``crashes`` times."""
    rng = random.Random(seed)
    vfs = PowerLossVFS(f"powerloss-{seed}-{synchronous}-{torn}", rng=random.Random(seed * 7919 + 1), writeback=writeback)
    path = str(tmp_path / "outbox.db")
    model = Model()
    marked: set[bytes] = set()  # alarm bodies committed with a mark
    work = Workload(seed + 1)
    result = ChainResult()
    conns: list[apsw.Connection] = []  # connections of the current boot

    def trace(cursor, sql, bindings):
        if model.inflight is not None:
            if sql == "COMMIT":
                model.commit_issued = True
            elif model.commit_issued and model.inflight[0] == "open":
                model.returned()  # _open_db goes on after its COMMIT: that COMMIT has returned
        return True

    try:
        for k in range(crashes):
            # -- a boot: open like the outbox, then commit until the power goes
            r = rng.random()
            if r < 0.15:  # early: while opening, or in the first commits
                vfs.arm(rng.randint(1, 25))
            elif r < 0.3:  # at a commit's fsync (the commit point)
                vfs.arm(rng.randint(1, 12), {"xSync wal"})
            elif r < 0.4:  # in a checkpoint, copying pages back into the database
                vfs.arm(rng.randint(1, 40), {"xWrite db"})
            elif r < 0.45:  # at the end of a checkpoint: sizing the database, its fsync
                vfs.arm(rng.randint(1, 3), {"xTruncate db", "xSync db"})
            else:
                vfs.arm(rng.randint(1, 700))
            try:
                writer = apsw.Connection(path, vfs=vfs.name)
                conns.append(writer)
                writer.exec_trace = trace
                assert_no_mmap(writer)
                autocheckpoint_like_sqlite(writer)  # so a COMMIT returns exactly when SQLite committed
                model.inflight = ("open",)
                replica_open_db(writer)  # the trace marks its COMMIT returned
                assert model.inflight is None
                if synchronous != "FULL":
                    writer.execute(f"PRAGMA synchronous={synchronous}")  # the negative control
                reader = apsw.Connection(path, vfs=vfs.name)
                conns.append(reader)
                reader.execute("PRAGMA query_only=1")
                for c in conns[:-2]:  # the previous boot's checker, kept open so its close is not a checkpoint
                    c.close()
                del conns[:-2]
                while True:
                    rows, acks = work.step(model, reader)
                    retain = model.returned_commits % 7 != 6  # retention on, as by default; now and then off
                    model.inflight = ("commit", rows, acks, retain)
                    mark = [(rows["alarm"][0][1].decode(), "alarm", 0)] if rows["alarm"] else None  # a producer's mark
                    if mark:
                        marked.add(rows["alarm"][0][1])
                    seqs, deleted = replica_commit(writer, rows, acks, retain_at=1.7e9 + model.returned_commits if retain else None,
                                                   marks=mark)
                    model.returned(seqs, deleted)
            except apsw.Error:
                if not vfs.crashed:
                    raise
            at = vfs.crashed_at  # e.g. "xSync wal": the operation that did not happen
            result.crash_ops[at] = result.crash_ops.get(at, 0) + 1
            vfs.crash(conns, torn=torn)
            conns.clear()
            result.crashes += 1

            # -- after the power comes back: what does a fresh connection find?
            vfs.disarm()
            checker = apsw.Connection(path, vfs=vfs.name)
            conns.append(checker)
            try:
                qc = [r[0] for r in checker.execute("PRAGMA quick_check").fetchall()]
                found = read_state(checker) if qc == ["ok"] else None
            except apsw.Error as exc:
                qc, found = [repr(exc)], None
            if found is None:
                violations, matched = [f"corrupt: quick_check {qc[:3]}"], None
            else:
                violations, matched = model.check(found)
                violations += marks_agree(checker, found, marked)
            if violations:
                result.violations.append((k, violations))
                if stop_at_violation:
                    break
                raise AssertionError(f"crash {k} at {at}: " + "; ".join(violations[:8]))
            if matched is not model.state:
                result.applied_in_flight += 1
            model.state, model.inflight, model.commit_issued = matched, None, False
            for lane in LANES:
                model.hwm[lane] = max(model.hwm[lane], matched.seq[lane])
    finally:
        if vfs.crashed:
            vfs.crash(conns)
        for c in conns:
            c.close()
        result.commits = model.returned_commits
        result.checkpoints = sum(n for what, n in result.crash_ops.items() if what.endswith(" db"))
        result.sectors_lost, result.sectors_kept = vfs.sectors_lost, vfs.sectors_kept
        vfs.close()
    return result


def marks_agree(db: apsw.Connection, found: DbState, marked: set[bytes]) -> list[str]:
    """A mark and its record are durable together: every mark names the seq its record has (while the record is
    kept), and every marked record still in its lane has its mark (gateway/outbox/marks.py)."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name='emitted'").fetchall():
        return []
    got = {k: (lane, q) for k, lane, q in db.execute("SELECT key, lane, seq FROM emitted").fetchall()}
    bad = [f"mark {k[:20]} names {lane} #{q}, which holds another record" for k, (lane, q) in got.items()
           if (row := found.rows[lane].get(q) or found.kept[lane].get(q)) is not None and row[0].decode() != k]
    if len(got) < 1000:  # none pruned yet
        bad += [f"alarm #{q} committed without its mark" for q, (body, _) in found.rows["alarm"].items()
                if body in marked and body.decode() not in got]
    return bad


# =========================================================================== the tests


@pytest.mark.parametrize("torn", [False, True], ids=["drop-unsynced", "torn-and-writeback"])
def test_full_sync_loses_no_acknowledged_record_at_any_crash_point(tmp_path, torn):
    t0 = time.monotonic()
    res = run_chain(tmp_path, seed=20240 + torn, crashes=120, torn=torn, writeback=0.02 if torn else 0.0)
    assert not res.violations
    assert res.crashes == 120 and res.commits > 1000, res
    # the crash points really fell everywhere: WAL frame writes, the commit's fsync, and checkpoints (db writes/syncs)
    assert res.crash_ops.get("xWrite wal", 0) > 20, res.crash_ops
    assert res.crash_ops.get("xSync wal", 0) > 3, res.crash_ops
    assert res.checkpoints > 0 and res.crash_ops.get("xSync db", 0) > 0, res.crash_ops
    if torn:  # some unsynced writes survived; sometimes a whole commit did: "all" is explored too
        assert res.sectors_kept > 0 and res.applied_in_flight > 0, res
    else:  # a commit is durable exactly at its fsync, and COMMIT returns right after it
        assert res.applied_in_flight == 0, res
    print(f"{res.crashes} crashes, {res.commits} commits, {res.applied_in_flight} in-flight commits survived, "
          f"{res.crash_ops}, unsynced sectors lost {res.sectors_lost} kept {res.sectors_kept}, {time.monotonic() - t0:.1f}s")


@pytest.mark.parametrize("synchronous", ["NORMAL", "OFF"])
def test_negative_control_weaker_sync_loses_committed_records(tmp_path, synchronous):
    """The harness bites: without an fsync per commit, records whose COMMIT returned vanish.

    With WAL + NORMAL, SQLite syncs the WAL only at checkpoints, so every
    commit since the last checkpoint lives in the volatile layer and a crash
    takes it (and AUTOINCREMENT's sqlite_sequence row with it, so the seqs
    would be handed out again).  That is why store.py insists on FULL.
    """
    res = run_chain(tmp_path, seed=7, crashes=40, synchronous=synchronous, stop_at_violation=True)
    assert res.violations, f"synchronous={synchronous} lost nothing in {res.crashes} crashes: the harness does not bite"
    found = res.violations[0][1]
    assert any(v.startswith(("lost:", "seq_reuse:", "corrupt:")) for v in found), found
    print(f"synchronous={synchronous}: crash {res.violations[0][0]}: {found[:4]}")


# =========================================================================== the harness itself


def test_harness_keeps_exactly_what_was_synced(tmp_path):
    p = str(tmp_path / "f")
    st = _FileState(p)
    st.write(b"a" * 1000, 0)
    st.sync()
    st.write(b"b" * 100, 900)  # unsynced overwrite + extension
    st.truncate(950)
    st.write(b"c" * 10, 2000)
    assert st.size == 2010 and st.read(60, 890) == b"a" * 10 + b"b" * 50
    assert st.read(20, 1990) == bytes(10) + b"c" * 10  # truncated then grown: zeros, not the old bytes
    st.lose_power(None)
    assert st.size == 1000 and st.read(2000, 0) == b"a" * 1000
    # torn: any subset of the dirty sectors, and the truncation or not, may have made it
    seen = set()
    for seed in range(40):
        st.write(b"d" * 1200, 0)
        st.truncate(1100)
        st.lose_power(random.Random(seed))
        data = st.read(4000, 0)
        assert len(data) in (1000, 1024, 1100), len(data)  # sector 1 or 2 made it, or neither
        for i in range(0, 1000, SECTOR):  # each sector whole: old or new, never mixed
            chunk = data[i:min(i + SECTOR, 1000)]
            assert chunk in (b"a" * len(chunk), b"d" * len(chunk)), i
        seen.add(data[:1000])
        st.write(b"a" * 1000, 0)
        st.truncate(1000)
        st.sync()
    assert len(seen) > 2  # it really does tear
    st.close()


def test_harness_crash_drops_an_unsynced_commit(tmp_path):
    vfs = PowerLossVFS("powerloss-unit")
    path = str(tmp_path / "t.db")
    try:
        db = apsw.Connection(path, vfs=vfs.name)
        db.execute("PRAGMA journal_mode=WAL").fetchall()
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("INSERT INTO t VALUES (2)")  # committed, never fsynced
        assert db.execute("SELECT count(*) FROM t").fetchall() == [(2,)]
        vfs.crash([db])
        db = apsw.Connection(path, vfs=vfs.name)
        assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
        db.close()
    finally:
        vfs.close()
