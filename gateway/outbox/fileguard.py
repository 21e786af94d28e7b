"""Is the outbox file at its path still the one the daemon has open?  And putting a copy back when not.

SQLite keeps writing to a file deleted under it (and to a WAL deleted
beside it): every commit "succeeds" into an inode that disappears with the
process.  So the store compares the device and inode of the path with those it
opened, every few seconds and after a failed commit, and when they differ it
writes a consistent copy of what it has open (``VACUUM INTO``) back at the
path: same epoch, same sequences, same counters, every pending record.

The functions here are plain, blocking file operations: call them in a thread.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True)
class FileId:
    dev: int
    ino: int


def file_id(path: str) -> FileId | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return FileId(st.st_dev, st.st_ino)


@dataclass(frozen=True)
class OpenFiles:
    """The identities of the database file and its WAL as opened."""

    main: FileId | None
    wal: FileId | None

    @classmethod
    def of(cls, path: str) -> OpenFiles:
        return cls(file_id(path), file_id(path + "-wal"))


def problem(path: str, opened: OpenFiles) -> str | None:
    """``deleted`` or ``replaced`` when the path (or its WAL) is no longer what was opened; None when it is."""
    for name, known in ((path, opened.main), (path + "-wal", opened.wal)):
        if known is None:
            continue
        now = file_id(name)
        if now is None:
            return "deleted"
        if now != known:
            return "replaced"
    return None


def prepare_copy(tmp: str) -> None:
    """Make the folder (0700) if it went too, and clear a copy left by an earlier failed attempt."""
    os.makedirs(os.path.dirname(tmp) or ".", mode=0o700, exist_ok=True)
    for suffix in ("", *SIDE_FILES):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp + suffix)


def put_back(tmp: str, path: str, opened: OpenFiles, stamp: int) -> str | None:
    """Move the copy ``tmp`` to ``path`` durably; returns where a foreign file found there was kept.

    Called once the old connections are closed.  A WAL or shared-memory file that is
    still ours would be replayed into the copy: removed.  Whatever else is at the
    path (a file put there by someone) is moved aside, never deleted.
    """
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    moved_to = None
    if file_id(path) is not None and file_id(path) != opened.main:
        moved_to = f"{path}.replaced-{stamp}"
        os.replace(path, moved_to)
        for suffix in SIDE_FILES:
            if os.path.exists(path + suffix) and (suffix != "-wal" or file_id(path + suffix) != opened.wal):
                os.replace(path + suffix, moved_to + suffix)
    for suffix in SIDE_FILES:  # ours, left behind by a file that was deleted or moved under us
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return moved_to
