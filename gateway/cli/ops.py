"""`canopy provision | doctor | install | update | rollback`, and the units' own entry points (`boot-check`, `apply`).

The systemd units run these as ``python -m gateway.cli.ops …`` from the last good
version (``/opt/canopy/bin/canopy-ops``), so they do not depend on the `canopy`
command of a version on trial.  Exit codes: 0 done, 1 refused or rolled back,
2 a usage or config problem.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from pathlib import Path

EXIT_FAILED, EXIT_USAGE = 1, 2


def add_parsers(sub) -> None:
    p = sub.add_parser("provision", help="write a site skeleton: identity, broker, TLS key + CSR, 0600 password file")
    p.add_argument("--site"), p.add_argument("--gateway")
    p.add_argument("--broker", dest="broker_url", help="mqtts://host[:port] (mqtt:// for plain TCP)")
    p.add_argument("--username", help="broker user name (default: the gateway id)")
    p.add_argument("--password-file", type=Path, help="read the broker password from this file")
    p.add_argument("--password-stdin", action="store_true", help="read the broker password from standard input")
    p.add_argument("--ca", type=Path, help="CA certificate that signed the broker's (copied to ca.pem)")
    p.add_argument("--no-client-cert", action="store_true", help="no mTLS key and CSR")
    p.add_argument("--sign-with", nargs=2, type=Path, metavar=("CA_CERT", "CA_KEY"), help="sign the CSR with a local (lab) CA")
    p.add_argument("--etc", type=Path, default=Path("/etc/canopy"), help="where to write (default /etc/canopy)")
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/canopy"), help="the daemon's state folder")
    p.add_argument("--non-interactive", action="store_true", help="never ask; fail on what the flags do not give")
    p.add_argument("--force", action="store_true", help="replace an existing site.yaml (kept as site.yaml.bak)")
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser("doctor", help="check the board and the site, with the fix for each failure; exit 0/1")
    p.add_argument("-c", "--config", required=True, help="site config YAML")
    p.add_argument("--broker-timeout", type=float, default=5.0)
    p.add_argument("--json", action="store_true", help="the checks as JSON")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("install", help="install an offline bundle (first install, as root)")
    _root(p)
    p.add_argument("bundle", type=Path)
    p.add_argument("--release-key-fingerprint", help="refuse a first bundle whose release key has another fingerprint")
    p.add_argument("--no-user", action="store_true", help="do not create the canopy user (tests, images)")
    p.add_argument("--no-start", action="store_true", help="do not enable and start the units")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("update", help="update to a bundle side by side, health-gated, rolled back if unhealthy")
    _root(p)
    p.add_argument("bundle", type=Path)
    p.add_argument("--queue", action="store_true", help="only hand the bundle to the applier unit (no root needed)")
    _gate(p)
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("rollback", help="take a version on trial back to the last good one (OnFailure= runs this)")
    _root(p)
    p.add_argument("--reason", default="the service failed")
    p.add_argument("--no-restart", action="store_true")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("boot-check", help="count a trial version's starts, roll it back past 3 (ExecStartPre of canopy.service)")
    _root(p)
    p.set_defaults(func=cmd_boot_check)

    p = sub.add_parser("apply", help="apply the bundles handed over in /var/lib/canopy/updates (canopy-applier.service)")
    _root(p)
    _gate(p)
    p.set_defaults(func=cmd_apply)


def _root(p) -> None:
    p.add_argument("--root", type=Path, default=Path("/"), help="install root (default /; a folder in tests)")


def _gate(p) -> None:
    p.add_argument("--timeout", type=float, default=120.0, help="READY + broker + devices within this many seconds")
    p.add_argument("--settle", type=float, default=10.0, help="and healthy for this long")
    p.add_argument("--status-file", type=Path, help="the daemon's status file (default: from site.yaml)")
    p.add_argument("--no-user", action="store_true", help=argparse.SUPPRESS)


# -- provision / doctor -------------------------------------------------------------------
def cmd_provision(args) -> int:
    from gateway.ops.provision import ProvisionError, ProvisionRequest, ask_missing, default_owner, provision

    fields = {"site": args.site, "gateway": args.gateway, "broker_url": args.broker_url, "username": args.username}
    try:
        fields["password"] = _password(args)
        if not args.non_interactive and sys.stdin.isatty():
            fields = ask_missing(fields, _ask, getpass.getpass)
        missing = [k for k in ("site", "gateway", "broker_url") if not fields.get(k)]
        if missing:
            print(f"error: missing {', '.join('--' + m.replace('_url', '') for m in missing)}", file=sys.stderr)
            return EXIT_USAGE
        req = ProvisionRequest(**fields, etc=args.etc, state=args.state_dir, ca=args.ca, client_cert=not args.no_client_cert,
                               sign_with=tuple(args.sign_with) if args.sign_with else None, owner=default_owner(), force=args.force)
        done = provision(req)
    except (ProvisionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ProvisionError) else EXIT_FAILED
    for path in done.written:
        print(f"wrote {path}")
    for step in done.next_steps:
        print(f"next: {step}")
    return 0


def _password(args) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if args.password_file:
        return args.password_file.read_text().strip()
    return None


def _ask(text: str, default: str | None) -> str:
    return input(f"{text}{f' [{default}]' if default else ''}: ").strip()


def cmd_doctor(args) -> int:
    from gateway.ops.checklist import exit_code, render
    from gateway.ops.doctor import Doctor

    checks = Doctor(args.config, broker_timeout=args.broker_timeout).run()
    if args.json:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        print("\n".join(render(checks)))
    return exit_code(checks)


# -- install / update / rollback ------------------------------------------------------------
def cmd_install(args) -> int:
    from gateway.ops import releases
    from gateway.ops.bundle import BundleError
    from gateway.ops.install import InstallError, install_version
    from gateway.ops.layout import Layout
    from gateway.ops.service import SystemdService

    layout = Layout(args.root)
    if releases.load(layout).good is not None:  # installed already: the same as `canopy update`, health gate and all
        print(f"canopy {releases.load(layout).good} is installed: updating (health-gated)", file=sys.stderr)
        args.timeout, args.settle, args.status_file = 120.0, 10.0, None
        return cmd_update(argparse.Namespace(**vars(args), queue=False))
    try:
        inst = install_version(args.bundle, layout, create_user=not args.no_user, expect_fingerprint=args.release_key_fingerprint)
        releases.begin_trial(layout, inst.version)
        releases.commit(layout)  # the first version: nothing older to fall back to
    except (BundleError, InstallError, releases.ReleaseError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"installed canopy {inst.version} ({inst.set}) in {layout.version_dir(inst.version)}; release key {inst.fingerprint}")
    if not layout.site_config.exists():
        print("next: canopy provision (writes /etc/canopy/site.yaml), then systemctl enable --now canopy canopy-applier.path")
    elif not args.no_start:
        why = SystemdService().enable_now()
        print(f"error: {why}" if why else "started canopy.service", file=sys.stderr if why else sys.stdout)
        return EXIT_FAILED if why else 0
    return 0


def _status_file(args, layout) -> Path:
    if args.status_file:
        return args.status_file
    from gateway.ops.doctor import load

    cfg, _ = load(str(layout.site_config))
    return Path(cfg.status_path) if cfg is not None else layout.state / "canopy-status.json"


def cmd_update(args) -> int:
    from gateway.ops.layout import Layout
    from gateway.ops.update import hand_over

    layout = Layout(args.root)
    if args.queue:
        print(f"handed to the applier: {hand_over(args.bundle, layout)}; its result: {layout.updates / 'results'}")
        return 0
    from gateway.ops.update import update

    return _report([update(args.bundle, layout, _service(), _status_file(args, layout), policy=_policy(args),
                           create_user=not args.no_user)])


def cmd_apply(args) -> int:
    from gateway.ops.layout import Layout
    from gateway.ops.update import apply_pending

    layout = Layout(args.root)
    return _report(apply_pending(layout, _service(), _status_file(args, layout), policy=_policy(args), create_user=not args.no_user))


def _service():
    from gateway.ops.service import SystemdService

    return SystemdService()


def _policy(args):
    from gateway.ops.update import GatePolicy

    return GatePolicy(timeout=args.timeout, settle=args.settle)


def _report(results) -> int:
    for res in results:
        print(res.line(), file=sys.stdout if res.outcome in ("installed", "committed") else sys.stderr)
    return EXIT_FAILED if any(r.outcome in ("refused", "rolled_back") for r in results) else 0


def cmd_rollback(args) -> int:
    from gateway.ops import releases
    from gateway.ops.layout import Layout

    to = releases.rollback(Layout(args.root), args.reason)
    if to is None:
        print("nothing to roll back: the running version is the last good one")
        return 0
    print(f"rolled back to {to}")
    if not args.no_restart:
        _service().restart()
    return 0


def cmd_boot_check(args) -> int:
    from gateway.ops import releases
    from gateway.ops.layout import Layout

    to = releases.boot_check(Layout(args.root))
    if to:
        print(f"version on trial never became healthy: rolled back to {to}", file=sys.stderr)
    return 0  # never stop the start: the version to run is now the right one


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="canopy-ops", description="Canopy operations (install, update, rollback)")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    if os.environ.get("CANOPY_OPS_DEBUG") is None:
        logging.getLogger("canopy.ops").setLevel(logging.WARNING)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
