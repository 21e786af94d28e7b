"""A serial line of ASCII sensors: one owner per port, readings mapped to points by config.

The bus reads continuously (sensors talk when they like), splits the stream
into lines bounded by ``max_line`` bytes, parses each with the configured
parser and hands the fields to every device whose ``match`` they satisfy.
A device keeps the latest value of each point; its poller samples them at
its ``poll_interval``.  Nothing a line contains can crash the bus: bad
checksums, framing errors, overlong lines, values that do not convert and
lines nobody claims are counted (``stats()``) and dropped.

A vanished port is reopened for ever with jittered backoff; meanwhile the
devices report "unreachable".
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

from core.backoff import Backoff, FailureLog
from core.tasks import cancel_and_wait
from drivers.errors import DeviceTimeout, DeviceUnreachable
from drivers.serial_line.parsers import LineError, LineParser
from drivers.serial_line.port import AsyncSerialPort, PortError
from drivers.serial_line.settings import SerialSettings

log = logging.getLogger("canopy.serial_line")


@dataclass(frozen=True)
class LinePointSpec:
    """A point of a line sensor (``name`` and ``unit`` are what the poller publishes)."""

    name: str
    key: str
    type: str = "float"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""

    def convert(self, text: str) -> Any:
        text = text.strip()
        if self.type == "str":
            return text
        if self.type == "bool":
            low = text.lower()
            if low in ("1", "true", "on", "yes", "a"):
                return True
            if low in ("0", "false", "off", "no", "v"):
                return False
            raise ValueError(f"{text!r} is not a boolean")
        if text == "":
            raise ValueError("empty field")
        raw = int(text) if self.type == "int" else float(text)
        if raw != raw or raw in (float("inf"), float("-inf")):
            raise ValueError(f"{text!r} is not a finite number")
        if self.scale == 1 and self.offset == 0:
            return raw
        value = round(raw * self.scale + self.offset, 9)
        return int(round(value)) if self.type == "int" else value


class SerialLineSensor:
    """One sensor on the line: the latest value of each point, sampled by its poller."""

    def __init__(self, id: str, points: list[LinePointSpec], bus: "SerialLineBus", *,
                 match: dict[str, str] | None = None, stale_after: float = 30.0):
        self.id = id
        self.points = points
        self.bus = bus
        self.match = dict(match or {})
        self.stale_after = stale_after
        self.latest: dict[str, tuple[Any, float]] = {}
        self.updates = 0
        self.value_errors = 0
        self.last_update: float | None = None

    def matches(self, fields: dict[str, str]) -> bool:
        return all(fields.get(k) == v for k, v in self.match.items())

    def update(self, fields: dict[str, str], t: float) -> int:
        """Take this line's values; returns how many points it carried."""
        n = 0
        for p in self.points:
            if p.key not in fields:
                continue
            try:
                self.latest[p.name] = (p.convert(fields[p.key]), t)
                n += 1
            except (ValueError, OverflowError):
                self.value_errors += 1
                self.bus.counters["value_errors"] += 1
        if n:
            self.updates += 1
            self.last_update = t
        return n

    async def read_all(self) -> list[tuple[LinePointSpec, Any]]:
        self.bus.start()
        now = time.monotonic()
        fresh = [(p, self.latest[p.name][0]) for p in self.points
                 if p.name in self.latest and now - self.latest[p.name][1] <= self.stale_after]
        if fresh:
            return fresh
        if not self.bus.is_open:
            raise DeviceUnreachable(f"{self.bus.port}: {self.bus.port_error or 'port not open yet'}")
        since = f"{now - self.last_update:.0f}s" if self.last_update else "start-up"
        raise DeviceTimeout(f"no valid line for {self.id} since {since} (stale after {self.stale_after:g}s)")


class SerialLineBus:
    def __init__(self, port: str, settings: SerialSettings, parser: LineParser, *, max_line: int = 256,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0, name: str | None = None):
        self.port = port
        self.settings = settings
        self.parser = parser
        self.max_line = max_line
        self.name = name or port
        self.sensors: list[SerialLineSensor] = []
        self.counters: collections.Counter = collections.Counter()
        self.port_error: str | None = None
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._fail = FailureLog(log, f"serial line {port} ({self.name})")
        self._port: AsyncSerialPort | None = None
        self._buf = bytearray()
        self._discarding = False
        self._task: asyncio.Task | None = None
        self._lost: asyncio.Event | None = None  # created inside the running loop
        self._closed = False
        self.last_line: float | None = None
        self.started = time.monotonic()

    def sensor(self, id: str, points: list[LinePointSpec], *, match: dict[str, str] | None = None,
               stale_after: float = 30.0) -> SerialLineSensor:
        s = SerialLineSensor(id, points, self, match=match, stale_after=stale_after)
        self.sensors.append(s)
        return s

    @property
    def is_open(self) -> bool:
        return self._port is not None and self._port.is_open

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._lost = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"serial-line-{self.name}")

    async def _run(self) -> None:
        while not self._closed:
            try:
                port = AsyncSerialPort(self.port, self.settings, on_data=self._on_data, on_lost=self._on_lost)
                port.open()
            except PortError as exc:
                self._down(str(exc))
                await asyncio.sleep(self._backoff.next())
                continue
            self._port = port
            self.counters["opens"] += 1
            if self.port_error:
                log.info("%s: port %s reopened", self.name, self.port)
            self.port_error = None
            self._backoff.reset()
            self._fail.recovered()
            self._lost.clear()
            self._buf.clear()
            self._discarding = False
            await self._lost.wait()
            port.close()
            self._port = None
            await asyncio.sleep(self._backoff.next())

    def _down(self, reason: str) -> None:
        self.counters["port_failures"] += 1
        self.port_error = reason
        self._fail.failed(reason)

    def _on_lost(self, reason: str) -> None:
        self._down(reason)
        self._lost.set()

    def _on_data(self, data: bytes, t: float) -> None:
        self.counters["bytes"] += len(data)
        buf = self._buf
        start = 0
        while True:
            nl = data.find(b"\n", start)
            chunk = data[start:] if nl < 0 else data[start:nl]
            if not self._discarding:
                buf += chunk
                if len(buf) > self.max_line:
                    self.counters["overlong"] += 1
                    buf.clear()
                    self._discarding = True  # drop the rest of this line
            if nl < 0:
                return
            if not self._discarding:
                self._line(bytes(buf).rstrip(b"\r"), t)
            buf.clear()
            self._discarding = False
            start = nl + 1

    def _line(self, raw: bytes, t: float) -> None:
        if not raw.strip():
            return
        self.counters["lines"] += 1
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            self.counters["framing_errors"] += 1
            return
        try:
            fields = self.parser.parse(text)
        except LineError as exc:
            self.counters[exc.counter] += 1
            log.debug("%s: dropped line (%s): %r", self.name, exc, text[:80])
            return
        except Exception as exc:  # a parser bug must not kill the bus
            self.counters["framing_errors"] += 1
            log.debug("%s: parser failed on %r: %s", self.name, text[:80], exc)
            return
        self.last_line = t
        self.counters["valid_lines"] += 1
        claimed = False
        for s in self.sensors:
            if s.matches(fields) and s.update(fields, t):
                claimed = True
        if not claimed:
            self.counters["unmatched"] += 1

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._task)
        self._task = None
        if self._port is not None:
            self._port.close()
            self._port = None

    def stats(self) -> dict:
        now = time.monotonic()
        c = self.counters
        return {
            "type": "serial_line",
            "port": self.port,
            "settings": str(self.settings),
            "state": "open" if self.is_open else ("closed" if self._closed else "reopening" if self.port_error else "idle"),
            "port_error": self.port_error,
            "opens": c["opens"],
            "port_failures": c["port_failures"],
            "bytes": c["bytes"],
            "lines": c["lines"],
            "valid_lines": c["valid_lines"],
            "checksum_errors": c["checksum_errors"],
            "framing_errors": c["framing_errors"],
            "overlong": c["overlong"],
            "unmatched": c["unmatched"],
            "value_errors": c["value_errors"],
            "last_line_age_s": round(now - self.last_line, 2) if self.last_line else None,
            "sensors": {s.id: {"updates": s.updates, "value_errors": s.value_errors,
                               "last_update_age_s": round(now - s.last_update, 2) if s.last_update else None}
                        for s in self.sensors},
        }
