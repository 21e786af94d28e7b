"""The site a command works on: its config loaded with every problem printed, and its status file.

Operator views tolerate an unplugged serial adapter (the daemon does too), so
they load with ``missing_ports_ok``.  Exit code 2 means a bad config.
"""

from __future__ import annotations

import sys

import orjson

EXIT_CONFIG = 2


def print_problems(exc) -> None:
    """A ConfigError as the installer reads it: one ``file:line: key: message`` per problem."""
    print(f"configuration error ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}):", file=sys.stderr)
    for p in exc.problems:
        print(f"  {p}", file=sys.stderr)


def load_site(path: str, *, missing_ports_ok: bool = True):
    """The validated site config, or None after printing why not."""
    from core.yamlsrc import ConfigError
    from gateway.config.load import load_config

    try:
        return load_config(path, missing_ports_ok=missing_ports_ok)
    except ConfigError as exc:
        print_problems(exc)
        return None


def read_status(config: str) -> dict | int:
    """The running gateway's last health snapshot, or an exit code after saying why not."""
    cfg = load_site(config)
    if cfg is None:
        return EXIT_CONFIG
    try:
        with open(cfg.status_path, "rb") as f:
            return orjson.loads(f.read())
    except FileNotFoundError:
        print(f"no status file at {cfg.status_path}: is the gateway running (canopy run -c {config})?", file=sys.stderr)
        return 1
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"cannot read the status file {cfg.status_path}: {exc}", file=sys.stderr)
        return 1
