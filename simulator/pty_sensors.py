"""Line-oriented serial sensors on a pty: a weather station speaking NMEA 0183 or key=value lines.

Values come from the same ``WeatherStation`` physics as the Modbus weather
station.  Faults: ``bad_checksum`` (the next N lines carry a wrong checksum),
``overlong`` (one line longer than any sane limit), ``garbage`` (binary noise
without a newline, then a newline), ``silent`` (stop talking), and the line's
``vanish()`` / ``restore()``.

NMEA sentences emitted (talker WI, weather instrument)::

    $WIMDA,<inHg>,I,<bar>,B,<air C>,C,,,<RH %>,,<dew C>,C,,T,,M,<kn>,N,<m/s>,M*hh
    $WIXDR,C,<air C>,C,TempAir,P,<bar>,B,Barometer,H,<RH %>,P,RelHum*hh

key=value lines::

    id=ws1,t=<air C>,h=<RH %>,p=<hPa>,w=<m/s>,rain=<0|1>*hh
"""

from __future__ import annotations

import math
from typing import Literal

from drivers.serial_line.settings import SerialSettings
from simulator.physics import WeatherStation
from simulator.pty_line import PtyLine

Kind = Literal["nmea", "kv"]


def xor_checksum(text: str) -> str:
    c = 0
    for ch in text.encode("ascii"):
        c ^= ch
    return f"{c:02X}"


def dew_point(t: float, rh: float) -> float:
    a, b = 17.62, 243.12
    g = math.log(max(rh, 1.0) / 100.0) + a * t / (b + t)
    return b * g / (a - g)


def nmea_sentences(v: dict) -> list[str]:
    t, rh, p_hpa, w = v["air_temperature"], v["humidity"], v["pressure"], v["wind_speed"]
    bar = p_hpa / 1000.0
    mda = (f"WIMDA,{p_hpa * 0.02953:.2f},I,{bar:.4f},B,{t:.1f},C,,,{rh:.1f},,{dew_point(t, rh):.1f},C,,T,,M,"
           f"{w * 1.943844:.1f},N,{w:.1f},M")
    xdr = f"WIXDR,C,{t:.1f},C,TempAir,P,{bar:.4f},B,Barometer,H,{rh:.1f},P,RelHum"
    return [f"${s}*{xor_checksum(s)}" for s in (mda, xdr)]


def kv_line(v: dict, sensor_id: str = "ws1") -> str:
    body = (f"id={sensor_id},t={v['air_temperature']:.1f},h={v['humidity']:.1f},p={v['pressure']:.1f},"
            f"w={v['wind_speed']:.1f},rain={1 if v['rain_detected'] else 0}")
    return f"{body}*{xor_checksum(body)}"


class SerialSensorSimulator(PtyLine):
    name = "sim-serial-sensor"

    def __init__(self, kind: Kind, model: WeatherStation, settings: SerialSettings | None = None, *,
                 link: str | None = None, interval: float = 0.2, sensor_id: str = "ws1"):
        super().__init__(settings, link)
        if kind not in ("nmea", "kv"):
            raise ValueError(f"kind must be 'nmea' or 'kv', not {kind!r}")
        self.kind = kind
        self.model = model
        self.interval = interval
        self.sensor_id = sensor_id
        self.silent = False
        self.bad_checksums = 0  # next N lines get a wrong checksum
        self._inject: list[bytes] = []
        self._next = 0.0
        self.lines_sent = 0
        self.last_values: dict | None = None

    def lines_for(self, values: dict) -> list[str]:
        return nmea_sentences(values) if self.kind == "nmea" else [kv_line(values, self.sensor_id)]

    # -- faults (any thread) ---------------------------------------------------------------------
    def bad_checksum(self, n: int = 1) -> None:
        with self.lock:
            self.bad_checksums += n

    def overlong(self, length: int = 5000) -> None:
        with self.lock:
            self._inject.append(b"$WIMDA," + b"9" * length + b"\r\n")

    def garbage(self) -> None:
        with self.lock:
            self._inject.append(bytes(range(0, 256, 3)) + b"\r\n")

    def expected(self) -> dict:
        with self.lock:
            return dict(self.last_values or {})

    # -- the wire (serving thread) -------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self._next

    def on_timer(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + self.interval
        for raw in self._inject:
            self.write(raw)
        self._inject.clear()
        if self.silent or self.master_fd is None:
            return
        values = self.model.values(self.model.clock.now())
        out = []
        for line in self.lines_for(values):
            if self.bad_checksums > 0:
                self.bad_checksums -= 1
                body, _, cs = line.rpartition("*")
                line = f"{body}*{(int(cs, 16) ^ 0x55):02X}"
            out.append(line)
        self.last_values = values
        self.write("".join(f"{line}\r\n" for line in out).encode("ascii"))
        self.lines_sent += len(out)
