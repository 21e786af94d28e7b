"""A file-level power-loss harness for SQLite, built on an apsw VFS.

``PowerLossVFS`` inherits the default (unix) VFS and models a disk with a
volatile write cache:

* The real file on disk *is* the durable image.  It is written only when
  SQLite calls ``xSync`` on the file (or, if asked, by simulated background
  writeback).  Every ``xWrite`` / ``xTruncate`` goes to an in-memory layer of
  dirty sectors per file; ``xRead`` and ``xFileSize`` see that layer merged
  over the durable image, so the running program sees what a real page cache
  would show it.
* ``xSync`` makes everything written to that file so far durable (fsync is per
  file, not per handle: the layer is shared by every handle on the path).
* A crash (``crash()``) throws the volatile layer away.  What survives is
  exactly what fsync guaranteed.  Optionally (``torn=True``) a random subset
  of the dirty sectors, and the pending truncation or not, reach the disk
  first: unsynced writes may be lost in any combination at sector
  granularity, which models write reordering by the kernel and the drive.
  ``writeback`` > 0 also persists random dirty sectors at random moments
  while the program runs (the kernel flushes dirty pages when it likes).

What SQLite is entitled to assume, and what the model grants:

* writes before an ``xSync`` of a file are durable once it returns: yes;
* nothing about unsynced writes (order, atomicity above the sector): the
  model keeps any subset of dirty 512-byte sectors;
* SQLITE_IOCAP_POWERSAFE_OVERWRITE (reported by the unix VFS we inherit):
  bytes outside a write are never damaged by it: yes, a sector is either its
  durable content or its latest content, and both agree outside what was
  written;
* the -shm file: the unix VFS maps it directly (apsw passes the xShm methods
  through to the inherited file), so it is not modelled.  SQLite does not
  need it to survive: after every connection of the crashed "boot" is
  closed, the first new connection takes the dead-man-switch lock, truncates
  the -shm and rebuilds the index from the -wal file;
* creating and deleting files (directory entries) are durable at once.  The
  unix VFS syncs the directory on the first sync of a new journal/WAL; a
  lost unlink of a rollback journal is the one case this model is kinder
  than a real disk, and only matters outside WAL mode.

Crash points: ``arm(n)`` makes the n-th mutating operation (xWrite, xSync,
xTruncate, xDelete) from now on fail instead of happening: the durable image
is frozen just before it and every later operation fails too, so the
crashed connection cannot change anything afterwards (not even while it is
being closed).  Then call ``crash(connections)``: it drops the volatile layer
(or tears it), closes the crashed connections (their handles are dead, so
closing only releases the locks) and powers the "machine" back on.  A fresh
``apsw.Connection(path, vfs=vfs.name)`` sees the durable image only.

Only main databases, rollback journals and WAL files are modelled; temporary
files go straight to the inherited VFS.  Memory-mapped I/O would bypass
xRead, so ``PRAGMA mmap_size`` must stay 0 (apsw's default build:
SQLITE_DEFAULT_MMAP_SIZE=0; ``assert_no_mmap`` checks a connection).
"""

from __future__ import annotations

import os
import random
from collections import Counter

import apsw

SECTOR = 512

_OPEN = apsw.mapping_open_flags
_MODELLED = _OPEN["SQLITE_OPEN_MAIN_DB"] | _OPEN["SQLITE_OPEN_MAIN_JOURNAL"] | _OPEN["SQLITE_OPEN_WAL"]
_FCNTL_SIZE_HINT = apsw.mapping_file_control["SQLITE_FCNTL_SIZE_HINT"]
_FCNTL_CHUNK_SIZE = apsw.mapping_file_control["SQLITE_FCNTL_CHUNK_SIZE"]


class PowerCut(apsw.IOError):
    """Raised by every modelled I/O operation from the crash point until ``crash()``."""


class _FileState:
    """One path: the durable image (the real file) plus its volatile layer."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = self.durable_size()  # apparent (volatile) size
        self.floor = self.size  # durable bytes at or past this were truncated away (not yet synced)
        self.dirty: dict[int, bytearray] = {}  # sector index -> latest content of the whole sector

    def durable_size(self) -> int:
        return os.fstat(self.fd).st_size

    # -- what the program sees ---------------------------------------------------
    def _durable_sector(self, i: int) -> bytearray:
        off = i * SECTOR
        data = os.pread(self.fd, min(SECTOR, self.floor - off), off) if off < self.floor else b""
        return bytearray(data.ljust(SECTOR, b"\0"))

    def read(self, amount: int, offset: int) -> bytes:
        end = min(offset + amount, self.size)
        if end <= offset:
            return b""
        buf = bytearray(end - offset)
        n = min(end, self.floor) - offset
        if n > 0:
            got = os.pread(self.fd, n, offset)
            buf[: len(got)] = got
        for i in range(offset // SECTOR, (end - 1) // SECTOR + 1):
            sec = self.dirty.get(i)
            if sec is not None:
                lo, hi = max(offset, i * SECTOR), min(end, (i + 1) * SECTOR)
                buf[lo - offset : hi - offset] = sec[lo - i * SECTOR : hi - i * SECTOR]
        return bytes(buf)  # short if past the end: SQLite zero-fills and carries on

    def write(self, data: bytes, offset: int) -> None:
        end = offset + len(data)
        for i in range(offset // SECTOR, (end - 1) // SECTOR + 1):
            sec = self.dirty.get(i)
            if sec is None:
                sec = self.dirty[i] = self._durable_sector(i)
            lo, hi = max(offset, i * SECTOR), min(end, (i + 1) * SECTOR)
            sec[lo - i * SECTOR : hi - i * SECTOR] = data[lo - offset : hi - offset]
        self.size = max(self.size, end)

    def truncate(self, newsize: int) -> None:
        if newsize < self.size:
            self.floor = min(self.floor, newsize)
            for i in [i for i in self.dirty if i * SECTOR >= newsize]:
                del self.dirty[i]
            i, r = divmod(newsize, SECTOR)
            if r and i in self.dirty:
                self.dirty[i][r:] = bytes(SECTOR - r)
        self.size = newsize  # growing: the new bytes read as zeros (floor <= size always)

    # -- what reaches the disk ----------------------------------------------------
    def _persist(self, sectors, truncate: bool) -> None:
        if truncate and self.floor < self.durable_size():
            os.ftruncate(self.fd, self.floor)
        for i in sectors:
            n = min(SECTOR, self.size - i * SECTOR)
            if n > 0:
                os.pwrite(self.fd, bytes(self.dirty[i][:n]), i * SECTOR)

    def sync(self) -> None:
        """fsync: the durable image becomes exactly what the program sees."""
        self._persist(sorted(self.dirty), truncate=True)
        if self.durable_size() != self.size:
            os.ftruncate(self.fd, self.size)
        self.dirty.clear()
        self.floor = self.size

    def writeback(self, rng: random.Random, share: float) -> None:
        """The kernel writes some dirty sectors back on its own (they stay dirty: not synced)."""
        if self.dirty:
            self._persist([i for i in sorted(self.dirty) if rng.random() < share], truncate=rng.random() < share)

    def lose_power(self, rng: random.Random | None = None, share: float = 0.5) -> int:
        """Drop the volatile layer; ``rng``: first persist each dirty sector with chance ``share``."""
        kept = []
        if rng is not None:  # torn: some unsynced writes made it, in no particular order
            kept = [i for i in sorted(self.dirty) if rng.random() < share]
            self._persist(kept, truncate=rng.random() < share)
        lost = len(self.dirty) - len(kept)
        self.dirty.clear()
        self.size = self.floor = self.durable_size()
        return lost

    def close(self) -> None:
        os.close(self.fd)


class PowerLossVFS(apsw.VFS):
    """See the module docstring.  ``rng`` drives torn crashes and background writeback."""

    def __init__(self, name: str = "powerloss", *, rng: random.Random | None = None, writeback: float = 0.0):
        self.name = name
        self.rng = rng or random.Random(0)
        self.writeback = writeback  # chance, per mutating operation, of a background writeback
        self.files: dict[str, _FileState] = {}
        self.generation = 0  # bumped at every crash: handles of an older generation are dead
        self.down = False  # between the crash point and crash(): all modelled I/O fails
        self.ops = 0  # mutating operations so far
        self._crash_at: int | None = None
        self._crash_kinds: frozenset[str] | None = None
        self._counted = 0  # operations of the armed kinds so far
        self.crashes = 0
        self.crash_ops: Counter[str] = Counter()  # what the crashes interrupted, e.g. "xSync wal": 3
        self.crashed_at: str | None = None
        self.sectors_lost = 0  # dirty sectors that a crash threw away
        self.sectors_kept = 0  # ... and that a torn crash let through
        super().__init__(name, "")

    # -- control -----------------------------------------------------------------
    def arm(self, n: int, kinds: set[str] | None = None) -> None:
        """Crash instead of performing the n-th mutating operation from now (n >= 1).

        ``kinds`` counts only operations with these labels, e.g. {"xSync wal",
        "xSync db"} for "at the n-th fsync"; labels are "<method> <db|wal|journal>".
        """
        self._crash_at = n
        self._crash_kinds = frozenset(kinds) if kinds else None
        self._counted = 0

    def disarm(self) -> None:
        self._crash_at = None

    @property
    def crashed(self) -> bool:
        return self.down

    def crash(self, connections=(), *, torn: bool = False) -> None:
        """Cut the power now (if not already cut at an armed point), then boot again.

        The volatile layer of every file is lost (``torn``: partly written
        first, each dirty sector with a chance drawn per crash from 10% to
        100%); ``connections`` (those open at the crash) are closed, which
        with dead handles only releases their locks and the shared memory.
        """
        if not self.down:
            self.down = True
            self.crashed_at = "explicit"
        self._crash_at = None
        self.crashes += 1
        self.crash_ops[self.crashed_at or "?"] += 1
        share = self.rng.choice((0.1, 0.5, 0.9, 1.0)) if torn else 0.0
        for st in self.files.values():
            dirty = len(st.dirty)
            lost = st.lose_power(self.rng if torn else None, share)
            self.sectors_lost += lost
            self.sectors_kept += dirty - lost
        self.generation += 1
        for conn in connections:
            try:
                conn.close(True)
            except apsw.Error:
                pass
        self.down = False
        self.crashed_at = None

    def close(self) -> None:
        for st in self.files.values():
            st.close()
        self.files.clear()
        self.unregister()

    # -- the operation counter -----------------------------------------------------
    def _op(self, what: str, path: str) -> None:
        if self.down:
            raise PowerCut(f"power is off ({what})")
        self.ops += 1
        label = f"{what} {path.rsplit('-', 1)[-1] if path.endswith(('-wal', '-journal')) else 'db'}"
        if self._crash_at is not None and (self._crash_kinds is None or label in self._crash_kinds):
            self._counted += 1
            if self._counted >= self._crash_at:
                self.down = True
                self.crashed_at = label
                raise PowerCut(f"power cut at operation {self.ops} ({what} {path})")
        if self.writeback and self.rng.random() < self.writeback:
            for st in self.files.values():
                st.writeback(self.rng, 0.5)

    def state(self, path: str) -> _FileState:
        st = self.files.get(path)
        if st is None:
            st = self.files[path] = _FileState(path)
        return st

    # -- VFS methods -----------------------------------------------------------------
    def xOpen(self, name, flags):
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        if path is None or not (flags[0] & _MODELLED):
            return apsw.VFSFile("", name, flags)  # temp files: not durable state
        if self.down:
            raise PowerCut("power is off (xOpen)")
        return _PowerLossFile(self, name, path, flags)

    def xDelete(self, filename, syncdir):
        path = os.path.abspath(filename)
        if path in self.files:
            self._op("xDelete", path)
            self.files.pop(path).close()
        return super().xDelete(filename, syncdir)


class _PowerLossFile(apsw.VFSFile):
    """A handle: data goes through the shared per-path state; locks and shm go to the unix file."""

    def __init__(self, vfs: PowerLossVFS, name, path: str, flags):
        super().__init__("", name, flags)  # opens (creates) the real file: locking, shm
        self.vfs = vfs
        self.path = os.path.abspath(path)
        self.generation = vfs.generation
        vfs.state(self.path)

    def _live(self, what: str) -> _FileState:
        if self.vfs.down or self.generation != self.vfs.generation:
            raise PowerCut(f"power is off ({what})" if self.vfs.down else f"{what} on a handle from before the crash")
        return self.vfs.state(self.path)

    def xRead(self, amount, offset):
        return self._live("xRead").read(amount, offset)

    def xWrite(self, data, offset):
        st = self._live("xWrite")
        self.vfs._op("xWrite", self.path)
        st.write(bytes(data), offset)

    def xTruncate(self, newsize):
        st = self._live("xTruncate")
        self.vfs._op("xTruncate", self.path)
        st.truncate(newsize)

    def xSync(self, flags):
        st = self._live("xSync")
        self.vfs._op("xSync", self.path)
        st.sync()

    def xFileSize(self):
        return self._live("xFileSize").size

    def xFileControl(self, op, ptr):
        if op in (_FCNTL_SIZE_HINT, _FCNTL_CHUNK_SIZE):
            return True  # the unix VFS would grow the real file behind the model's back
        return super().xFileControl(op, ptr)

    def xClose(self):
        super().xClose()  # never fails: a dead handle still has to let go of its fd and locks


def autocheckpoint_like_sqlite(conn: apsw.Connection) -> None:
    """Replace SQLite's default WAL hook by the same thing written in Python.

    After a commit, SQLite's default hook runs a PASSIVE checkpoint once the
    WAL holds ``wal_autocheckpoint`` frames, and *ignores* its result: the
    commit is already durable, so COMMIT succeeds even if the checkpoint hit
    an I/O error.  apsw, however, re-raises a Python exception from a VFS
    method even when SQLite ignored the error, so a power cut during that
    checkpoint would make a durable COMMIT look failed (Python's sqlite3,
    which the outbox uses, would report success).  This hook does what
    sqlite3WalDefaultHook does and swallows the checkpoint's error, so COMMIT
    returns exactly when SQLite says it committed.
    """
    threshold = conn.execute("PRAGMA wal_autocheckpoint").fetchall()[0][0]

    def hook(c: apsw.Connection, dbname: str, frames: int) -> int:
        if threshold > 0 and frames >= threshold:
            try:
                c.wal_checkpoint(dbname, apsw.SQLITE_CHECKPOINT_PASSIVE)
            except apsw.Error:
                pass
        return apsw.SQLITE_OK

    conn.set_wal_hook(hook)


def assert_no_mmap(conn: apsw.Connection) -> None:
    """Memory-mapped reads would bypass the model."""
    rows = conn.execute("PRAGMA mmap_size").fetchall()
    assert rows in ([], [(0,)]), f"mmap is on ({rows}): reads would bypass the power-loss model"
