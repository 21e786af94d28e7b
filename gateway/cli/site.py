"""The site a command works on: its config loaded with every problem printed, and its status file.

Operator views tolerate an unplugged serial adapter (the daemon does too), so
they load with ``missing_ports_ok``.  Exit code 2 means a bad config.
``canopy validate`` and ``canopy run`` also review the site's security
(``gateway.config.security``): warnings by default, refusals under
``security: strict``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace

import orjson

EXIT_CONFIG = 2


def print_problems(exc) -> None:
    """A ConfigError as the installer reads it: one ``file:line: key: message`` per problem."""
    print(f"configuration error ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}):", file=sys.stderr)
    for p in exc.problems:
        print(f"  {p}", file=sys.stderr)


def print_warning(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def load_site(path: str, *, missing_ports_ok: bool = True, warn: Callable[[str], None] | None = None):
    """The validated site config, or None after printing why not.

    With ``warn`` (``validate``, ``run``) the site's security is reviewed too:
    each weakness goes to ``warn``, or refuses the site under ``security: strict``.
    """
    from core.yamlsrc import ConfigError
    from gateway.config.load import load_config

    try:
        cfg = load_config(path, missing_ports_ok=missing_ports_ok)
        if warn is not None:
            _review_security(cfg, warn)
        return cfg
    except ConfigError as exc:
        print_problems(exc)
        return None


def _review_security(cfg, warn: Callable[[str], None]) -> None:
    """Warn about each weakness, or raise ConfigError with them all when the site is strict."""
    from core.yamlsrc import ConfigError, load_yaml
    from gateway.config.security import review

    found = review(cfg.site, load_yaml(cfg.file))  # the file again, for the lines: a few KB
    if found.refused:
        raise ConfigError([replace(p, message=f"{p.message} (refused: the site says `security: strict`)") for p in found.refused])
    for problem in found.warnings:
        warn(f"{problem} (`security: strict` refuses this)")


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
