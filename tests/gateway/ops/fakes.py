"""Fakes for the operations tests: systemd's notify socket, tiny wheels and bundles, a service to restart."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import zipfile
from pathlib import Path

from gateway.ops import bundle


class NotifyListener:
    """What systemd would be: a Unix datagram socket that records every notification with its arrival time."""

    def __init__(self, path: Path | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:  # the abstract namespace, as systemd itself uses
            self.address: str | bytes = b"\0canopy-test-" + os.urandom(6).hex().encode()
            self.name = "@" + self.address[1:].decode()
        else:
            self.address = self.name = str(path)
        self.sock.bind(self.address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages += [(time.monotonic(), line) for line in data.decode().splitlines()]

    def lines(self, prefix: str = "") -> list[tuple[float, str]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if m.startswith(prefix)]

    def ready(self) -> bool:
        return bool(self.lines("READY=1"))

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self.sock.close()


def make_wheel(folder: Path, name: str, version: str, *, requires: list[str] = (), module: str | None = None,
               code: str = "", scripts: dict[str, str] | None = None) -> Path:
    """A tiny pure-Python wheel pip can install (no build needed)."""
    dist = name.replace("-", "_")
    module = module or dist
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    extras = sorted({r.split("extra == ")[1].strip("'\"") for r in requires if "extra ==" in r})
    meta += [f"Provides-Extra: {e}" for e in extras] + [f"Requires-Dist: {r}" for r in requires]
    files = {f"{module}/__init__.py": code, f"{info}/METADATA": "\n".join(meta) + "\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    if scripts:
        files[f"{info}/entry_points.txt"] = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
    return path


def release_key(tmp: Path, name: str = "release"):
    key_file = tmp / f"{name}.key"
    bundle.generate_release_key(key_file)
    return bundle.load_private_key(key_file)


def make_bundle(tmp: Path, version: str, key, *, set_name: str = "sensor", tamper=None) -> Path:
    """A signed bundle tar with a fake Canopy wheel, the real units and installer; ``tamper(folder)`` runs after signing."""
    repo = Path(__file__).resolve().parents[3]
    folder = tmp / f"build-{version}-{os.urandom(3).hex()}" / f"canopy-{version}-{set_name}"
    (folder / "wheels").mkdir(parents=True)
    make_wheel(folder / "wheels", "canopy-gateway", version, code="def main():\n    print('fake canopy')\n",
               module="fake_canopy", scripts={"canopy": "fake_canopy:main"})
    (folder / "systemd").mkdir()
    for unit in (repo / "systemd").glob("canopy*"):
        (folder / "systemd" / unit.name).write_bytes(unit.read_bytes())
    (folder / "install.sh").write_bytes((repo / "scripts" / "install.sh").read_bytes())
    bundle.seal(folder, version=version, set_name=set_name, extras=() if set_name == "sensor" else ("camera",), key=key)
    if tamper:
        tamper(folder)
    return bundle.pack(folder, folder.parent / f"{folder.name}.tar")


def fake_venv(target: Path, wheels: Path, requirement: str) -> None:
    """Stands in for pip in tests that are about the layout, not pip: a venv-shaped folder."""
    (target / "bin").mkdir(parents=True)
    (target / "bin" / "python").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(target / "bin" / "python", 0o755)
    (target / "requirement.txt").write_text(requirement)


class FakeService:
    """The gateway's service: ``restart`` starts a fake daemon that is healthy or not, as the version says."""

    def __init__(self, listener: NotifyListener, status: Path, layout, healthy_versions: set[str]):
        self.listener, self.status, self.layout = listener, status, layout
        self.healthy = healthy_versions
        self.restarts: list[str] = []
        self._thread: threading.Thread | None = None

    def restart(self) -> None:
        version = self.layout.linked_version(self.layout.current)
        self.restarts.append(version)
        with self.listener._lock:
            self.listener.messages.clear()  # a new process: systemd forgets the old READY
        if version in self.healthy:
            self._thread = threading.Thread(target=self._come_up, daemon=True)
            self._thread.start()

    def _come_up(self) -> None:
        time.sleep(0.1)
        from gateway.ops.sd_notify import Notifier

        n = Notifier(self.listener.name)
        n.notify("READY=1")
        n.close()
        write_status(self.status, connected=True, devices={"soil-1": "ok", "soil-2": "ok"})

    def ready(self) -> bool:
        return self.listener.ready()


def write_status(path: Path, *, connected: bool, devices: dict[str, str], ts: float | None = None, boot: int | None = None) -> None:
    if boot is None:  # each process is a new boot of the outbox
        old = json.loads(path.read_text()) if path.exists() else {}
        boot = int(old.get("boot", 0)) + 1
    body = {"boot": boot, "ts": time.time() if ts is None else ts, "uplink": {"connected": connected, "last_error": None if connected else "refused"},
            "devices": {d: {"status": s, "polls": 3} for d, s in devices.items()}}
    path.write_text(json.dumps(body))
