"""Operator commands for a running simulator: break a device, start a fire, leave a tap running."""

from __future__ import annotations

from simulator.modbus_tcp import ModbusTcpSimulator
from simulator.physics import DoorLock, SmokeGasDetector, TankLevel, WaterMeter, WeatherStation

HELP = (
    "fault ID silent|exception|none; smoke ID on|off; gas ID on|off; "
    "tap ID on|off; door ID open|close|tamper|untamper; rain ID on|off; "
    "tank ID LEVEL_M; pump ID on|off"
)


def apply_command(sim: ModbusTcpSimulator, line: str) -> str:
    """Run one command line; answer ``ok`` or ``error: ...`` (never raise)."""
    words = line.split()
    if not words:
        return "error: empty command; " + HELP
    if len(words) != 3:
        return f"error: expected 'VERB ID ARG'; {HELP}"
    verb, dev_id, arg = words
    try:
        device = sim.device(dev_id)
    except KeyError:
        return f"error: no device {dev_id!r}; devices: {', '.join(d.id for d in sim.devices)}"
    model = device.model
    if verb == "fault" and arg in ("silent", "exception", "none"):
        device.fault = None if arg == "none" else arg  # type: ignore[assignment]
    elif verb in ("smoke", "gas") and isinstance(model, SmokeGasDetector) and arg in ("on", "off"):
        if arg == "off":
            model.clear()
        elif verb == "smoke":
            model.trigger_smoke()
        else:
            model.trigger_gas()
    elif verb == "tap" and isinstance(model, WaterMeter) and arg in ("on", "off"):
        model.set_tap_running(arg == "on")
    elif verb == "door" and isinstance(model, DoorLock) and arg in ("open", "close", "tamper", "untamper"):
        {"open": model.open_door, "close": model.close_door,
         "tamper": model.tamper, "untamper": lambda: model.tamper(False)}[arg]()
    elif verb == "rain" and isinstance(model, WeatherStation) and arg in ("on", "off"):
        model.set_rain(arg == "on")
    elif verb == "tank" and isinstance(model, TankLevel) and _is_number(arg):
        model.set_level(float(arg))
    elif verb == "pump" and isinstance(model, TankLevel) and arg in ("on", "off"):
        model.set_pump_ok(arg == "on")
    else:
        return f"error: {verb!r} {arg!r} does not apply to {dev_id} ({device.profile.name}); {HELP}"
    return "ok"


def _is_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return value == value and value not in (float("inf"), float("-inf"))
