"""Shared helpers for tests on pty serial lines (RTU slaves, line sensors)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from drivers.serial_line.settings import SerialSettings
from gateway.config.load import load_profile
from simulator.clock import SimClock
from simulator.modbus_tcp import SimulatedDevice
from simulator.rtu import RtuLineSimulator, soil_probes
from tests.support import until

ROOT = Path(__file__).resolve().parents[3]
PROFILES = ROOT / "config" / "profiles"


def profile(name: str):
    return load_profile(PROFILES / f"{name}.yaml")


@contextmanager
def rtu_line(tmp_path: Path, units=(1,), settings: SerialSettings | None = None, *, devices: list[SimulatedDevice] | None = None,
             framer: str = "rtu", name: str = "ttyRTU0", **kw):
    """A started RtuLineSimulator of soil probes (or ``devices``) behind a stable link in tmp_path."""
    clock = SimClock(0)
    devs = devices if devices is not None else soil_probes(list(units), clock)
    sim = RtuLineSimulator(devs, settings or SerialSettings(9600, 8, "E", 1), framer=framer,
                           link=str(tmp_path / name), **kw).start()
    try:
        yield sim
    finally:
        sim.stop()


async def eventually(cond, timeout: float = 5.0, interval: float = 0.01, what: str = "condition"):
    return await until(cond, timeout=timeout, what=what, interval=interval)