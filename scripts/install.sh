#!/bin/sh
# Canopy installer: one command on a fresh board, offline, from a bundle made by scripts/build-bundle.
#
#   sudo sh install.sh canopy-0.2.0-sensor.tar [--release-key-fingerprint SHA256:...]
#
# 1. unpacks the bundle and checks the sha256 of every file against its manifest
#    (before anything from it runs);
# 2. makes a throw-away venv from the bundle's own wheels (no network) to run the installer;
# 3. the installer (python -m gateway.cli.ops install) checks the release signature,
#    creates the canopy user, /opt/canopy/<version> (venv), the current link,
#    /etc/canopy, /var/lib/canopy (0700) and the units, and starts the gateway
#    once /etc/canopy/site.yaml exists (else: run `canopy provision` next).
# Any other option is passed to the installer: --root DIR (tests), --no-user, --no-start.
# CANOPY_BOOTSTRAP_PYTHON=/path/to/python skips step 2 (a python that already has Canopy).
set -eu

if [ $# -lt 1 ]; then
    echo "usage: sudo sh install.sh canopy-<version>-<set>.tar [--release-key-fingerprint SHA256:...] [--root DIR]" >&2
    exit 2
fi
BUNDLE=$1
shift
PYTHON=${CANOPY_PYTHON:-python3}

if ! "$PYTHON" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "install.sh: Canopy needs Python >= 3.11 with venv ($PYTHON); on Debian: apt-get install python3 python3-venv" >&2
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/canopy-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
tar -xf "$BUNDLE" -C "$WORK"
DIR=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d | head -n 1)

# Integrity first (stdlib only): every file the manifest names, with its sha256, and nothing else.
"$PYTHON" - "$DIR" <<'PY'
import hashlib, json, pathlib, sys
folder = pathlib.Path(sys.argv[1])
files = json.loads((folder / "manifest.json").read_text())["files"]
present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json", "manifest.sig"}
for rel in sorted(present | set(files)):
    if rel not in files:
        sys.exit(f"install.sh: {rel} is in the bundle but not in its manifest: refused")
    if rel not in present:
        sys.exit(f"install.sh: {rel} is in the manifest but missing from the bundle: refused")
    if hashlib.sha256((folder / rel).read_bytes()).hexdigest() != files[rel]:
        sys.exit(f"install.sh: {rel} does not match its sha256 in the manifest: refused")
PY

if [ -n "${CANOPY_BOOTSTRAP_PYTHON:-}" ]; then
    BOOT=$CANOPY_BOOTSTRAP_PYTHON
else
    VERSION=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$DIR/manifest.json")
    "$PYTHON" -m venv "$WORK/boot"
    "$WORK/boot/bin/python" -m pip install --quiet --no-index --find-links "$DIR/wheels" "canopy-gateway==$VERSION"
    BOOT=$WORK/boot/bin/python
fi

"$BOOT" -m gateway.cli.ops install "$BUNDLE" "$@"
