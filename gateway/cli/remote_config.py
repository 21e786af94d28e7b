"""``canopy remote configure FILE``: push a whole site config to a gateway, signed, and follow it to the end.

FILE is read with Canopy's own YAML loader (a syntax error is shown at its line
before anything is sent) and sent as the site document with its sha256
(docs/protocol.md#config), with the device profiles given by ``--profile``.  The
gateway validates it exactly as ``canopy validate`` would and answers on
``…/cmd/result``: ``rejected`` -- its problems are shown at the lines of FILE --
or ``accepted``, then ``applied`` once the restarted gateway has passed the
health gate, or ``failed`` (``rolled_back``) when it has not: a config that cuts
the gateway off from its broker is taken back by the board itself within the
gate's T.  Exit codes: 0 applied, 1 rejected or rolled back, 2 a usage, file or
key problem, 3 no final answer in time, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import sys
from pathlib import Path

import orjson

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ANSWER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
FINAL = ("applied", "rejected", "failed")
# The board restarts, its health gate waits up to T (120 s) and settles 10 s, a rollback restarts it again.
DEFAULT_TIMEOUT = 300.0
DEFAULT_VALID_FOR = 600.0
_ENV = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_PROBLEM = re.compile(r"^(?P<file>[^:\n]+\.yaml):(?P<line>\d+): (?P<key>[^:]+): (?P<message>.*)$")


class PushError(Exception):
    """FILE (or a profile) cannot be pushed: one line per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def add_parser(rsub) -> None:
    """``configure`` in the ``canopy remote`` group."""
    from gateway.cli.issuing import issuer_options

    common = issuer_options(timeout=DEFAULT_TIMEOUT, valid_for=DEFAULT_VALID_FOR, what="config envelope")
    p = rsub.add_parser("configure", parents=[common],
                        help="push a site config: validated on the board, applied, health-gated, rolled back if unhealthy")
    p.add_argument("file", help="the site config YAML to run on the gateway")
    p.add_argument("--profile", action="append", default=[], metavar="PROFILE.yaml",
                   help="also push this device profile (named by its file name); repeatable")
    p.set_defaults(func=cmd_configure)


def read_sources(file: str, profile_files: list[str]) -> tuple[object, dict[str, object]]:
    """(site Source, {profile name: Source}); raises PushError with every problem found."""
    from core.yamlsrc import ConfigError, load_yaml

    sources, problems = {}, []
    for path in [file, *profile_files]:
        problems += _env_uses(path)
        try:
            src = load_yaml(path)
        except ConfigError as exc:
            problems += [str(p) for p in exc.problems]
            continue
        if not isinstance(src.data, dict):
            problems.append(f"{path}:1: a {'site config' if path == file else 'profile'} must be a mapping of keys")
        sources[path] = src
    names = {Path(p).stem: p for p in profile_files}
    if len(names) != len(profile_files):
        problems.append("two --profile files have the same name")
    if problems:
        raise PushError(list(dict.fromkeys(problems)))
    return sources[file], {name: sources[path] for name, path in names.items()}


def _env_uses(path: str) -> list[str]:
    """``${VAR}`` would be expanded here, with this machine's environment: refused (a file on the board is the way)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []  # the loader says why
    return [f"{path}:{n}: ${{…}} would be expanded on this machine, not on the board; a pushed config cannot use it "
            "(name a file on the board, such as password_file)"
            for n, line in enumerate(text.splitlines(), 1) if _ENV.search(line.split("#", 1)[0])]


def build_envelope(args, site_src, profiles: dict, now: float | None = None) -> dict:
    """The signed config envelope; raises PushError when it is beyond the protocol's limits, ValueError on bad usage."""
    from core.protocol import envelope, limits
    from gateway.cli.issuing import load_issuer_key
    from gateway.remote_config.bundle import digest

    params = {"config": site_src.data, "sha256": digest(site_src.data)}
    if profiles:
        params["profiles"] = {name: src.data for name, src in profiles.items()}
    if not args.valid_for > 0:
        raise ValueError("--valid-for must be positive")
    issuer = args.issuer or (Path(args.key).stem if args.key.endswith(".key") else Path(args.key).name)
    person = getattr(args, "on_behalf_of", None)
    if person is not None and not envelope.PERSON_RE.match(person):
        raise ValueError(f"--as {person!r}: 1-128 of A-Z a-z 0-9 _ . : @ + - (first a letter or digit)")
    env = envelope.make(issuer=issuer, site=args.site, gateway=args.gateway, target="*", action="apply", params=params,
                        valid_for=args.valid_for, now=now, v=2, kind="config", on_behalf_of=person)
    signed = envelope.sign(env, load_issuer_key(args.key))
    try:
        limits.parse(orjson.dumps(signed), limits.CONFIG)
    except limits.Malformed as exc:
        raise PushError([f"{args.file}: cannot be pushed as one message ({exc.reason}: {exc}); split the site across "
                         "gateways (docs/protocol.md#config)"]) from None
    return signed


def located(detail: str, site_file: str, site_src, profiles: dict) -> list[str]:
    """The gateway's problem lines, each moved to the line of the file it came from here (when the key is known)."""
    out = []
    for text in detail.splitlines():
        m = _PROBLEM.match(text)
        src = None
        if m is not None:
            stem = Path(m["file"]).stem
            src = profiles.get(stem) if "/" in m["file"] else site_src
        if src is None:
            out.append(text)
            continue
        line = src.line_of(_key_path(m["key"]))
        where = site_file if src is site_src else src.file
        out.append(f"{where}:{line}: {m['key']}: {m['message']}" if line else f"{where}: {m['key']}: {m['message']}")
    return out


def _key_path(key: str) -> tuple:
    return tuple(int(p[1:-1]) if p.startswith("[") else p for p in re.findall(r"\[\d+\]|[^.\[\]]+", key))


def describe(rec: dict, file: str, site_src, profiles: dict) -> list[str]:
    """A result as console lines (rich markup; what came from the gateway escaped)."""
    from rich.markup import escape

    status, raw = rec.get("status"), rec.get("detail") or ""
    detail = escape(raw)
    if status == "accepted":
        return [f"[cyan]accepted[/] (id {rec.get('id')}): {detail}"]
    if status == "applied":
        if rec.get("config") == rec.get("previous"):
            return [f"[green]applied[/]: config {rec.get('config')} ({detail or 'unchanged'})"]
        return [f"[green]applied[/]: config {rec.get('config')} runs now (was {rec.get('previous')})"]
    reason = escape(str(rec.get("reason")) + (f" [{rec['problem']}]" if rec.get("problem") else ""))
    if status == "rejected" and rec.get("reason") == "invalid_config":
        return [f"[red]rejected[/]: [bold]{reason}[/]", *(f"  {escape(line)}" for line in located(raw, file, site_src, profiles))]
    return [f"[red]{status}[/]: [bold]{reason}[/] — {detail}"]


def cmd_configure(args) -> int:
    from rich.console import Console
    from rich.markup import escape

    from core.protocol.envelope import KeyError_
    from gateway.cli.issuing import endpoint_from_args, send_async

    console = Console(stderr=args.json, soft_wrap=True, highlight=False)
    try:
        site_src, profiles = read_sources(args.file, args.profile)
        env = build_envelope(args, site_src, profiles)
        host, port, endpoint = endpoint_from_args(args)
    except PushError as exc:
        print(f"error: {args.file} is not sent:", *(f"  {line}" for line in exc.lines), sep="\n", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, KeyError_, PermissionError, ssl.SSLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    size = len(orjson.dumps(env))
    console.print(escape(f"sending {args.file} ({size / 1024:.1f} KiB"
                         f"{f', {len(profiles)} profile(s)' if profiles else ''}) to {env['site']}/{env['gateway']} via "
                         f"{host}:{port} as {env['issuer']} (id {env['id']})"))

    def show(rec: dict) -> None:
        if args.json:
            print(orjson.dumps(rec).decode(), flush=True)
            return
        for line in describe(rec, args.file, site_src, profiles):
            console.print(line)

    try:
        records = asyncio.run(send_async(env, endpoint, timeout=args.timeout, on_record=show, final=FINAL))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    final = next((r for r in records if r.get("status") in FINAL), None)
    if final is None:
        said = (" (it accepted the config; the health gate may still be running: see `canopy status` or …/state)" if records
                else "; is the gateway online, and does it name this issuer with `configure`? See …/state → capabilities")
        print(f"error: no result from {env['site']}/{env['gateway']} within {args.timeout:g} s{said}", file=sys.stderr)
        return EXIT_NO_ANSWER
    return EXIT_OK if final["status"] == "applied" else EXIT_REFUSED
