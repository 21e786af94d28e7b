"""A real PostgreSQL for tests: Debian's ``postgresql`` started in a temp directory on a free loopback port.

``initdb`` refuses to run as root, so as root everything runs as the unprivileged
``postgres`` user (``runuser``); as any other user it runs as that user.  Missing
PostgreSQL is an error that says what to install, never a skip: the centre's promise
is that the suite runs against both engines.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import free_port

USER = "canopy"


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `make system-deps` installs it as root "
                           "(apt-get install -y postgresql); the centre's tests need a real one")
    return Path(found[-1]).parent


class PgServer:
    """One PostgreSQL cluster in a temp directory; ``url(db)`` for each test database."""

    def __init__(self, *, durable: bool = False):
        self.durable = durable  # tests trade fsync for speed (the centre is what they kill, not PostgreSQL)
        self.bin = pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="canopy-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self._dbs = 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)

    def start(self) -> "PgServer":
        if self.as_root:
            shutil.chown(self.dir, "postgres")
        data = self.dir / "data"
        try:
            self._run("initdb", "-D", str(data), "-A", "trust", "-U", USER, "-E", "UTF8", *([] if self.durable else ["--no-sync"]))
            opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
            if not self.durable:
                opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr or exc.stdout}\n{self.log()}") from None
        return self

    def log(self) -> str:
        try:
            return (self.dir / "log").read_text()[-3000:]
        except OSError:
            return ""

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{db}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        self._dbs += 1
        name = f"{prefix}_{self._dbs}_{int(time.time() * 1000) % 100000}"
        self._run("psql", "-h", str(self.dir), "-p", str(self.port), "-U", USER, "-d", "postgres", "-q",
                  "-c", f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
