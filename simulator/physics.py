"""Small device models whose readings behave like the field's, not like noise.

Each model advances its state in fixed steps of simulated time on a grid that
starts when it is created, drawing from its own ``random.Random(seed)``: the
state at a time depends only on the seed and on the writes and events applied,
never on how often anyone polled.  Models that depend on each other (a soil
probe on its valve and on the rain) ask for the other's state *at a time*.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections import deque
from collections.abc import Callable

from simulator.clock import SimClock

TimeFn = Callable[[float], float]
MAX_CATCH_UP = 30 * 86400.0  # a model left alone longer than this skips ahead


def hour_of_day(t: float) -> float:
    lt = time.localtime(t)
    return lt.tm_hour + lt.tm_min / 60 + lt.tm_sec / 3600


def day_curve(hour: float, low: float = 5.0, high: float = 15.0) -> float:
    """0 at ``low`` o'clock, 1 at ``high`` o'clock: days warm fast and cool slowly."""
    rise = high - low
    if low <= hour < high:
        return 0.5 - 0.5 * math.cos(math.pi * (hour - low) / rise)
    return 0.5 + 0.5 * math.cos(math.pi * ((hour - high) % 24) / (24 - rise))


def clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


class Model:
    """Base: catch-up stepping, read-only writes, and the clock for event methods."""

    step = 10.0  # seconds of simulated time per tick

    def __init__(self, clock: SimClock, seed: int) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.t = clock.now()

    def advance(self, now: float) -> None:
        if now - self.t > MAX_CATCH_UP:
            self.t = now - MAX_CATCH_UP
        while self.t + self.step <= now:
            self.tick(self.t, self.step)
            self.t += self.step

    def tick(self, t: float, dt: float) -> None:
        """Advance the state from ``t`` to ``t + dt``."""

    def values(self, now: float) -> dict[str, int | float | bool | str]:
        self.advance(now)
        return self.read(now)

    def read(self, now: float) -> dict[str, int | float | bool | str]:
        raise NotImplementedError

    def write(self, point: str, value: int | float | bool | str, now: float) -> None:
        raise ValueError(f"{point} is not writable")


class WeatherStation(Model):
    """Day curve for temperature (min ~5 am, max ~3 pm), humidity the other way, rain episodes."""

    RAIN_PER_HOUR = 0.02  # chance per hour that a shower starts: about one every two days

    def __init__(self, clock: SimClock, seed: int) -> None:
        super().__init__(clock, seed)
        r = self.rng
        self.bias = r.uniform(-2, 2)  # today's warmth compared with the mean day
        self.temp = 8 + 14 * day_curve(hour_of_day(self.t)) + self.bias
        self.humidity = 60.0
        self.wind = r.uniform(0.5, 4)
        self.rain_total = round(r.uniform(0, 500), 1)
        self.pressure = 1013 + r.uniform(-5, 5)
        self.rain_until = 0.0
        self.rain_mm_h = 0.0
        self.episodes: deque[tuple[float, float, float]] = deque(maxlen=64)  # start, end, mm/h

    def tick(self, t: float, dt: float) -> None:
        r = self.rng
        raining = t < self.rain_until
        if not raining and r.random() < self.RAIN_PER_HOUR * dt / 3600:
            self.rain_until = t + r.uniform(1200, 7200)
            self.rain_mm_h = r.uniform(0.5, 8)
            self.episodes.append((t, self.rain_until, self.rain_mm_h))
            raining = True
        if raining:
            self.rain_total += self.rain_mm_h * dt / 3600
        self.bias = clamp(0.9995 * self.bias + r.gauss(0, 0.03), -5, 5)
        heat = day_curve(hour_of_day(t))
        k = min(1.0, dt / 900)
        self.temp += (8 + 14 * heat + self.bias - 3 * raining - self.temp) * k + r.gauss(0, 0.03)
        self.humidity += ((97 if raining else 92 - 50 * heat) - self.humidity) * k + r.gauss(0, 0.2)
        self.humidity = clamp(self.humidity, 15, 100)
        self.wind = clamp(self.wind + (2.5 + 2 * raining - self.wind) * 0.01 + r.gauss(0, 0.15), 0, 25)
        self.pressure += (1013 - 4 * raining - self.pressure) * 0.0005 + r.gauss(0, 0.01)
        self.pressure = clamp(self.pressure, 980, 1040)

    def set_rain(self, on: bool, mm_h: float = 4.0) -> None:
        """Operator control: start a shower that lasts until ``set_rain(False)`` (interlock tests)."""
        now = self.clock.now()
        self.advance(now)
        t = self.t  # the grid time the state has reached
        if on:
            if t >= self.rain_until:
                self.rain_until = math.inf
                self.rain_mm_h = mm_h
                self.episodes.append((t, math.inf, mm_h))
            else:
                self.rain_until = math.inf
                if self.episodes:
                    start, _end, rate = self.episodes[-1]
                    self.episodes[-1] = (start, math.inf, rate)
        elif t < self.rain_until:
            self.rain_until = t
            if self.episodes:
                start, end, rate = self.episodes[-1]
                if end > t:
                    self.episodes[-1] = (start, t, rate)

    def rain_rate(self, t: float) -> float:
        """mm/h falling at time ``t``: the soil probes' view of the sky."""
        self.advance(t)
        for start, end, mm_h in reversed(self.episodes):
            if start <= t < end:
                return mm_h
            if end <= t:
                break
        return 0.0

    def read(self, now: float) -> dict[str, int | float | bool | str]:
        return {
            "air_temperature": round(self.temp, 2),
            "humidity": round(self.humidity, 1),
            "wind_speed": round(self.wind, 2),
            "rainfall_total": round(self.rain_total, 1),
            "pressure": round(self.pressure, 1),
            "rain_detected": self.t < self.rain_until,
            "model": "WS-100",
        }


class SoilProbe(Model):
    """Moisture dries (fastest in the afternoon heat) and rises under irrigation or rain."""

    def __init__(
        self,
        clock: SimClock,
        seed: int,
        irrigating: Callable[[float], bool] | None = None,
        rain_rate: TimeFn | None = None,
    ) -> None:
        super().__init__(clock, seed)
        self.irrigating = irrigating
        self.rain_rate = rain_rate
        self.moisture = self.rng.uniform(24, 34)
        self.temp = 14 + 8 * day_curve((hour_of_day(self.t) - 2) % 24)
        self.ec_noise = 0.0

    def tick(self, t: float, dt: float) -> None:
        heat = day_curve(hour_of_day(t))
        dry = (0.03 + 0.35 * heat) * self.moisture / 30  # %/h, drier soil gives up less
        gain = 8.0 if self.irrigating and self.irrigating(t) else 0.0
        gain += 1.2 * (self.rain_rate(t) if self.rain_rate else 0.0)
        self.moisture = clamp(self.moisture + (gain * (1 - self.moisture / 52) - dry) * dt / 3600, 3, 50)
        target = 14 + 8 * day_curve((hour_of_day(t) - 2) % 24)  # the soil lags the air
        self.temp += (target - self.temp) * min(1.0, dt / 3600) + self.rng.gauss(0, 0.01)
        self.ec_noise = clamp(0.98 * self.ec_noise + self.rng.gauss(0, 2), -40, 40)

    def read(self, now: float) -> dict[str, int | float | bool | str]:
        m = self.moisture
        return {
            "moisture": round(m, 1),
            "temperature": round(self.temp, 1),
            "ec": int(round(350 + 18 * m + self.ec_noise)),
            "water_potential": round(-min(1500.0, 10 * (45 / max(m, 1)) ** 4), 2),
        }


class WaterMeter(Model):
    """Counter advancing by flow; flow from household habits, or from a demand (open zones)."""

    def __init__(self, clock: SimClock, seed: int, flow_demand: TimeFn | None = None) -> None:
        super().__init__(clock, seed)
        self.flow_demand = flow_demand
        self.total = round(self.rng.uniform(10, 900), 3)  # m3
        self.flow = 0.0  # m3/h
        self.battery = self.rng.uniform(80, 100)
        self.tap_running = False
        self.use_until = 0.0
        self.use_rate = 0.0

    @staticmethod
    def uses_per_hour(hour: float) -> float:
        if 6 <= hour < 9 or 18 <= hour < 22:
            return 3.0  # washing, cooking, showers
        if 11 <= hour < 13:
            return 1.5
        if hour >= 23 or hour < 6:
            return 0.2
        return 0.8

    def tick(self, t: float, dt: float) -> None:
        r = self.rng
        if self.tap_running:
            self.flow = 0.45 + r.gauss(0, 0.005)
        elif self.flow_demand is not None:
            demand = self.flow_demand(t)
            self.flow = max(0.0, demand * (1 + r.gauss(0, 0.01))) if demand > 0 else 0.0
        else:
            if t >= self.use_until and r.random() < self.uses_per_hour(hour_of_day(t)) * dt / 3600:
                self.use_until = t + r.uniform(20, 240)
                self.use_rate = r.uniform(0.2, 0.9)
            self.flow = self.use_rate if t < self.use_until else 0.0
        self.total += self.flow * dt / 3600
        self.battery = max(0.0, self.battery - 30 * dt / (365 * 86400))  # ~30 % a year

    def set_tap_running(self, on: bool) -> None:
        """A tap left running: continuous flow until turned off (scenario C4)."""
        self.advance(self.clock.now())
        self.tap_running = on

    def read(self, now: float) -> dict[str, int | float | bool | str]:
        litres = int(self.total * 1000)
        return {
            "total_volume": litres / 1000,
            "flow_rate": round(self.flow, 3),
            "pulse_count": litres,
            "battery": int(self.battery),
        }


class TankLevel(Model):
    """Level falls with the outflow; a pump refills between a low and a high mark."""

    def __init__(
        self,
        clock: SimClock,
        seed: int,
        outflow: TimeFn | None = None,
        area: float = 10.0,
        height: float = 3.0,
        pump_rate: float = 3.0,
        low: float = 0.8,
        high: float = 2.6,
    ) -> None:
        super().__init__(clock, seed)
        self.outflow = outflow
        self.area, self.height, self.pump_rate, self.low, self.high = area, height, pump_rate, low, high
        self.level = self.rng.uniform(1.5, 2.5)
        self.pump_on = False
        self.pump_ok = True  # set False to let the tank run dry (interlock tests)

    def tick(self, t: float, dt: float) -> None:
        if self.level <= self.low:
            self.pump_on = True
        elif self.level >= self.high:
            self.pump_on = False
        inflow = self.pump_rate if self.pump_on and self.pump_ok else 0.0
        out = self.outflow(t) if self.outflow else 0.2  # livestock trough when no valves
        self.level = clamp(self.level + (inflow - out) * dt / 3600 / self.area, 0, self.height)

    def set_level(self, level: float) -> None:
        """Operator control: the tank is at this level now (m)."""
        self.advance(self.clock.now())
        self.level = clamp(float(level), 0, self.height)
        self.pump_on = self.level <= self.low

    def set_pump_ok(self, ok: bool) -> None:
        """Operator control: a failed refill pump lets the tank run dry."""
        self.advance(self.clock.now())
        self.pump_ok = ok

    def read(self, now: float) -> dict[str, int | float | bool | str]:
        level = round(self.level, 2)
        return {"level": level, "volume": round(level * self.area, 1)}


class ValveRelay(Model):
    """Zone coils and the valves behind them; keeps when each changed so flow and soil can ask 'open at time t?'.

    Pulse (delay-off) mode, as many relay modules offer: holding register
    ``zone_N_pulse`` holds seconds; switching zone N on while it is non-zero
    switches it off again by itself that many seconds later (0: stay on).  A
    new write to the coil restarts or cancels the pulse.

    Feedback: discrete input ``zone_N_open`` is the valve's open-limit switch.
    The valve follows its coil ``travel`` seconds later (0: at once), unless it
    is stuck (``set_stuck``): then it stays open or closed whatever the coil says,
    and the flow and the soil follow the valve, not the coil.
    """

    PULSE_MAX = 65535

    def __init__(self, clock: SimClock, seed: int, zones: int = 4, travel: float = 0.0) -> None:
        super().__init__(clock, seed)
        self.changes: list[list[tuple[float, bool]]] = [[] for _ in range(zones)]
        self.pulse: list[int] = [0] * zones
        self.off_at: list[float | None] = [None] * zones  # pending device-side switch-off
        self.travel = travel
        self.stuck: list[list[tuple[float, bool | None]]] = [[] for _ in range(zones)]  # (since, stuck open/closed/free)

    def coil_on(self, zone: int, t: float) -> bool:
        """What the relay drives at ``t`` (the coil, with its pulse)."""
        changes = self.changes[zone - 1]
        i = bisect.bisect_right(changes, t, key=lambda c: c[0])
        if not i:
            return False
        on = changes[i - 1][1]
        off_at = self.off_at[zone - 1]
        if on and i == len(changes) and off_at is not None and t >= off_at:
            return False
        return on

    def is_open(self, zone: int, t: float) -> bool:
        """Whether the valve itself is open at ``t``: its coil ``travel`` earlier, unless it is stuck."""
        stuck = self.stuck[zone - 1]
        i = bisect.bisect_right(stuck, t, key=lambda c: c[0])
        if i and stuck[i - 1][1] is not None:
            return bool(stuck[i - 1][1])
        return self.coil_on(zone, t - self.travel)

    def set_stuck(self, zone: int, state: bool | None) -> None:
        """From now on the valve stays open (True) or closed (False) whatever its coil says; None frees it."""
        self.stuck[zone - 1].append((self.clock.now(), state))
        del self.stuck[zone - 1][:-64]

    def open_count(self, t: float) -> int:
        return sum(self.is_open(z + 1, t) for z in range(len(self.changes)))

    def _zone(self, point: str, suffix: str = "") -> int | None:
        if not point.startswith("zone_") or not point.endswith(suffix):
            return None
        number = point[5 : len(point) - len(suffix)] if suffix else point[5:]
        if not number.isdigit() or not 1 <= int(number) <= len(self.changes):
            return None
        return int(number)

    def write(self, point: str, value: int | float | bool | str, now: float) -> None:
        if (zone := self._zone(point, "_pulse")) is not None:
            seconds = int(value)
            if not 0 <= seconds <= self.PULSE_MAX:
                raise ValueError(f"{point}: {value} is out of range")
            self.pulse[zone - 1] = seconds
            return
        zone = self._zone(point)
        if zone is None:
            raise ValueError(f"{point} is not writable")
        i = zone - 1
        changes = self.changes[i]
        at = max(now, changes[-1][0]) if changes else now
        off_at = self.off_at[i]
        if off_at is not None and off_at <= at and changes and changes[-1][1]:
            changes.append((max(off_at, changes[-1][0]), False))  # the pulse ended before this write
        self.off_at[i] = None
        changes.append((at, bool(value)))
        if value and self.pulse[i] > 0:
            self.off_at[i] = at + self.pulse[i]
        del changes[:-256]

    def read(self, now: float) -> dict[str, int | float | bool | str]:
        zones = range(1, len(self.changes) + 1)
        out: dict[str, int | float | bool | str] = {f"zone_{z}": self.coil_on(z, now) for z in zones}
        out.update({f"zone_{z}_pulse": self.pulse[z - 1] for z in zones})
        out.update({f"zone_{z}_open": self.is_open(z, now) for z in zones})
        return out


class SmokeGasDetector(Model):
    """Quiet background readings until ``trigger_smoke``/``trigger_gas``; alarm at once."""

    SMOKE_ALARM = 2.0  # %obs/m
    GAS_ALARM = 10.0  # %LEL

    def __init__(self, clock: SimClock, seed: int) -> None:
        super().__init__(clock, seed)
        self.smoke_since: float | None = None
        self.gas_since: float | None = None
        self.fault = False
        self.battery = self.rng.uniform(70, 100)
        self.smoke_bg = 0.02
        self.gas_bg = 0.3
        self.temp = 19 + 5 * day_curve(hour_of_day(self.t))

    def tick(self, t: float, dt: float) -> None:
        r = self.rng
        self.smoke_bg = clamp(r.gauss(0.02, 0.01), 0, 0.2)
        self.gas_bg = clamp(r.gauss(0.3, 0.2), 0, 2)
        self.temp += (19 + 5 * day_curve(hour_of_day(t)) - self.temp) * min(1.0, dt / 1800) + r.gauss(0, 0.02)
        self.battery = max(0.0, self.battery - 20 * dt / (365 * 86400))

    def trigger_smoke(self) -> None:
        self.smoke_since = self.clock.now()

    def trigger_gas(self) -> None:
        self.gas_since = self.clock.now()

    def clear(self) -> None:
        self.smoke_since = self.gas_since = None

    def set_fault(self, on: bool) -> None:
        self.fault = on

    def read(self, now: float) -> dict[str, int | float | bool | str]:
        smoke, gas, temp = self.smoke_bg, self.gas_bg, self.temp
        if self.smoke_since is not None:
            burning = max(0.0, now - self.smoke_since)
            smoke = 2.5 + min(6.0, 0.05 * burning)
            temp += min(25.0, 0.03 * burning)
        if self.gas_since is not None:
            gas = 15 + min(45.0, 0.2 * max(0.0, now - self.gas_since))
        return {
            "alarm": smoke >= self.SMOKE_ALARM or gas >= self.GAS_ALARM,
            "fault": self.fault,
            "smoke_density": round(smoke, 2),
            "gas_lel": round(gas, 1),
            "temperature": round(temp, 1),
            "battery": int(self.battery),
        }


class DoorLock(Model):
    """Lock with door contact: remote unlock relocks by itself once the door is shut.

    Holding register ``relock_time`` (seconds, 0 = never by itself) sets the
    device-side auto-relock; it starts at ``relock_after`` (10 s).
    """

    def __init__(self, clock: SimClock, seed: int, relock_after: float = 10.0, daily_use: bool = False) -> None:
        super().__init__(clock, seed)
        self.relock_after = relock_after
        self.daily_use = daily_use  # the resident comes and goes (scenario C3)
        self.locked = True
        self.door_open = False
        self.tampered = False
        self.battery = self.rng.uniform(60, 100)
        self.open_count = self.rng.randrange(0, 5000)
        self.relock_at: float | None = None
        self.close_at = 0.0

    def _settle(self, t: float) -> None:
        if self.relock_at is not None and t >= self.relock_at and not self.door_open:
            self.locked, self.relock_at = True, None

    def _unlock(self, t: float) -> None:
        self.locked = False
        self.relock_at = None if math.isinf(self.relock_after) else max(self.relock_at or t, t + self.relock_after)
        self.battery = max(0.0, self.battery - 0.01)

    def _open(self, t: float) -> None:
        if not self.door_open:
            self._unlock(t)  # the handle inside retracts the bolt
            self.door_open = True
            self.open_count += 1

    def tick(self, t: float, dt: float) -> None:
        self._settle(t)
        if not self.daily_use:
            return
        h = hour_of_day(t)
        if self.door_open and t >= self.close_at:
            self.door_open = False
        elif not self.door_open:
            rate = 0.6 if 7 <= h < 10 or 15 <= h < 19 else 0.02 if h >= 22 or h < 6 else 0.2
            if self.rng.random() < rate * dt / 3600:
                self._open(t)
                self.close_at = t + self.rng.uniform(5, 30)
        self._settle(t)

    def write(self, point: str, value: int | float | bool | str, now: float) -> None:
        if point == "relock_time":
            seconds = int(value)
            if not 0 <= seconds <= 65535:
                raise ValueError(f"relock_time: {value} is out of range")
            self.advance(now)
            self.relock_after = float(seconds) if seconds else math.inf  # 0: no automatic relock
            return
        if point != "unlock":
            raise ValueError(f"{point} is not writable")
        self.advance(now)
        if value:
            self._unlock(now)
        else:
            self.relock_at = now
            self._settle(now)

    def open_door(self) -> None:
        now = self.clock.now()
        self.advance(now)
        self._open(now)
        self.close_at = math.inf  # stays open until close_door()

    def close_door(self) -> None:
        now = self.clock.now()
        self.advance(now)
        self.door_open = False

    def tamper(self, on: bool = True) -> None:
        self.tampered = on

    def read(self, now: float) -> dict[str, int | float | bool | str]:
        self._settle(now)
        return {
            "locked": self.locked,
            "door_open": self.door_open,
            "tamper": self.tampered,
            "battery": int(self.battery),
            "open_count": self.open_count,
            "unlock": not self.locked,
            "relock_time": 0 if math.isinf(self.relock_after) else int(self.relock_after),
        }


class RelayModule(Model):
    """Sounder and beacon outputs: they simply hold what was written."""

    def __init__(self, clock: SimClock, seed: int) -> None:
        super().__init__(clock, seed)
        self.outputs = {"sounder": False, "beacon": False}

    def write(self, point: str, value: int | float | bool | str, now: float) -> None:
        if point not in self.outputs:
            raise ValueError(f"{point} is not writable")
        self.outputs[point] = bool(value)

    def read(self, now: float) -> dict[str, int | float | bool | str]:
        return dict(self.outputs)


class HouseholdPower(Model):
    """A household's energy meter (``energy_meter`` profile) while nobody uses anything: a fridge and standby.

    The fridge's compressor cycles (15-25 min at 45-60 W, then 20-40 min off) over ~8 W of standby,
    and each step adds a little jitter: a float that (nearly) never reads the same twice yet never
    moves by more than ~70 W -- what a welfare check's deadband (``change_by``) must not count as a person.
    ``set_appliance`` is what a person does: a kettle of 1850 W on, then 0 again.
    """

    def __init__(self, clock: SimClock, seed: int, standby: float = 8.0) -> None:
        super().__init__(clock, seed)
        self.standby = standby
        self.compressor = self.rng.random() < 0.5
        self.compressor_w = self.rng.uniform(45, 60)
        self.cycle_until = self.t + self.rng.uniform(300, 1200)
        self.jitter = 0.0
        self.appliance = 0.0  # W switched on by a person
        self.voltage = 230.0
        self.energy = round(self.rng.uniform(100, 5000), 2)  # kWh

    def tick(self, t: float, dt: float) -> None:
        r = self.rng
        if t >= self.cycle_until:
            self.compressor = not self.compressor
            self.cycle_until = t + (r.uniform(900, 1500) if self.compressor else r.uniform(1200, 2400))
            self.compressor_w = r.uniform(45, 60)
        self.jitter = clamp(r.gauss(0, 2.0), -5.0, 5.0)
        self.voltage = 230.0 + clamp(r.gauss(0, 1.5), -5.0, 5.0)
        self.energy += self.power() * dt / 3.6e6

    def power(self) -> float:
        fridge = self.compressor_w if self.compressor else 0.0
        return max(0.0, self.standby + fridge + self.jitter + self.appliance)

    def set_appliance(self, watts: float) -> None:
        """A person switches something on (a kettle: 1850) or off (0)."""
        self.advance(self.clock.now())
        self.appliance = max(0.0, float(watts))

    def read(self, now: float) -> dict[str, int | float | bool | str]:
        p = round(self.power(), 1)
        return {"voltage": round(self.voltage, 1), "current": round(p / self.voltage, 3), "power": p,
                "energy": round(self.energy, 3)}
