"""``python -m simulator farm|community``: serve a site until SIGINT/SIGTERM.

Prints one JSON line describing the endpoint (for scripts and tests), then reads
operator commands from stdin when stdin is a terminal or a pipe.

``python -m simulator rtu farm|community|probes [--units 1-10] [--baud ...]``
serves the same devices as Modbus RTU/ASCII slaves on a pty (serial) line;
``python -m simulator serial nmea|kv`` a line-oriented weather sensor on a pty;
``python -m simulator demo [--site farm|community] [--duration S]`` runs a whole demo;
``python -m simulator camera --out DIR`` writes the camera scenario videos (simulator/camera.py).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import stat
import sys

from simulator.control import apply_command
from simulator.sites import SITES, start_site


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator",
                                     description="Simulated Modbus TCP devices for a demo site.")
    parser.add_argument("site", choices=sorted(SITES))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback unless --allow-remote)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second; 0 freezes time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback --host (fake devices on a real network)")
    args = parser.parse_args(argv)
    if not _is_loopback(args.host) and not args.allow_remote:
        parser.error(f"--host {args.host} is not loopback; add --allow-remote if you really mean it")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    if args.speed < 0:
        parser.error("--speed must be >= 0")
    return args


def _watch_stdin(loop: asyncio.AbstractEventLoop, on_line) -> None:
    """Feed stdin lines to ``on_line`` if stdin is a tty or a pipe; stop quietly at EOF."""
    fd = sys.stdin.fileno() if sys.stdin else -1
    try:
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        return
    if not (os.isatty(fd) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return
    buffer = bytearray()

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            loop.remove_reader(fd)
            return
        buffer.extend(chunk)
        while (nl := buffer.find(b"\n")) >= 0:
            line = buffer[:nl].decode("utf-8", "replace").strip()
            del buffer[: nl + 1]
            if line:
                on_line(line)

    loop.add_reader(fd, readable)


async def run(args: argparse.Namespace) -> int:
    sim, _clock = await start_site(args.site, port=args.port, speed=args.speed,
                                   seed=args.seed, host=args.host)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    devices = [{"id": d.id, "unit": d.unit, "profile": d.profile.name} for d in sim.devices]
    hello = {"simulator": args.site, "host": args.host, "port": sim.port, "devices": devices}
    print(json.dumps(hello, separators=(",", ":")), flush=True)
    _watch_stdin(loop, lambda line: print(apply_command(sim, line), flush=True))
    try:
        await stop.wait()
    finally:
        await sim.stop()
    return 0


# -- serial lines on ptys -----------------------------------------------------------------------
RTU_HELP = ("fault ID|UNIT silent|crc|garbled|truncated|slow|exception|none [SLOW_SECONDS]; vanish; restore; stats; "
            "and the physics commands: smoke/gas/tap/door ID ...")
SERIAL_HELP = "badsum N; overlong; garbage; silent on|off; vanish; restore; stats"


def _serial_args(parser: argparse.ArgumentParser, baud: int) -> None:
    parser.add_argument("--baud", type=int, default=baud)
    parser.add_argument("--bytesize", type=int, default=8, choices=[7, 8])
    parser.add_argument("--parity", default="N", choices=["N", "E", "O"],
                        help="timing and the master's expected format; a pty itself carries no parity")
    parser.add_argument("--stopbits", type=int, default=1, choices=[1, 2])
    parser.add_argument("--link", help="stable path (symlink) to the pty, like /dev/serial/by-id/...; default: print /dev/pts/N")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second; 0 freezes time")
    parser.add_argument("--seed", type=int, default=1)


def parse_serial_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="Simulated serial devices on a pty.")
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("rtu", help="Modbus RTU/ASCII slaves on one pty line")
    p.add_argument("site", choices=sorted(SITES) + ["probes"], help="a demo site's devices, or soil probes at --units")
    p.add_argument("--units", default="1-10", help="for 'probes': unit ids, e.g. 1-10 or 3,7,12")
    p.add_argument("--framer", default="rtu", choices=["rtu", "ascii"])
    p.add_argument("--turnaround", type=float, default=None, help="seconds from request end to reply start (default: 3.5 chars)")
    p.add_argument("--spin-us", type=float, default=0.0,
                   help="poll (yielding) instead of sleeping this long before a reply is due: a bench's precision")
    _serial_args(p, 9600)
    p = sub.add_parser("serial", help="a line-oriented weather sensor (NMEA 0183 or key=value) on a pty")
    p.add_argument("format", choices=["nmea", "kv"])
    p.add_argument("--interval", type=float, default=1.0, help="seconds between reports")
    _serial_args(p, 4800)
    args = parser.parse_args(argv)
    if args.speed < 0:
        parser.error("--speed must be >= 0")
    return args


def _rtu_command(sim, line: str) -> str:
    from simulator.rtu import FAULTS

    words = line.split()
    if words[:1] == ["fault"] and len(words) in (3, 4):
        mode = None if words[2] == "none" else words[2]
        if mode is not None and mode not in FAULTS:
            return f"error: unknown fault {words[2]!r}; {RTU_HELP}"
        try:
            sim.set_fault(int(words[1]) if words[1].isdigit() else words[1], mode,
                          float(words[3]) if len(words) == 4 else None)
        except KeyError:
            return f"error: no slave {words[1]!r}"
        except ValueError as exc:
            return f"error: {exc}"
        return "ok"
    if words == ["vanish"]:
        sim.vanish()
        return "ok"
    if words == ["restore"]:
        sim.restore()
        return "ok"
    if words == ["stats"]:
        return json.dumps(sim.stats(), separators=(",", ":"))
    with sim.lock:
        return apply_command(sim, line)


def _serial_command(sim, line: str) -> str:
    words = line.split()
    if words[:1] == ["badsum"] and len(words) == 2 and words[1].isdigit():
        sim.bad_checksum(int(words[1]))
    elif words == ["overlong"]:
        sim.overlong()
    elif words == ["garbage"]:
        sim.garbage()
    elif words[:1] == ["silent"] and len(words) == 2 and words[1] in ("on", "off"):
        sim.silent = words[1] == "on"
    elif words == ["vanish"]:
        sim.vanish()
    elif words == ["restore"]:
        sim.restore()
    elif words == ["stats"]:
        return json.dumps({"lines_sent": sim.lines_sent, "last_values": sim.expected()}, separators=(",", ":"))
    else:
        return f"error: {SERIAL_HELP}"
    return "ok"


async def run_serial(args: argparse.Namespace) -> int:
    from drivers.modbus.installer import UsageError, parse_units
    from drivers.serial_line.settings import SerialSettings
    from simulator.clock import SimClock

    settings = SerialSettings(args.baud, args.bytesize, args.parity, args.stopbits)
    clock = SimClock(args.speed)
    if args.kind == "rtu":
        from simulator.rtu import RtuLineSimulator, soil_probes

        if args.site == "probes":
            try:
                devices = soil_probes(parse_units(args.units), clock, args.seed)
            except UsageError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        else:
            devices = SITES[args.site](clock, args.seed)
        sim = RtuLineSimulator(devices, settings, framer=args.framer, link=args.link, turnaround=args.turnaround,
                               spin=args.spin_us / 1e6)
        handler = _rtu_command
        hello = {"simulator": "rtu", "site": args.site, "framer": args.framer,
                 "devices": [{"id": d.id, "unit": d.unit, "profile": d.profile.name} for d in devices]}
    else:
        from simulator.physics import WeatherStation
        from simulator.pty_sensors import SerialSensorSimulator

        sim = SerialSensorSimulator(args.format, WeatherStation(clock, args.seed * 100 + 10), settings, link=args.link,
                                    interval=args.interval)
        handler = _serial_command
        hello = {"simulator": "serial", "format": args.format, "interval": args.interval}
    sim.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    hello |= {"port": sim.path, "pts": sim.pts, "settings": str(settings)}
    print(json.dumps(hello, separators=(",", ":")), flush=True)
    _watch_stdin(loop, lambda line: print(handler(sim, line), flush=True))
    try:
        await stop.wait()
    finally:
        sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["camera"]:  # scenario videos for the camera pipeline (needs the camera extra)
        from simulator.camera import main as camera_main

        return camera_main(argv[1:])
    if argv[:1] == ["demo"]:  # simulators + broker + gateway, with a live view (simulator/demo.py)
        from simulator.demo import main as demo_main

        return demo_main(argv[1:])
    if argv[:1] in (["rtu"], ["serial"]):
        return asyncio.run(run_serial(parse_serial_args(argv)))
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before a command installed its own handler: a clean stop, not a traceback
        sys.exit(130)
