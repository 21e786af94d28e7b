"""Installer tools: ``canopy scan`` and ``canopy probe`` on a serial port or Modbus TCP, ``canopy bus`` on a running gateway.

What an installer runs on site with a laptop on the RS-485 line, or on the
network of a TCP-to-RS-485 gateway (``--port 192.168.1.50:502``): find the
slaves (unit ids; on a serial line also baud rate and parity), read or write one
value raw and decoded, and watch a running gateway's lines.  Exit codes: 0 ok,
1 nothing answered or a device error, 2 usage (or a port that is missing, busy
or not permitted, or a TCP address where nothing answers the connection).
"""

from __future__ import annotations

import asyncio
import sys

from gateway.cli.site import EXIT_CONFIG, read_status

SCAN_TIMEOUT = 0.15  # a slave on the line answers within a few character times
SCAN_TIMEOUT_TCP = 0.3  # plus the TCP gateway's own turnaround


def add_parsers(sub) -> None:
    p = sub.add_parser("scan", help="find Modbus slaves on a serial port (unit ids, baud rate, parity) or behind a Modbus TCP gateway")
    p.add_argument("--port", required=True, help="serial device, e.g. /dev/serial/by-id/usb-... or /dev/ttyUSB0; "
                   "or HOST:PORT of a TCP-to-RS-485 gateway (the serial settings are then ignored)")
    p.add_argument("--baud", default="9600,19200", help="comma-separated baud rates to try (default 9600,19200)")
    p.add_argument("--parity", default="N,E", help="comma-separated parities to try: N, E, O (default N,E)")
    p.add_argument("--stopbits", type=int, default=1, choices=[1, 2])
    p.add_argument("--units", default="1-247", help="unit ids to try, e.g. 1-247 or 1-20,100 (default 1-247)")
    p.add_argument("--timeout", type=float, default=None,
                   help=f"seconds to wait for each unit (default {SCAN_TIMEOUT} on a serial port, {SCAN_TIMEOUT_TCP} over TCP)")
    p.add_argument("--framer", default="rtu", choices=["rtu", "ascii"])
    p.add_argument("--json", action="store_true", help="print the result as JSON (progress goes to stderr)")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("probe", help="read or write one register range / coil on one slave, show raw and decoded")
    p.add_argument("--port", required=True, help="serial device, or HOST:PORT of a Modbus TCP device or gateway")
    p.add_argument("--unit", type=int, required=True, help="slave unit id (1..247; 0..255 over TCP)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--read", metavar="TABLE:ADDR:COUNT", help="e.g. holding:0:4, input:6:2, coil:0:8")
    what.add_argument("--write", metavar="TABLE:ADDR:VALUE", help="e.g. coil:0:1, holding:10:123 (encoded with --as)")
    p.add_argument("--as", dest="as_type", default="u16",
                   choices=["u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64", "string", "hex"],
                   help="decode (or encode) registers as this type (default u16)")
    p.add_argument("--word-order", default="big", choices=["big", "little"], help="register order of multi-register values")
    p.add_argument("--byte-order", default="big", choices=["big", "little"], help="byte order inside each register")
    p.add_argument("--baud", default="9600", help="baud rate (default 9600)")
    p.add_argument("--parity", default="N", help="N, E or O (default N)")
    p.add_argument("--stopbits", type=int, default=1, choices=[1, 2])
    p.add_argument("--timeout", type=float, default=0.5, help="reply timeout in seconds (default 0.5)")
    p.add_argument("--framer", default="rtu", choices=["rtu", "ascii"])
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("bus", help="a running gateway's serial lines: utilisation, per-slave success, latency, quarantine")
    p.add_argument("-c", "--config", required=True, help="site config YAML of the gateway")
    p.add_argument("--json", action="store_true", help="print the bus statistics as JSON")
    p.set_defaults(func=cmd_bus)


def _quiet_line_log() -> None:
    """The installer tools print their own one-line errors; the daemon's failure log would repeat them."""
    import logging

    logging.getLogger("canopy.modbus.rtu").setLevel(logging.ERROR)


def _port_problem(port: str) -> str | None:
    import os

    if not os.path.exists(port):
        from gateway.poll.buses.serial_port import serial_ports_hint

        return f"serial port {port} not found{serial_ports_hint()}"
    return None


def _progress(console, transient: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[found]} found"),
                    TimeRemainingColumn(), console=console, transient=transient)


def _tcp_address(port: str):
    """The Modbus TCP address ``--port`` names, or None for a serial device (UsageError if it is neither)."""
    from drivers.modbus.tcp_scan import parse_address

    return parse_address(port)


def cmd_scan(args) -> int:
    """Find which unit ids answer (on a serial port: at which baud rate and parity)."""
    from rich.console import Console

    from drivers.modbus.installer import UsageError, parse_bauds, parse_parities, parse_units, scan, snippet

    _quiet_line_log()
    console = Console(stderr=args.json)
    try:
        address = _tcp_address(args.port)
        args.timeout = args.timeout if args.timeout is not None else SCAN_TIMEOUT if address is None else SCAN_TIMEOUT_TCP
        bauds, parities, units = parse_bauds(args.baud), parse_parities(args.parity), parse_units(args.units)
        if args.timeout <= 0 or args.timeout > 10:
            raise UsageError("--timeout must be in (0, 10] seconds")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if address is not None:
        return _scan_tcp(args, console, address, units)
    if (problem := _port_problem(args.port)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    total = len(bauds) * len(parities) * len(units)
    estimate = total * args.timeout
    console.print(f"scanning {args.port}: {len(units)} unit(s) x {len(bauds)} baud rate(s) x {len(parities)} parity "
                  f"setting(s), up to {estimate:.0f}s")
    with _progress(console, args.json) as progress:
        task = progress.add_task("scan", total=total, found=0)

        def step(baud, unit, parity, found):
            progress.update(task, advance=1, found=found, description=f"{baud} 8{parity}{args.stopbits} unit {unit:>3}")

        try:
            result = asyncio.run(scan(args.port, bauds, parities, units, stopbits=args.stopbits, timeout=args.timeout,
                                      framer=args.framer, on_step=step))
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if args.json:
        import orjson

        print(orjson.dumps(result.as_dict() | {"snippet": snippet(result)}).decode())
        return 0 if result.found else 1
    if not result.found:
        console.print(f"[red]no slave answered[/] ({result.tried} tries"
                      + (f", {result.noise} garbled replies: wiring noise or a setting not tried" if result.noise else "")
                      + "). Check A/B wiring, termination, power, and try more --baud/--parity values.")
        return 1
    _print_found(console, args.port, result, snippet(result))
    return 0


def _scan_tcp(args, console, address, units: list[int]) -> int:
    """The units behind a TCP-to-RS-485 gateway: 0x0A, 0x0B and silence all mean absent."""
    from rich.syntax import Syntax
    from rich.table import Table

    from drivers.modbus.installer import UsageError
    from drivers.modbus.tcp_scan import scan_tcp, tcp_snippet

    console.print(f"scanning {address} (Modbus TCP): {len(units)} unit(s), up to {len(units) * args.timeout:.0f}s")
    with _progress(console, args.json) as progress:
        task = progress.add_task("scan", total=len(units), found=0)

        def step(unit, found):
            progress.update(task, advance=1, found=found, description=f"unit {unit:>3}")

        try:
            result = asyncio.run(scan_tcp(address, units, timeout=args.timeout, on_step=step))
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    config_snippet = tcp_snippet(result, address)
    if args.json:
        import orjson

        print(orjson.dumps(result.as_dict() | {"snippet": config_snippet}).decode())
        return 0 if result.found else 1
    absent = ", ".join(f"{n} {why}" for why, n in sorted(result.absent.items())) or "none"
    if not result.found:
        console.print(f"[red]no unit answered[/] behind {address} ({result.tried} tried; absent: {absent}). "
                      "Check the gateway's serial settings (baud, parity) and the RS-485 wiring behind it.")
        return 1
    t = Table(title=f"units behind {address}")
    for col in ("unit", "answered", "latency"):
        t.add_column(col, justify="left" if col == "answered" else "right")
    for f in result.found:
        t.add_row(str(f.unit), f.answer, f"{f.latency_ms:.1f} ms")
    console.print(t)
    console.print(f"absent: {absent}" + (f" · {result.noise} garbled replies" if result.noise else ""))
    console.print("paste into your site config (set each profile):")
    console.print(Syntax(config_snippet, "yaml", theme="ansi_dark", background_color="default"))
    return 0


def _print_found(console, port: str, result, config_snippet: str) -> None:
    """The slaves a scan found, warnings about mixed settings and noise, and the config snippet."""
    from rich.syntax import Syntax
    from rich.table import Table

    t = Table(title=f"slaves on {port}")
    for col in ("baud", "format", "unit", "answered", "latency"):
        t.add_column(col, justify="right" if col in ("baud", "unit", "latency") else "left")
    for f in result.found:
        t.add_row(str(f.baudrate), f"8{f.parity}{f.stopbits}", str(f.unit), f.answer, f"{f.latency_ms:.1f} ms")
    console.print(t)
    if len({(f.baudrate, f.parity) for f in result.found}) > 1:
        console.print("[yellow]slaves answer at different settings: one line needs one setting for all its slaves[/]")
    if result.noise:
        console.print(f"[yellow]{result.noise} garbled/CRC-failed replies during the scan (noise or termination?)[/]")
    console.print("paste into your site config (set each profile):")
    console.print(Syntax(config_snippet, "yaml", theme="ansi_dark", background_color="default"))


def _probe_call(args):
    """(a coroutine that probes, where it probes) for ``--port``: a serial device or a Modbus TCP address."""
    from drivers.modbus.installer import UsageError, parse_bauds, parse_parities, probe
    from drivers.serial_line.settings import SerialSettings

    kw = dict(read=args.read, write=args.write, dtype=args.as_type, word_order=args.word_order, byte_order=args.byte_order,
              timeout=args.timeout)
    address = _tcp_address(args.port)
    if address is not None:
        from drivers.modbus.tcp_scan import probe_tcp

        return probe_tcp(address, args.unit, **kw), "Modbus TCP"
    baud = parse_bauds(args.baud)[0]
    parity = parse_parities(args.parity)[0]
    if not 1 <= args.unit <= 247:
        raise UsageError("--unit must be 1..247")
    settings = SerialSettings(baud, 8 if args.framer == "rtu" else 7, parity, args.stopbits)
    if (problem := _port_problem(args.port)) is not None:
        raise UsageError(problem)
    return probe(args.port, settings, args.unit, framer=args.framer, **kw), str(settings)


def cmd_probe(args) -> int:
    """Read or write one thing on one slave and show raw and decoded values."""
    from rich.console import Console
    from rich.table import Table

    from drivers.errors import DeviceError, DeviceUnreachable
    from drivers.modbus.installer import UsageError

    _quiet_line_log()
    try:
        call, where = _probe_call(args)
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        out = asyncio.run(call)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DeviceUnreachable as exc:  # the port itself: missing, busy, no permission; nothing at the TCP address
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DeviceError as exc:
        print(f"error: unit {args.unit} at {where}: {exc.status}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        import orjson

        print(orjson.dumps(out).decode())
        return 0
    console = Console()
    what = f"{out['op']} {out['table']} {out['address']}" + (f"+{out['count']}" if out["op"] == "read" else f" = {out['value']}")
    console.print(f"[bold]unit {args.unit}[/] on {args.port} at {where}: {what}")
    if "registers" in out:
        t = Table(title="registers")
        for col in ("address", "hex", "u16", "i16"):
            t.add_column(col, justify="right")
        for i, r in enumerate(out["registers"]):
            t.add_row(str(out["address"] + i), f"0x{r:04X}", str(r), str(r - 0x10000 if r >= 0x8000 else r))
        console.print(t)
        console.print(f"as {out['as']} (word order {out['word_order']}, byte order {out['byte_order']}): "
                      + ", ".join(map(str, out["values"])))
    else:
        console.print(", ".join(f"{out['address'] + i}: {int(b)}" for i, b in enumerate(out["bits"])))
    return 0


def cmd_bus(args) -> int:
    """Per-line utilisation and per-slave health of a running gateway (from its status file)."""
    import time

    import orjson
    from rich.console import Console

    status = read_status(args.config)
    if isinstance(status, int):
        return status
    buses = status.get("buses") or {}
    if args.json:
        print(orjson.dumps({"ts": status.get("ts"), "buses": buses}, option=orjson.OPT_INDENT_2).decode())
        return 0
    console = Console()
    age = time.time() - status.get("ts", 0)
    console.print(f"[bold]{status.get('site')}/{status.get('gateway')}[/] · snapshot {age:.0f}s old")
    if not buses:
        console.print("no bus reports statistics (Modbus TCP endpoints do not; see `canopy status`)")
    devices = status.get("devices") or {}
    for bus_id, st in buses.items():
        state = st.get("state", "?")
        colour = "green" if state == "open" else "yellow" if state == "opening" else "red"
        head = f"[bold]{bus_id}[/] {st.get('type', '')} {st.get('port', '')} {st.get('settings', '')} [{colour}]{state}[/]"
        if st.get("port_error"):
            head += f" ({st['port_error']})"
        console.print(head)
        if st.get("type") == "serial_line":
            _print_serial_line(console, st, devices)
        else:
            _print_rtu_line(console, st)
    return 0


def _print_serial_line(console, st: dict, devices: dict) -> None:
    from rich import box
    from rich.table import Table

    console.print(f"  lines {st.get('lines')} valid {st.get('valid_lines')} · checksum errors {st.get('checksum_errors')} · "
                  f"framing {st.get('framing_errors')} · overlong {st.get('overlong')} · unmatched {st.get('unmatched')} · "
                  f"value errors {st.get('value_errors')} · last line {st.get('last_line_age_s')}s ago")
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("sensor", "status", "updates", "last update"):
        t.add_column(col)
    for sid, s in (st.get("sensors") or {}).items():
        dst = (devices.get(sid) or {}).get("status", "?")
        t.add_row(sid, dst, str(s.get("updates")), f"{s.get('last_update_age_s')}s ago" if s.get("last_update_age_s") is not None else "never")
    console.print(t)


def _print_rtu_line(console, st: dict) -> None:
    from rich import box
    from rich.table import Table

    console.print(f"  utilisation {100 * st.get('utilisation', 0):.1f}% (wire {100 * st.get('wire_utilisation', 0):.1f}%) · "
                  f"queue {st.get('queue')} · transactions {st.get('transactions')} · "
                  f"reopened {max(0, st.get('opens', 0) - 1)}x")
    console.print(f"  timeouts {st.get('timeouts')} · CRC {st.get('crc_errors')} · garbled {st.get('garbled')} · "
                  f"truncated {st.get('truncated')} · exceptions {st.get('exceptions')}")
    reaction = st.get("reaction_ms") or {}
    timing = f"p50 {reaction['p50']:.2f} ms, p99 {reaction['p99']:.2f} ms" if reaction else "no figure yet"
    if st.get("process"):
        deaths = st.get("worker_deaths", 0)
        where = f"worker process, {deaths} restart{'' if deaths == 1 else 's'}"
    else:
        where = "on the event loop"
    console.print(f"  after the gap: {timing} · {where}")
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    t.add_column("unit", justify="right")
    t.add_column("device", overflow="fold", min_width=8)
    t.add_column("state", no_wrap=True, min_width=11)
    for col in ("ok %", "avg ms", "p95 ms", "fails", "quar.", "probe"):
        t.add_column(col, justify="right", no_wrap=True)
    for unit, s in (st.get("slaves") or {}).items():
        sstate = s.get("state", "?")
        colour = {"ok": "green", "quarantined": "red", "backoff": "yellow", "failing": "yellow"}.get(sstate, "white")
        rate = s.get("success_rate")
        lat = s.get("latency_ms") or {}
        t.add_row(unit, s.get("device") or "", f"[{colour}]{sstate}[/]", f"{100 * rate:.1f}%" if rate is not None else "-",
                  f"{lat['avg']:.1f}" if lat else "-", f"{lat['p95']:.1f}" if lat else "-", str(s.get("failures")),
                  str(s.get("quarantines")), f"{s['next_probe_in_s']:.0f}s" if "next_probe_in_s" in s else "")
    console.print(t)
