"""Where an installed Canopy lives on a board, under one root (``/`` on a board, a temporary folder in tests).

::

    /opt/canopy/<version>/        one venv per version, side by side
    /opt/canopy/current -> 0.2.0  what canopy.service runs
    /opt/canopy/good    -> 0.1.0  the last version that passed the health gate (the ops tools run from it)
    /opt/canopy/releases.json     current / good / trial boots / history (root only)
    /etc/canopy/                  site.yaml, profiles/, TLS files, release.pub
    /var/lib/canopy/              the daemon's state (0700, the canopy user)
    /var/lib/canopy/updates/      bundles handed to the applier; results it writes back
    /etc/systemd/system/          the units
    /usr/local/bin/canopy         -> /opt/canopy/current/bin/canopy
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SERVICE = "canopy.service"
USER = "canopy"


@dataclass(frozen=True)
class Layout:
    root: Path = Path("/")

    def _at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def opt(self) -> Path:
        return self._at("/opt/canopy")

    def version_dir(self, version: str) -> Path:
        return self.opt / version

    @property
    def current(self) -> Path:
        return self.opt / "current"

    @property
    def good(self) -> Path:
        return self.opt / "good"

    @property
    def releases(self) -> Path:
        return self.opt / "releases.json"

    @property
    def bin(self) -> Path:
        return self.opt / "bin"

    @property
    def etc(self) -> Path:
        return self._at("/etc/canopy")

    @property
    def release_key(self) -> Path:
        """The release key's public half, installed with the first bundle; every later bundle must match it."""
        return self.etc / "release.pub"

    @property
    def version_pin(self) -> Path:
        """A release-signed ``{"version": ...}`` that allows going back to an older version."""
        return self.etc / "version-pin.json"

    @property
    def site_config(self) -> Path:
        return self.etc / "site.yaml"

    @property
    def state(self) -> Path:
        return self._at("/var/lib/canopy")

    @property
    def updates(self) -> Path:
        return self.state / "updates"

    @property
    def command(self) -> Path:
        """``/usr/local/bin/canopy`` -> ``/opt/canopy/current/bin/canopy``."""
        return self._at("/usr/local/bin/canopy")

    @property
    def units(self) -> Path:
        return self._at("/etc/systemd/system")

    def linked_version(self, link: Path) -> str | None:
        """The version a ``current``/``good`` link points at, or None."""
        try:
            return os.path.basename(os.readlink(link))
        except OSError:
            return None


def switch_link(link: Path, version: str) -> None:
    """Point ``link`` at ``version`` atomically (a new link renamed over the old: never a moment without one)."""
    tmp = link.with_name(f".{link.name}.new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(version, tmp)
    os.replace(tmp, link)
