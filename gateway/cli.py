"""`canopy` command line: run, validate, demo."""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway import __version__

EXIT_CONFIG = 2


def _print_problems(exc) -> None:
    print(f"configuration error ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}):", file=sys.stderr)
    for p in exc.problems:
        print(f"  {p}", file=sys.stderr)


def cmd_validate(args) -> int:
    from gateway.config import ConfigError, load_config

    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_CONFIG
    devices = sum(len(b.devices) for b in cfg.site.buses)
    broker = f"{cfg.site.broker.host}:{cfg.site.broker.port}{' TLS' if cfg.site.broker.tls else ''}" if cfg.site.broker else "embedded (loopback, demo)"
    print(f"OK {args.file}: site {cfg.site.site}, gateway {cfg.site.gateway}, {len(cfg.site.buses)} bus(es), "
          f"{devices} device(s), {len(cfg.profiles)} profile(s), broker {broker}")
    return 0


def cmd_run(args) -> int:
    from gateway import logs
    from gateway.config import ConfigError, load_config

    logs.setup(json=args.log_json, level=args.log_level)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_CONFIG
    from gateway.runtime import run_gateway

    try:
        return asyncio.run(run_gateway(cfg))
    except KeyboardInterrupt:
        return 0
    except PermissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_status(args) -> int:
    """Show the running gateway's last health snapshot (written by the daemon)."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from gateway.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_CONFIG
    path = cfg.status_path
    try:
        status = orjson.loads(open(path, "rb").read())
    except FileNotFoundError:
        print(f"no status file at {path}: is the gateway running (canopy run -c {args.config})?", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
        return 0
    import time

    console = Console()
    up = status.get("uplink", {})
    age = time.time() - status.get("ts", 0)
    console.print(f"[bold]{status['site']}/{status['gateway']}[/] boot {status.get('boot')} · snapshot {age:.0f}s old · "
                  f"broker {'[green]connected' if up.get('connected') else '[red]disconnected'}[/]"
                  + (f" ({up['last_error']})" if up.get("last_error") else ""))
    t = Table(title="outbox (per lane)")
    for col in ("lane", "accepted", "acknowledged", "pending", "last seq"):
        t.add_column(col, justify="right" if col != "lane" else "left")
    for lane, c in status.get("outbox", {}).items():
        if isinstance(c, dict):
            t.add_row(lane, str(c.get("accepted")), str(c.get("acknowledged")), str(c.get("pending")), str(c.get("last_seq")))
    console.print(t)
    d = Table(title="devices")
    for col in ("device", "bus", "status", "polls", "failures", "detail"):
        d.add_column(col)
    for dev, st in status.get("devices", {}).items():
        colour = "green" if st.get("status") == "ok" else "red"
        d.add_row(dev, st.get("bus", ""), f"[{colour}]{st.get('status')}[/]", str(st.get("polls")), str(st.get("failures")), st.get("detail", ""))
    console.print(d)
    return 0


def cmd_demo(args) -> int:
    from gateway.demo import run_demo

    return asyncio.run(run_demo(args.site, args.duration))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="canopy", description="Canopy edge gateway")
    parser.add_argument("--version", action="version", version=f"canopy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the gateway daemon")
    p.add_argument("-c", "--config", required=True, help="site config YAML")
    p.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a site config; exit 0 if valid, 2 if not")
    p.add_argument("file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("status", help="show a running gateway's health and outbox counters")
    p.add_argument("-c", "--config", required=True, help="site config YAML of the gateway")
    p.add_argument("--json", action="store_true", help="print the raw snapshot as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", help="simulator + embedded broker + gateway, with a live view")
    p.add_argument("--site", default="farm", choices=["farm", "community"])
    p.add_argument("--duration", type=float, default=0, help="seconds to run (0: until Ctrl-C)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
