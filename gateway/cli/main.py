"""`canopy` command line: run, validate, status; the installer tools (installer.py), alerts and acks
(alerts.py), signed remote commands (commands.py).

Exit codes: 0 ok; 1 a failure that is not the config's (cannot start, nothing answered); 2 a config or usage
problem; `canopy status` adds 3 (not running) and 4 (stale snapshot).  Every failure is one line, never a traceback.
"""

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
    """The daemon.  Exit 0 after a clean stop; 2 for a config problem; 1 when it cannot start otherwise.

    Whatever goes wrong is said in one line (the traceback only with ``--log-level debug``).
    """
    from gateway import logs
    from gateway.config.security import DAEMON_UMASK, daemon_paths, exposed_files

    os.umask(DAEMON_UMASK)  # whatever the shell's umask: every file the daemon creates is 0600, every folder 0700
    logs.setup(json=args.log_json, level=args.log_level)
    cfg = load_site(args.config, warn=log.warning, daemon=True)
    if cfg is None:
        return EXIT_CONFIG
    if problems := _metrics_problems(args):
        for problem in problems:
            log.error("%s", problem)
        return EXIT_CONFIG
    for sentence in exposed_files(daemon_paths(cfg)):
        log.warning(sentence)
    from gateway.daemon import run_gateway
    from gateway.runtime import StartOptions

    try:
        return asyncio.run(run_gateway(cfg, StartOptions(metrics_file=args.metrics_file, metrics_port=args.metrics_port)))
    except KeyboardInterrupt:
        return 0
    except PermissionError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except Exception as exc:  # a bug: still one line, the traceback at debug level
        log.error("stopped by an internal error: %s: %s (--log-level debug shows where)", type(exc).__name__, exc,
                  exc_info=log.isEnabledFor(logging.DEBUG))
        return 1


def _metrics_problems(args) -> list[str]:
    if args.metrics_file is None and args.metrics_port is None:
        return []
    try:
        from gateway.status.metrics import check_options
    except ImportError as exc:
        return [f"--metrics-file/--metrics-port need the prometheus-client package ({exc})"]
    return check_options(args.metrics_file, args.metrics_port)


def cmd_status(args) -> int:
    """Is the gateway running, and its last health snapshot.  Exit codes: gateway/status/verdict.py."""
    import time

    import orjson

    from gateway.status.verdict import judge

    status = read_status(args.config)
    if isinstance(status, int):
        return status
    verdict = judge(status, time.time())
    if args.json:
        print(orjson.dumps({**status, "verdict": verdict.as_dict()}, option=orjson.OPT_INDENT_2).decode())
        return verdict.exit_code
    _print_status(status, verdict)
    return verdict.exit_code


def _print_status(status: dict, verdict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    up = status.get("uplink", {})
    colour = {"running": "green", "stale": "yellow"}.get(verdict.state, "red")
    live = f"[{colour}]{verdict.state}[/]" + (f" ({verdict.detail})" if verdict.detail else "")
    broker = f"broker {'[green]connected' if up.get('connected') else '[red]disconnected'}[/]" + (
        f" ({up['last_error']})" if up.get("last_error") else "")
    console.print(f"[bold]{status.get('site')}/{status.get('gateway')}[/] {live} · boot {status.get('boot')} · "
                  f"snapshot {verdict.age_s:.0f}s old · " + (broker if verdict.state == "running" else f"last seen: {broker}"))
    if facts := _health_facts(status):
        console.print(" · ".join(facts))
    t = Table(title="outbox (per lane)")
    for col in ("lane", "accepted", "acknowledged", "pending", "oldest", "last seq"):
        t.add_column(col, justify="right" if col != "lane" else "left")
    for lane, c in status.get("outbox", {}).items():
        if isinstance(c, dict):  # "accepted" is what an operator calls the outbox's "produced": committed records
            oldest = f"{c['oldest_age_s']:.0f}s" if isinstance(c.get("oldest_age_s"), (int, float)) else "-"
            t.add_row(lane, str(c.get("produced")), str(c.get("acknowledged")), str(c.get("pending")), oldest, str(c.get("last_seq")))
    console.print(t)
    d = Table(title="devices")
    for col in ("device", "bus", "status", "polls", "failures", "detail"):
        d.add_column(col)
    for dev, st in status.get("devices", {}).items():
        colour = "green" if st.get("status") == "ok" else "red"
        d.add_row(dev, st.get("bus", ""), f"[{colour}]{st.get('status')}[/]", str(st.get("polls")), str(st.get("failures")), st.get("detail", ""))
    console.print(d)


def _health_facts(status: dict) -> list[str]:
    """Version, uptime, the board (disk, memory, temperature) and the last PUBACK, where the snapshot has them."""
    import time

    host, up = status.get("host") or {}, status.get("uplink") or {}
    facts = ([f"canopy {status['version']}"] if status.get("version") else []) + (
        [f"config {status['meta']}"] if status.get("meta") else [])
    if isinstance(status.get("uptime_s"), (int, float)):
        facts.append(f"up {_duration(status['uptime_s'])}")
    if isinstance(host.get("disk_free_bytes"), int):
        facts.append(f"disk free {host['disk_free_bytes'] / 2**30:.1f} GiB")
    if isinstance(host.get("rss_bytes"), int):
        facts.append(f"RSS {host['rss_bytes'] / 2**20:.0f} MiB")
    if isinstance(host.get("cpu_temp_c"), (int, float)):
        facts.append(f"CPU {host['cpu_temp_c']:.0f} °C")
    if isinstance(up.get("last_puback_ts"), (int, float)):
        facts.append(f"last PUBACK {_duration(time.time() - up['last_puback_ts'])} ago")
    return facts


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds < 172800 else f"{seconds // 86400} d"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="canopy", description="Canopy edge gateway")
    parser.add_argument("--version", action="version", version=f"canopy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the gateway daemon")
    p.add_argument("-c", "--config", required=True, help="site config YAML")
    p.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--metrics-file", metavar="PATH.prom",
                   help="also write Prometheus metrics to this file (node_exporter's textfile collector folder)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="also serve Prometheus metrics on 127.0.0.1:PORT")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a site config; exit 0 if valid, 2 if not")
    p.add_argument("file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("status", help="is the gateway running; its health and outbox counters "
                       "(exit 0 running, 1 no status file, 2 bad config, 3 not running, 4 stale)")
    p.add_argument("-c", "--config", required=True, help="site config YAML of the gateway")
    p.add_argument("--json", action="store_true", help="print the raw snapshot as JSON")
    p.set_defaults(func=cmd_status)

    from gateway.cli.alerts import add_parsers as add_alert_parsers
    from gateway.cli.commands import add_parsers as add_command_parsers
    from gateway.cli.installer import add_parsers as add_installer_parsers
    from gateway.cli.ops import add_parsers as add_ops_parsers

    add_installer_parsers(sub)
    add_alert_parsers(sub)
    add_command_parsers(sub)
    add_ops_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
