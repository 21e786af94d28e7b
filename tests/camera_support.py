"""Camera test helpers: the pinned artefacts, the simulator's scenario videos (cached), configs.

Tests that need the real model or the person photo skip with the reason only
when the artefact is absent and CI is not set; under CI they fail, because
`make test` fetches the artefacts first (scripts/fetch_models.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from inference.artifacts import ARTIFACTS, PERSON_PHOTO, POSE_DETECTION, missing_reason, verified

ROOT = Path(__file__).resolve().parent.parent
SIM_SOURCE = ROOT / "simulator" / "camera.py"
SCENARIO_STILL = 8.0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_camera_extra() -> None:
    """Skip the calling module when OpenCV/numpy/LiteRT are not installed (a sensor-only checkout); fail under CI."""
    try:
        import cv2  # noqa: F401
        import numpy  # noqa: F401

        from inference.pose import load_interpreter_class

        load_interpreter_class()
    except Exception as exc:  # noqa: BLE001 - ImportError or ModelError (no TFLite runtime)
        if in_ci():
            raise
        pytest.skip(f"the camera extra is not installed ({exc}): pip install -e '.[camera]'", allow_module_level=True)


def require(*artefacts) -> None:
    missing = [a for a in artefacts if not verified(a)]
    if not missing:
        return
    reason = "; ".join(missing_reason(a) for a in missing)
    if in_ci():
        pytest.fail(f"CI is set and a pinned artefact is missing: {reason}")
    pytest.skip(reason)


def require_model() -> str:
    require(POSE_DETECTION)
    return str(POSE_DETECTION.path)


def scenario_dir() -> Path:
    """The simulator's scenario videos, written once per version of the simulator (cached under .artifacts/videos)."""
    require(PERSON_PHOTO)
    h = hashlib.sha256(SIM_SOURCE.read_bytes())
    h.update(PERSON_PHOTO.sha256.encode())
    h.update(f"still={SCENARIO_STILL}".encode())
    key = h.hexdigest()[:16]
    out = ARTIFACTS / "videos" / key
    if (out / "manifest.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=out.parent))
    from simulator.camera import generate

    generate(tmp, still=SCENARIO_STILL)
    try:
        os.rename(tmp, out)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    for old in out.parent.iterdir():  # videos of older simulator versions (~70 MB each)
        if old.is_dir() and old.name != key and "." not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    return out


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="session")
def scenario_videos() -> Path:
    return scenario_dir()


def camera_dict(video: Path | str, *, cam_id: str = "hall", loop: bool = False, realtime: bool = True,
                stillness: float | None = None, **extra) -> dict:
    d = {"id": cam_id, "source": {"type": "file", "path": str(video), "loop": loop, "realtime": realtime},
         "location": {"building": "B2", "unit": "3", "household": "302", "zone": "living-room"}}
    if stillness is not None:
        d["detectors"] = [{"type": "pose_fall", "fall": {"stillness_seconds": stillness}}]
    d.update(extra)
    return d


class MjpegServer:
    """An IP camera on loopback: multipart MJPEG over HTTP from a video's frames, at ``fps``.

    ``stall()`` makes it go silent (open connections get nothing more, new ones get no answer), like a camera
    whose link hangs; ``resume()`` serves new connections again (stalled ones are closed)."""

    def __init__(self, video: Path | str, fps: float = 15.0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import cv2

        cap = cv2.VideoCapture(str(video))
        self.frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            self.frames.append(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
        cap.release()
        assert self.frames, f"no frames in {video}"
        self.fps = fps
        self.gen = 0
        self.stalled = threading.Event()
        self.connections = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                import time as _t

                gen = server.gen
                while server.stalled.is_set():  # no answer at all while stalled
                    _t.sleep(0.05)
                    if server.gen != gen or server.closed:
                        return
                server.connections += 1
                gen = server.gen
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not server.closed:
                        if server.stalled.is_set() or server.gen != gen:
                            if server.gen != gen:
                                return  # resumed: this connection stays dead, the client must reconnect
                            _t.sleep(0.05)
                            continue
                        jpg = server.frames[i % len(server.frames)]
                        i += 1
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                         + jpg + b"\r\n")
                        _t.sleep(1.0 / server.fps)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    return

            def log_message(self, *a):
                pass

        self.closed = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mjpeg-server", daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.gen += 1
        self.stalled.clear()

    def close(self) -> None:
        self.closed = True
        self.stalled.clear()
        self.httpd.shutdown()
        self.httpd.server_close()
