"""The board's own health, read from Linux: disk free, resident memory, CPU temperature, process start time.

A gateway in a shed dies of a full SD card, a leak or heat long before it dies
of a bug; these figures let a centre see it coming.  Each comes from one or two
small files in /proc or /sys (or one statvfs); a board without a thermal zone
simply has no temperature.  ``sample`` does file I/O, so the runtime calls it in
a worker thread, never on the event loop.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

THERMAL = "/sys/class/thermal"
_CPU_ZONE_WORDS = ("cpu", "soc", "x86_pkg", "core")  # zone types that measure the processor, not a battery or a disk


@dataclass(frozen=True)
class HostSample:
    """One reading of the board; None where the board cannot tell."""

    disk_free_bytes: int | None = None  # on the filesystem that holds the outbox
    disk_total_bytes: int | None = None
    rss_bytes: int | None = None  # this process's resident memory
    cpu_temp_c: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def disk_usage(folder: str) -> tuple[int, int] | tuple[None, None]:
    """(free, total) bytes of the filesystem holding ``folder`` (free as an unprivileged process sees it)."""
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return None, None
    return usage.free, usage.total


def rss_bytes(statm: str = "/proc/self/statm") -> int | None:
    """Resident set size now (not the peak ``getrusage`` reports)."""
    try:
        with open(statm, "rb") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def cpu_temperature(root: str = THERMAL) -> float | None:
    """°C of the processor's thermal zone (the first zone when none says it is the CPU); None without one."""
    zones = sorted(Path(root).glob("thermal_zone*"))
    readings: list[tuple[bool, float]] = []
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip().lower()
            millideg = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue  # some zones refuse reads while their sensor sleeps
        readings.append((any(w in kind for w in _CPU_ZONE_WORDS), millideg / 1000))
    if not readings:
        return None
    cpu = [t for is_cpu, t in readings if is_cpu]
    return round(cpu[0] if cpu else readings[0][1], 1)


def sample(folder: str, thermal_root: str = THERMAL) -> HostSample:
    """The board now; ``folder`` is where the outbox lives (the disk that matters). Blocking: call in a thread."""
    free, total = disk_usage(folder)
    return HostSample(disk_free_bytes=free, disk_total_bytes=total, rss_bytes=rss_bytes(),
                      cpu_temp_c=cpu_temperature(thermal_root))


def process_start_ticks(pid: int, proc: str = "/proc") -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22); None if it is gone.

    A pid alone can be recycled by an unrelated process after a crash; pid plus
    start time names one process for the life of the machine.
    """
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    try:
        # the command name (field 2) may hold spaces and parentheses: fields after the last ')' are plain
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None
