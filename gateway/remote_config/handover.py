"""The folder the daemon and the applier share: configs handed over one way, results the other.

::

    /var/lib/canopy/updates/                   (0700, the canopy user; bundles land here too)
        <ts>-<issuer>-<id>.config              a verified envelope, as received; the applier's path unit starts on it
        config-results/<ts>-<issuer>-<id>.json what became of it, for the daemon to publish (config.result)

The daemon runs unprivileged on a read-only file system, so it cannot change
``/etc/canopy`` itself: it writes the envelope here (``.part``, fsync, rename,
so the applier never sees half a file), and the applier, root, checks it all
again.  A result file is the durable queue across the restart: the daemon
publishes it through its outbox and only then deletes it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger("canopy.remote_config")

SUFFIX = ".config"
RESULTS = "config-results"
MAX_RESULT_BYTES = 64 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def entry_name(issuer: str, envelope_id: str, now: float | None = None) -> str:
    """``<ms>-<issuer>-<id>``: sorts by arrival, names who sent what (ids are already file-safe; made sure anyway)."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:013d}-{_SAFE.sub('_', issuer)[:64]}-{_SAFE.sub('_', envelope_id)[:128]}"


def write_atomic(path: Path, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """``data`` at ``path`` whole or not at all: a ``.part`` file, fsync-ed, renamed over, the folder fsync-ed."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Handover:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    @property
    def results_dir(self) -> Path:
        return self.folder / RESULTS

    def exists(self) -> bool:
        """The applier's folder is there (made by the installer); without it nobody would apply a config."""
        return self.folder.is_dir()

    # -- daemon -> applier ------------------------------------------------------------------
    def submit(self, name: str, payload: bytes) -> Path:
        path = self.folder / f"{name}{SUFFIX}"
        write_atomic(path, payload)
        return path

    def pending(self) -> list[Path]:
        """Handed-over configs, oldest first."""
        try:
            return sorted(p for p in self.folder.glob(f"*{SUFFIX}") if p.is_file())
        except OSError:
            return []

    def busy(self) -> bool:
        return bool(self.pending())

    # -- applier -> daemon ------------------------------------------------------------------
    def write_result(self, name: str, fields: dict) -> Path:
        """A result for the daemon to publish; the folder and the file belong to the folder's owner (the daemon's user)."""
        st = self.folder.stat()
        owner = (st.st_uid, st.st_gid)
        self.results_dir.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.results_dir, *owner)
        path = self.results_dir / f"{name}.json"
        body = {k: v for k, v in fields.items() if v is not None}
        write_atomic(path, json.dumps(body, sort_keys=True).encode(), owner=owner)
        return path

    def results(self) -> list[tuple[Path, dict | None]]:
        """Every result waiting, oldest first, with its fields (None for a file that cannot be read as one)."""
        try:
            paths = sorted(self.results_dir.glob("*.json"))
        except OSError:
            return []
        out = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    raw = f.read(MAX_RESULT_BYTES + 1)
                body = json.loads(raw) if len(raw) <= MAX_RESULT_BYTES else None
            except (OSError, ValueError):
                body = None
            out.append((path, body if isinstance(body, dict) else None))
        return out
