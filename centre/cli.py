"""``canopy-centre``: run the centre, migrate its database, and the commands other modules add.

Other modules add subcommands without editing this file: each module named in
:data:`EXTENSIONS` that exists defines ``register(subparsers)`` and sets
``func=async def (args, cfg) -> int`` (or ``sync_func=def (args) -> int`` for commands that need
no config, or ``config_func=def (args, cfg) -> int`` for synchronous commands whose config is
optional: ``cfg`` is the whole centre.yaml when ``-c`` was given, else None) on its parser.
The whole centre.yaml (``centre.fullconfig``) is loaded here, so a module never has to import
it (it imports every module's config section: an import cycle from inside a module).  Exit codes: 0 ok, 2 config or usage error, 1 failure, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys

from core.yamlsrc import ConfigError

# modules that add subcommands (users, keys, ...); a missing one is simply not offered
EXTENSIONS = ("centre.people.cli", "centre.acting.cli", "centre.web.cli")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="canopy-centre", description="Canopy Centre: gateway traffic -> people's work")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the centre daemon: ingest (and whatever else is configured)")
    run.add_argument("-c", "--config", required=True, help="centre.yaml")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=_run)

    db = sub.add_parser("db", help="the database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply every migration (Alembic, to all heads)")
    up.add_argument("-c", "--config", help="centre.yaml (its database.url)")
    up.add_argument("--url", help="a database URL instead of a config")
    up.set_defaults(sync_func=_db_upgrade)

    for name in EXTENSIONS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that module does not exist (yet)
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "sync_func", None) is not None:
            return args.sync_func(args)
        from centre.fullconfig import load_full_config

        if getattr(args, "config_func", None) is not None:
            return args.config_func(args, load_full_config(args.config) if getattr(args, "config", None) else None)
        cfg = load_full_config(args.config)
        try:
            return asyncio.run(args.func(args, cfg))
        finally:
            if args.func is _run:  # stopped already: a late SIGTERM must not kill the exit half-way
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _run(args, cfg) -> int:
    from centre.service import run_service

    return await run_service(cfg)


def _db_upgrade(args) -> int:
    from centre.store.migrate import upgrade

    if bool(args.url) == bool(args.config):
        print("canopy-centre db upgrade: give -c centre.yaml or --url URL", file=sys.stderr)
        return 2
    if args.url:
        url = args.url
    else:
        from centre.fullconfig import load_full_config

        url = load_full_config(args.config).database.url
    upgrade(url)
    print("database upgraded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
