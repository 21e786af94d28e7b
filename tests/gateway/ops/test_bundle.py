"""The signed bundle: a sha256 of every file, an Ed25519 release signature; anything else is refused."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from gateway.ops import bundle
from gateway.ops.bundle import BundleError
from tests.gateway.ops.fakes import make_bundle, release_key


def unpacked(tar: Path, tmp: Path) -> Path:
    out = tmp / f"x-{tar.stem}"
    out.mkdir()
    return bundle.unpack(tar, out)


def test_a_signed_bundle_verifies(tmp_path):
    key = release_key(tmp_path)
    folder = unpacked(make_bundle(tmp_path, "0.2.0", key), tmp_path)
    m = bundle.verify(folder, key.public_key())
    assert (m.version, m.set, m.requirement) == ("0.2.0", "sensor", "canopy-gateway==0.2.0")
    assert "wheels/canopy_gateway-0.2.0-py3-none-any.whl" in m.files and "systemd/canopy.service" in m.files
    assert "install.sh" in m.files and "release.pub" in m.files
    assert bundle.verify(folder, None).version == "0.2.0"  # first install: the bundle's own release.pub


def test_camera_set_names_the_extra(tmp_path):
    key = release_key(tmp_path)
    m = bundle.verify(unpacked(make_bundle(tmp_path, "0.2.0", key, set_name="camera"), tmp_path), None)
    assert m.extras == ("camera",) and m.requirement == "canopy-gateway[camera]==0.2.0"


def test_bad_signature_is_refused(tmp_path):
    installed, other = release_key(tmp_path, "installed"), release_key(tmp_path, "other")
    folder = unpacked(make_bundle(tmp_path, "0.2.0", other), tmp_path)
    with pytest.raises(BundleError, match="signature does not verify with release key SHA256:"):
        bundle.verify(folder, installed.public_key())


def test_a_wheel_whose_sha256_differs_is_refused(tmp_path):
    key = release_key(tmp_path)

    def swap_wheel(folder: Path) -> None:
        wheel = next((folder / "wheels").glob("*.whl"))
        wheel.write_bytes(wheel.read_bytes() + b"\0")

    folder = unpacked(make_bundle(tmp_path, "0.2.0", key, tamper=swap_wheel), tmp_path)
    with pytest.raises(BundleError, match=r"wheels/canopy_gateway-0.2.0-py3-none-any.whl: sha256 \w+ differs from the manifest's"):
        bundle.verify(folder, key.public_key())


def test_a_file_the_manifest_does_not_name_is_refused(tmp_path):
    key = release_key(tmp_path)
    folder = unpacked(make_bundle(tmp_path, "0.2.0", key, tamper=lambda f: (f / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"x")), tmp_path)
    with pytest.raises(BundleError, match="evil-1.0-py3-none-any.whl is in the bundle but not in the signed manifest"):
        bundle.verify(folder, key.public_key())


def test_an_edited_manifest_breaks_the_signature(tmp_path):
    key = release_key(tmp_path)

    def edit(folder: Path) -> None:
        data = json.loads((folder / "manifest.json").read_text())
        data["version"] = "9.9.9"
        (folder / "manifest.json").write_text(json.dumps(data))

    folder = unpacked(make_bundle(tmp_path, "0.2.0", key, tamper=edit), tmp_path)
    with pytest.raises(BundleError, match="signature does not verify"):
        bundle.verify(folder, key.public_key())


def test_first_install_checks_the_expected_fingerprint(tmp_path):
    key = release_key(tmp_path)
    folder = unpacked(make_bundle(tmp_path, "0.2.0", key), tmp_path)
    right = bundle.fingerprint(key.public_key())
    assert bundle.verify(folder, None, expect_fingerprint=right)
    with pytest.raises(BundleError, match="is not the expected SHA256:nope"):
        bundle.verify(folder, None, expect_fingerprint="SHA256:nope")


def test_unpack_refuses_paths_outside_the_folder(tmp_path):
    evil = tmp_path / "evil.tar"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(evil, "w") as tar:
        tar.add(payload, arcname="canopy-1/../../escaped")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BundleError, match="not a readable bundle"):
        bundle.unpack(evil, out)
    assert not (tmp_path / "escaped").exists()


def test_not_a_bundle(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(BundleError, match="not a readable bundle"):
        bundle.unpack(junk, tmp_path)
