"""The doctor's checks of the board itself: serial ports, USB adapters' latency, the clock, the time zone."""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import os
import stat
from pathlib import Path

from gateway.ops.checklist import FAIL, OK, WARN, Check, Host

TIME_ERROR = 5  # adjtimex(2): the kernel clock is not synchronised
LATENCY_RULE = ('ACTION=="add", SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio", ATTR{latency_timer}="1" '
                "in /etc/udev/rules.d/99-canopy-latency.rules")


def serial_ports(cfg, host: Host) -> list[Check]:
    out = []
    for bus in cfg.site.buses:
        port = getattr(bus, "port", None)
        if isinstance(port, str) and port.startswith("/"):
            out.append(_port(bus.id, port, host))
            latency = _latency(bus.id, port, host)
            if latency is not None:
                out.append(latency)
    return out


def _port(bus: str, port: str, host: Host) -> Check:
    name = f"serial {bus}"
    if not os.path.exists(port):
        return Check(name, FAIL, f"{port} not found" + (" (a broken link: adapter unplugged?)" if os.path.islink(port) else ""),
                     f"plug the adapter in; present now: {', '.join(_by_id_names(host)) or 'no /dev/serial/by-id names'}")
    st = os.stat(port)
    if not stat.S_ISCHR(st.st_mode):
        return Check(name, FAIL, f"{port} is not a serial device", "name the adapter's device, e.g. /dev/serial/by-id/usb-…")
    if not os.access(port, os.R_OK | os.W_OK):
        group = _group_name(st.st_gid)
        return Check(name, FAIL, f"{port} is not readable and writable by this user (group {group}, mode {stat.S_IMODE(st.st_mode):04o})",
                     f"usermod -aG {group} canopy (systemd/canopy.service already adds dialout), then restart the service")
    by_id = host.dev / "serial" / "by-id"
    if port.startswith(str(by_id) + "/"):
        return Check(name, OK, f"{port} present, read/write")
    stable = _stable_name(port, by_id)
    if stable:
        return Check(name, WARN, f"{port} works but its number can change on a replug or reboot",
                     f"use its stable name in the config: port: {stable}")
    return Check(name, OK, f"{port} present, read/write (no /dev/serial/by-id name: an on-board UART)")


def _latency(bus: str, port: str, host: Host) -> Check | None:
    """USB-serial adapters buffer for ``latency_timer`` ms (FTDI: 16) before handing bytes over: RS-485 turns wait for it."""
    device = os.path.basename(os.path.realpath(port))
    timer = host.sys / "bus" / "usb-serial" / "devices" / device / "latency_timer"
    try:
        ms = int(timer.read_text().strip())
    except (OSError, ValueError):
        return None  # not a USB-serial adapter (or a driver without the knob)
    if ms <= 1:
        return Check(f"latency {bus}", OK, f"{device} latency_timer {ms} ms")
    return Check(f"latency {bus}", WARN, f"{device} latency_timer is {ms} ms: every RS-485 reply waits up to that long",
                 f"echo 1 > {timer} now, and for good: {LATENCY_RULE}")


def _by_id_names(host: Host) -> list[str]:
    folder = host.dev / "serial" / "by-id"
    return sorted(str(p) for p in folder.iterdir()) if folder.is_dir() else []


def _stable_name(port: str, by_id: Path) -> str | None:
    real = os.path.realpath(port)
    if by_id.is_dir():
        for link in sorted(by_id.iterdir()):
            if os.path.realpath(link) == real:
                return str(link)
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def kernel_clock_synced() -> bool | None:
    """The kernel's own verdict (adjtimex, as NTP daemons of every kind set it); None when it cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex is ~208 bytes; modes = 0 (read only)
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    return None if state < 0 else state != TIME_ERROR


def clock(host: Host) -> Check:
    synced = (host.clock_synced or kernel_clock_synced)()
    if synced:
        return Check("clock", OK, "synchronised (NTP)")
    if synced is None:
        return Check("clock", WARN, "cannot tell whether the clock is synchronised", "timedatectl timesync-status")
    return Check("clock", FAIL, "not synchronised: records, command expiry and certificates depend on the time",
                 "timedatectl set-ntp true (and let UDP 123 out), or install chrony; a board without RTC needs it at every boot")


def time_zone(host: Host) -> Check:
    """Quiet hours, schedules and local messages use the board's zone."""
    localtime = host.etc / "localtime"
    zone = None
    if localtime.is_symlink():
        target = os.readlink(localtime)
        zone = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else None
    elif (host.etc / "timezone").is_file():
        zone = (host.etc / "timezone").read_text().strip() or None
    if zone:
        return Check("time zone", OK, zone)
    if localtime.exists():
        return Check("time zone", WARN, "set, but its name is unknown", "timedatectl set-timezone Asia/Shanghai (your zone)")
    return Check("time zone", WARN, "not set: the board runs on UTC, so quiet hours and schedules are UTC",
                 "timedatectl set-timezone Asia/Shanghai (your zone)")
