"""Put a verified bundle's version on the board beside the others: its venv, the folders, the units, the user.

Nothing here switches what runs (``releases`` does) or restarts anything
(``update`` does).  A bundle is unpacked next to the versions (same file system),
verified against the installed release key, refused when it would go backwards
without a release-signed pin, and installed into ``/opt/canopy/<version>`` with
pip from its own wheels only (``--no-index``: a board may have no link, and must
not take anything the manifest did not sign).  A failed venv build leaves no folder.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from gateway.ops import bundle as bundles
from gateway.ops import releases
from gateway.ops.layout import USER, Layout

log = logging.getLogger("canopy.ops")

INSTALLED_MARK = ".canopy-installed"  # written last: a version folder without it is a failed build
OPS_WRAPPER = """#!/bin/sh
# The operations tools (boot check, rollback, applier), run from the last good version:
# a trial version that cannot even start Python must not be the one that rolls itself back.
for v in {opt}/good {opt}/current; do
  [ -x "$v/bin/python" ] && exec "$v/bin/python" -m gateway.cli.ops "$@"
done
echo "canopy-ops: no Canopy version is installed under {opt}" >&2
exit 1
"""


class InstallError(Exception):
    """An install that did not happen, and why."""


VenvBuilder = Callable[[Path, Path, str], None]  # (target venv, wheels folder, pip requirement)


def pip_venv(target: Path, wheels: Path, requirement: str, python: str = sys.executable) -> None:
    """A venv at ``target`` with ``requirement`` from ``wheels`` only (no index: offline, and nothing unsigned)."""
    steps = ([python, "-m", "venv", str(target)],
             [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index", "--no-cache-dir",
              "--find-links", str(wheels), requirement])
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_FIND_LINKS": ""})
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise InstallError(f"{' '.join(cmd[:4])}… failed: {' / '.join(tail) or f'exit {done.returncode}'}")


@dataclass
class Installed:
    version: str
    set: str
    first: bool  # nothing was installed before: no release key, no version to fall back to
    fingerprint: str
    notes: list[str] = field(default_factory=list)


def install_version(bundle_tar: Path, layout: Layout, *, builder: VenvBuilder = pip_venv, create_user: bool = True,
                    expect_fingerprint: str | None = None) -> Installed:
    """Verify and install a bundle's version side by side (not yet running it); InstallError / BundleError if not."""
    trusted = _installed_key(layout)
    layout.opt.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=layout.opt) as tmp:
        folder = bundles.unpack(bundle_tar, Path(tmp))
        manifest = bundles.verify(folder, trusted, expect_fingerprint=expect_fingerprint)
        _check_version(layout, manifest.version, trusted)
        key = trusted or bundles.load_public_key((folder / bundles.PUBLIC_KEY).read_bytes(), "release.pub")
        result = Installed(manifest.version, manifest.set, trusted is None, bundles.fingerprint(key))
        _build(layout, manifest, folder, builder)
        prepare_board(layout, folder, create_user=create_user, first=trusted is None)
    return result


def _installed_key(layout: Layout):
    try:
        return bundles.load_public_key(layout.release_key.read_bytes(), str(layout.release_key))
    except FileNotFoundError:
        if releases.load(layout).good is not None:
            raise InstallError(f"{layout.release_key} is missing but versions are installed: restore it "
                               "(its fingerprint is on the release page) before updating") from None
        return None


def installed_versions(layout: Layout) -> list[str]:
    return sorted(mark.parent.name for mark in layout.opt.glob(f"*/{INSTALLED_MARK}"))


def _check_version(layout: Layout, version: str, trusted) -> None:
    """Forward only: a version older than (or equal to) the good one needs a release-signed pin naming it."""
    try:
        new = Version(version)
    except InvalidVersion:
        raise InstallError(f"bundle version {version!r} is not a version number") from None
    good = releases.load(layout).good
    if good is None or new > Version(good):
        return
    if (layout.version_dir(version) / INSTALLED_MARK).exists() and new == Version(good):
        raise InstallError(f"version {version} is already installed and running")
    pinned = pinned_version(layout, trusted)
    if pinned != version:
        raise InstallError(f"version {version} is not newer than the installed {good}: going back needs a "
                           f"release-signed pin naming {version} in {layout.version_pin}" + (f" (the pin names {pinned})" if pinned else ""))


def pinned_version(layout: Layout, trusted) -> str | None:
    """The version a release-signed ``version-pin.json`` (+ ``.sig``) allows going back to, if any."""
    if trusted is None or not layout.version_pin.exists():
        return None
    data = layout.version_pin.read_bytes()
    sig_file = layout.version_pin.with_suffix(".sig")
    if not sig_file.exists():
        raise InstallError(f"{layout.version_pin} has no signature ({sig_file.name})")
    bundles.verify_signature(data, sig_file.read_bytes(), trusted, str(layout.version_pin))
    try:
        return str(json.loads(data)["version"])
    except (ValueError, KeyError, TypeError):
        raise InstallError(f"{layout.version_pin}: expected {{\"version\": \"X.Y.Z\"}}") from None


def _build(layout: Layout, manifest: bundles.Manifest, folder: Path, builder: VenvBuilder) -> None:
    target = layout.version_dir(manifest.version)
    running = {layout.linked_version(layout.current), layout.linked_version(layout.good)}
    if target.exists():
        if manifest.version in running:
            raise InstallError(f"{target} is in use; refusing to rebuild it")
        shutil.rmtree(target)  # a failed or abandoned build of this version
    try:
        builder(target, folder / "wheels", manifest.requirement)
        (target / "bundle-manifest.json").write_bytes((folder / bundles.MANIFEST).read_bytes())
        (target / INSTALLED_MARK).write_text(manifest.version + "\n")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def prepare_board(layout: Layout, folder: Path, *, create_user: bool, first: bool) -> None:
    """Folders, the release key (first install), the units and the ops wrapper; the ``canopy`` user when asked."""
    if create_user:
        ensure_user()
    layout.etc.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.etc, 0o755)
    for d in (layout.state, layout.updates):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        if create_user:
            shutil.chown(d, USER, USER)
    if first:
        shutil.copyfile(folder / bundles.PUBLIC_KEY, layout.release_key)
        os.chmod(layout.release_key, 0o644)
    if (folder / "profiles").is_dir() and not (layout.etc / "profiles").exists():
        shutil.copytree(folder / "profiles", layout.etc / "profiles")  # the device models; the site's own edits are kept
    layout.units.mkdir(parents=True, exist_ok=True)
    for unit in sorted((folder / "systemd").glob("canopy*")):
        shutil.copyfile(unit, layout.units / unit.name)
        os.chmod(layout.units / unit.name, 0o644)
    layout.bin.mkdir(parents=True, exist_ok=True)
    wrapper = layout.bin / "canopy-ops"
    wrapper.write_text(OPS_WRAPPER.format(opt=layout.opt))
    os.chmod(wrapper, 0o755)
    layout.command.parent.mkdir(parents=True, exist_ok=True)
    if not layout.command.is_symlink():  # `canopy` on the PATH: whatever version is current
        os.symlink(layout.current / "bin" / "canopy", layout.command)


def ensure_user() -> None:
    """The unprivileged ``canopy`` system user, in ``dialout`` for the serial ports (created once)."""
    try:
        pwd.getpwnam(USER)
        return
    except KeyError:
        pass
    groups = ["--groups", "dialout"] if _group_exists("dialout") else []
    done = subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/canopy", "--no-create-home",
                           "--shell", "/usr/sbin/nologin", *groups, USER], capture_output=True, text=True)
    if done.returncode != 0:
        raise InstallError(f"cannot create the {USER} user: {done.stderr.strip()}")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False
