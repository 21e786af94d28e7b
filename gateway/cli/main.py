"""`canopy` command line: run, validate, status; the installer tools (installer.py), alerts and acks
(alerts.py), signed remote commands (commands.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from gateway import __version__
from gateway.cli.site import EXIT_CONFIG, load_site, print_warning, read_status

log = logging.getLogger("canopy")


def cmd_validate(args) -> int:
    cfg = load_site(args.file, missing_ports_ok=False, warn=print_warning)
    if cfg is None:
        return EXIT_CONFIG
    devices = sum(len(b.devices) for b in cfg.site.buses)
    broker = f"{cfg.site.broker.host}:{cfg.site.broker.port}{' TLS' if cfg.site.broker.tls else ''}" if cfg.site.broker else "embedded (loopback, demo)"
    print(f"OK {args.file}: site {cfg.site.site}, gateway {cfg.site.gateway}, {len(cfg.site.buses)} bus(es), "
          f"{devices} device(s), {len(cfg.profiles)} profile(s), broker {broker}")
    return 0


def cmd_run(args) -> int:
    from gateway import logs
    from gateway.config.security import DAEMON_UMASK, daemon_paths, exposed_files

    os.umask(DAEMON_UMASK)  # whatever the shell's umask: every file the daemon creates is 0600, every folder 0700
    logs.setup(json=args.log_json, level=args.log_level)
    cfg = load_site(args.config, warn=log.warning)
    if cfg is None:
        return EXIT_CONFIG
    for sentence in exposed_files(daemon_paths(cfg)):
        log.warning(sentence)
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

    status = read_status(args.config)
    if isinstance(status, int):
        return status
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
        if isinstance(c, dict):  # "accepted" is what an operator calls the outbox's "produced": committed records
            t.add_row(lane, str(c.get("produced")), str(c.get("acknowledged")), str(c.get("pending")), str(c.get("last_seq")))
    console.print(t)
    d = Table(title="devices")
    for col in ("device", "bus", "status", "polls", "failures", "detail"):
        d.add_column(col)
    for dev, st in status.get("devices", {}).items():
        colour = "green" if st.get("status") == "ok" else "red"
        d.add_row(dev, st.get("bus", ""), f"[{colour}]{st.get('status')}[/]", str(st.get("polls")), str(st.get("failures")), st.get("detail", ""))
    console.print(d)
    return 0


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

    from gateway.cli.alerts import add_parsers as add_alert_parsers
    from gateway.cli.commands import add_parsers as add_command_parsers
    from gateway.cli.installer import add_parsers as add_installer_parsers

    add_installer_parsers(sub)
    add_alert_parsers(sub)
    add_command_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
