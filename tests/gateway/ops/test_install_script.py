"""scripts/build-bundle from a local wheel folder, and scripts/install.sh into a temporary root with a real venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.ops import bundle, releases
from gateway.ops.layout import Layout
from tests.gateway.ops.fakes import make_bundle, make_wheel, release_key

REPO = Path(__file__).resolve().parents[3]


def run(cmd: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PIP_FIND_LINKS": "", **env})


@pytest.fixture
def wheels(tmp_path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "canopy-gateway", "9.0.0", requires=["tinydep", 'tinycam; extra == "camera"'], module="fake_canopy",
               code="def main():\n    print('fake canopy')\n", scripts={"canopy": "fake_canopy:main"})
    make_wheel(folder, "tinydep", "1.0")
    make_wheel(folder, "tinycam", "1.0")
    return folder


def test_build_bundle_from_a_local_wheel_folder_makes_two_signed_sets(tmp_path, wheels):
    key_file = tmp_path / "release.key"
    done = run([sys.executable, "scripts/build-bundle", "--gen-release-key", str(key_file)])
    assert done.returncode == 0 and "SHA256:" in done.stdout, done.stderr
    out = tmp_path / "dist"
    done = run([sys.executable, "scripts/build-bundle", "--release-key", str(key_file), "--out", str(out), "--wheels-from", str(wheels),
                "--canopy-wheel", str(wheels / "canopy_gateway-9.0.0-py3-none-any.whl"), "--arches", "x86_64", "--pythons", "3.11"])
    assert done.returncode == 0, done.stderr
    public = bundle.load_public_key(key_file.with_suffix(".pub").read_bytes(), "release.pub")
    contents = {}
    for set_name in ("sensor", "camera"):
        tar = out / f"canopy-9.0.0-{set_name}.tar"
        (tmp_path / set_name).mkdir()
        manifest = bundle.verify(bundle.unpack(tar, tmp_path / set_name), public)
        assert manifest.set == set_name and manifest.version == "9.0.0"
        contents[set_name] = {Path(p).name for p in manifest.files}
    assert {"tinydep-1.0-py3-none-any.whl", "canopy_gateway-9.0.0-py3-none-any.whl", "canopy.service", "install.sh",
            "soil_probe.yaml"} <= contents["sensor"]
    assert "tinycam-1.0-py3-none-any.whl" not in contents["sensor"]  # no camera stack on a sensor-only board
    assert "tinycam-1.0-py3-none-any.whl" in contents["camera"]


def test_install_sh_installs_a_real_venv_into_a_temporary_root(tmp_path):
    key = release_key(tmp_path)
    tar = make_bundle(tmp_path, "0.3.0", key)
    root = tmp_path / "root"
    done = run(["sh", "scripts/install.sh", str(tar), "--root", str(root), "--no-user", "--no-start"],
               CANOPY_BOOTSTRAP_PYTHON=sys.executable)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "installed canopy 0.3.0 (sensor)" in done.stdout and bundle.fingerprint(key.public_key()) in done.stdout
    assert "next: canopy provision" in done.stdout
    layout = Layout(root)
    canopy = layout.current / "bin" / "canopy"
    assert subprocess.run([str(canopy)], capture_output=True, text=True).stdout.strip() == "fake canopy"  # the venv works
    assert subprocess.run([str(root / "usr/local/bin/canopy")], capture_output=True, text=True).stdout.strip() == "fake canopy"
    assert layout.linked_version(layout.good) == "0.3.0" and releases.load(layout).trial is False
    assert (layout.etc / "release.pub").exists() and (layout.units / "canopy.service").exists()
    assert oct(layout.state.stat().st_mode & 0o777) == "0o700"


def test_install_sh_refuses_a_bundle_whose_wheel_was_changed(tmp_path):
    key = release_key(tmp_path)

    def swap(folder: Path) -> None:
        wheel = next((folder / "wheels").glob("*.whl"))
        wheel.write_bytes(wheel.read_bytes() + b"\0")

    tar = make_bundle(tmp_path, "0.3.0", key, tamper=swap)
    done = run(["sh", "scripts/install.sh", str(tar), "--root", str(tmp_path / "root"), "--no-user", "--no-start"],
               CANOPY_BOOTSTRAP_PYTHON=sys.executable)
    assert done.returncode == 1 and "does not match its sha256 in the manifest: refused" in done.stderr
    assert not (tmp_path / "root").exists()


def test_install_sh_refuses_a_file_outside_the_manifest(tmp_path):
    key = release_key(tmp_path)
    tar = make_bundle(tmp_path, "0.3.0", key, tamper=lambda f: (f / "wheels" / "extra-1.0-py3-none-any.whl").write_bytes(b"x"))
    done = run(["sh", "scripts/install.sh", str(tar), "--root", str(tmp_path / "root"), "--no-user", "--no-start"],
               CANOPY_BOOTSTRAP_PYTHON=sys.executable)
    assert done.returncode == 1 and "is in the bundle but not in its manifest" in done.stderr


def test_units_verify_with_systemd_analyze_in_the_installed_root(tmp_path):
    if not Path("/usr/bin/systemd-analyze").exists():
        pytest.skip("systemd-analyze is not installed")
    key = release_key(tmp_path)
    root = tmp_path / "root"
    done = run(["sh", "scripts/install.sh", str(make_bundle(tmp_path, "0.3.0", key)), "--root", str(root), "--no-user", "--no-start"],
               CANOPY_BOOTSTRAP_PYTHON=sys.executable)
    assert done.returncode == 0, done.stderr
    units = sorted(str(p) for p in (root / "etc/systemd/system").glob("canopy*"))
    check = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
    problems = [line for line in check.stderr.splitlines() if "is not executable" not in line and "canopy" in line]
    assert problems == [], check.stderr
