"""``python -m simulator farm|community``: serve a site until SIGINT/SIGTERM.

Prints one JSON line describing the endpoint (for scripts and tests), then reads
operator commands from stdin when stdin is a terminal or a pipe.
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


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
