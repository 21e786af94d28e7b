"""The two demo sites, wired the way the field is: valves water the soil and drive the meter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from drivers.modbus.profile import Profile
from gateway.config.load import load_profile
from simulator.clock import SimClock
from simulator.modbus_tcp import ModbusTcpSimulator, SimulatedDevice, free_port
from simulator.physics import (
    DoorLock,
    RelayModule,
    SmokeGasDetector,
    SoilProbe,
    TankLevel,
    ValveRelay,
    WaterMeter,
    WeatherStation,
)

PROFILES_DIR = Path(__file__).resolve().parent.parent / "config" / "profiles"
ZONE_FLOW = 1.5  # m3/h drawn by one open irrigation zone


def _profiles(profiles_dir: Path | None) -> Callable[[str], Profile]:
    folder = profiles_dir or PROFILES_DIR
    return lambda name: load_profile(folder / f"{name}.yaml")


def farm(clock: SimClock, seed: int = 1, profiles_dir: Path | None = None) -> list[SimulatedDevice]:
    """Three soil probes on valve zones 1-3, weather, farm meter, tank, valve relay."""
    profile = _profiles(profiles_dir)
    s = seed * 100
    valves = ValveRelay(clock, s + 40)
    weather = WeatherStation(clock, s + 10)

    def demand(t: float) -> float:
        return ZONE_FLOW * valves.open_count(t)

    def zone(n: int) -> Callable[[float], bool]:
        return lambda t: valves.is_open(n, t)

    soil = [
        SimulatedDevice(f"soil-{n}", n, profile("soil_probe"), SoilProbe(clock, s + n, zone(n), weather.rain_rate))
        for n in (1, 2, 3)
    ]
    return soil + [
        SimulatedDevice("weather", 10, profile("weather_station"), weather),
        SimulatedDevice("meter-farm", 20, profile("water_meter"), WaterMeter(clock, s + 20, flow_demand=demand)),
        SimulatedDevice("tank", 30, profile("tank_level"), TankLevel(clock, s + 30, outflow=demand)),
        SimulatedDevice("valves", 40, profile("valve_relay"), valves),
    ]


def community(clock: SimClock, seed: int = 1, profiles_dir: Path | None = None) -> list[SimulatedDevice]:
    """Two smoke/gas detectors, a resident's door lock and water meter, a sounder relay."""
    profile = _profiles(profiles_dir)
    s = seed * 100
    return [
        SimulatedDevice("smoke-shed", 1, profile("smoke_gas_detector"), SmokeGasDetector(clock, s + 1)),
        SimulatedDevice("smoke-hall", 2, profile("smoke_gas_detector"), SmokeGasDetector(clock, s + 2)),
        SimulatedDevice("door-101", 10, profile("door_lock"), DoorLock(clock, s + 10, daily_use=True)),
        SimulatedDevice("meter-101", 20, profile("water_meter"), WaterMeter(clock, s + 20)),
        SimulatedDevice("sounder", 30, profile("relay_module"), RelayModule(clock, s + 30)),
    ]


SITES: dict[str, Callable[..., list[SimulatedDevice]]] = {"farm": farm, "community": community}
__all__ = ["SITES", "community", "farm", "free_port", "start_site"]


async def start_site(
    name: str,
    port: int = 0,
    speed: float = 1.0,
    seed: int = 1,
    host: str = "127.0.0.1",
    profiles_dir: Path | None = None,
    start: float | None = None,
) -> tuple[ModbusTcpSimulator, SimClock]:
    """Build a site and serve it; ``port=0`` picks a free port."""
    if name not in SITES:
        raise ValueError(f"unknown site {name!r}; choose from {sorted(SITES)}")
    clock = SimClock(speed, start)
    sim = ModbusTcpSimulator(SITES[name](clock, seed, profiles_dir), host=host, port=port)
    await sim.start()
    return sim, clock
