"""Issuer-side tools: ``canopy keys gen`` and ``canopy remote irrigate|close|close-all|unlock|lock|...``
(``canopy remote configure``, a whole site config: remote_config.py).

``canopy remote ...`` signs one command envelope (protocol v2, kind ``command``;
``--as PERSON`` names the person a service signs for) with the issuer's private
key, publishes it on ``canopy/v1/{site}/{gateway}/cmd`` through the broker,
and waits for the gateway's results on ``…/cmd/result``: ``accepted``, then
``executed`` (with the state read back from the device) or ``failed``; or at
once ``rejected`` with a reason.  Exit codes: 0 executed, 1 rejected or
failed, 2 usage or key problem, 3 no answer (timeout, broker unreachable),
130 interrupted (Ctrl-C).  Key, broker and sending: issuing.py.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from pathlib import Path

import orjson

from core.timefmt import fmt_time
from gateway.cli.issuing import FINAL, endpoint_from_args, issuer_options, load_issuer_key, send_async

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ANSWER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


# ---------------------------------------------------------------------------------- parsers
def add_parsers(subparsers) -> None:
    keys = subparsers.add_parser("keys", help="issuer signing keys for remote commands (Ed25519)")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    g = ksub.add_parser("gen", help="make a key pair: NAME.key (private, 0600) and NAME.pub (for the site config)")
    g.add_argument("--out", "-o", required=True, help="private key file to write, e.g. farmer.key (NAME.pub goes beside it)")
    g.add_argument("--issuer", help="issuer name for the printed config snippet (default: the file name without .key)")
    g.add_argument("--force", action="store_true", help="overwrite existing files")
    g.set_defaults(func=cmd_keys_gen)

    common = issuer_options(timeout=30.0, valid_for=120.0, what="command")

    remote = subparsers.add_parser("remote", help="send a signed command to a gateway through the broker and show the result")
    rsub = remote.add_subparsers(dest="remote_command", required=True)

    p = rsub.add_parser("irrigate", parents=[common], help="open a valve (zone) for a time; the gateway closes it by itself")
    _valve_target(p)
    dur = p.add_mutually_exclusive_group(required=True)
    dur.add_argument("--minutes", type=float, help="how long (fractions allowed: 0.5 = 30 s)")
    dur.add_argument("--seconds", type=float, help="how long, in seconds")
    p.set_defaults(func=cmd_remote, action="irrigate")

    p = rsub.add_parser("close", parents=[common], help="close one valve now")
    _valve_target(p)
    p.set_defaults(func=cmd_remote, action="close")

    p = rsub.add_parser("close-all", parents=[common], help="close every valve now and pause automatic programs")
    p.add_argument("--hold-minutes", type=float, default=None,
                   help="pause automatic programs this long (default: the gateway's close_all_hold; 0: do not pause)")
    p.set_defaults(func=cmd_remote, action="close_all")

    p = rsub.add_parser("resume-programs", parents=[common], help="let automatic programs run again after a close-all")
    p.set_defaults(func=cmd_remote, action="resume_programs")

    for name, action, text in (("unlock", "unlock", "unlock a door; it relocks by itself"),
                               ("lock", "lock", "lock a door now"),
                               ("reset-lockout", "reset_lockout", "end a lock's lockout after repeated rejected unlocks")):
        p = rsub.add_parser(name, parents=[common], help=text)
        p.add_argument("--lock", "--target", dest="target", required=True, help="lock id, e.g. door-101")
        p.set_defaults(func=cmd_remote, action=action)

    from gateway.cli.remote_config import add_parser as add_configure_parser

    add_configure_parser(rsub)


def _valve_target(p) -> None:
    t = p.add_mutually_exclusive_group(required=True)
    t.add_argument("--zone", type=int, help="zone number (targets zone-N)")
    t.add_argument("--target", help="valve id")


# ---------------------------------------------------------------------------------- keys
def cmd_keys_gen(args) -> int:
    from core.protocol import envelope

    out = Path(args.out)
    pub = out.with_suffix(".pub") if out.suffix == ".key" else Path(str(out) + ".pub")
    issuer = args.issuer or (out.stem if out.suffix == ".key" else out.name)
    for f in (out, pub):
        if f.exists() and not args.force:
            print(f"error: {f} exists (use --force to overwrite)", file=sys.stderr)
            return EXIT_USAGE
    key = envelope.generate()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(envelope.private_pem(key))
        os.chmod(out, 0o600)
        public = envelope.public_key_text(key.public_key())
        pub.write_text(public + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    from rich.console import Console
    from rich.syntax import Syntax

    console = Console()
    console.print(f"wrote [bold]{out}[/] (private key, mode 0600: keep it secret) and [bold]{pub}[/] (public key)")
    console.print("add to the gateway's site config (choose the actions and targets):")
    snippet = (f"commands:\n  issuers:\n    {issuer}:\n      public_key: \"{public}\"\n"
               f"      actions: [irrigate, close, close_all]\n      targets: [\"zone-*\"]\n")
    console.print(Syntax(snippet, "yaml", theme="ansi_dark", background_color="default"))
    return EXIT_OK


# ---------------------------------------------------------------------------------- remote
def build_envelope(args, now: float | None = None) -> tuple[dict, object]:
    """(signed envelope, private key) from the parsed arguments; raises ValueError on bad usage."""
    from core.protocol import envelope

    action = args.action
    params: dict = {}
    target = "*"
    if action in ("irrigate", "close"):
        target = f"zone-{args.zone}" if args.zone is not None else args.target
    elif action in ("unlock", "lock", "reset_lockout"):
        target = args.target
    if action == "irrigate":
        seconds = args.seconds if args.seconds is not None else args.minutes * 60.0
        if not seconds > 0:
            raise ValueError("the duration must be positive")
        params["duration_s"] = int(seconds) if float(seconds).is_integer() else round(seconds, 3)
    if action == "close_all" and args.hold_minutes is not None:
        if args.hold_minutes < 0:
            raise ValueError("--hold-minutes must be 0 or more")
        hold = args.hold_minutes * 60.0
        params["hold_s"] = int(hold) if float(hold).is_integer() else round(hold, 3)
    if not args.valid_for > 0:
        raise ValueError("--valid-for must be positive")
    key_path = args.key
    issuer = args.issuer or (Path(key_path).stem if key_path.endswith(".key") else Path(key_path).name)
    key = load_issuer_key(key_path)
    person = getattr(args, "on_behalf_of", None)
    if person is not None and not envelope.PERSON_RE.match(person):
        raise ValueError(f"--as {person!r}: 1-128 of A-Z a-z 0-9 _ . : @ + - (first a letter or digit)")
    env = envelope.make(issuer=issuer, site=args.site, gateway=args.gateway, target=target, action=action,
                        params=params, valid_for=args.valid_for, now=now, v=2, kind="command", on_behalf_of=person)
    return envelope.sign(env, key), key


def _fmt_time(ts) -> str:
    """Date, time and zone: a person reading "12:07" cannot tell which day or which clock."""
    return fmt_time(ts) if isinstance(ts, (int, float)) else "?"


def _describe_record(rec: dict) -> str:
    status = rec.get("status")
    what = f"{rec.get('action')} {rec.get('target')}"
    if status == "accepted":
        return f"[cyan]accepted[/] {what} (id {rec.get('id')})"
    if status == "rejected":
        extra = f" [{rec['interlock']}]" if rec.get("interlock") else f" [{rec['problem']}]" if rec.get("problem") else ""
        return f"[red]rejected[/] {what}: [bold]{rec.get('reason')}[/]{extra} — {rec.get('detail', '')}"
    if status == "failed":
        return f"[red]failed[/] {what}: [bold]{rec.get('reason')}[/] — {rec.get('detail', '')}"
    if status == "queued":
        until = f" until {_fmt_time(rec['queued_until'])}" if rec.get("queued_until") else ""
        return f"[yellow]queued[/] {what}: waiting for room on {rec.get('manifold', 'the manifold')}{until} — {rec.get('detail', '')}"
    parts = [f"[green]executed[/] {what}"]
    if rec.get("detail"):
        parts.append(str(rec["detail"]))
    if rec.get("duration_s") is not None:
        parts.append(f"for {rec['duration_s']:g} s, closes by itself at {_fmt_time(rec.get('closes_at'))}"
                     + (" (device timer armed too)" if rec.get("device_timer") else ""))
    if rec.get("relock_at") is not None:
        parts.append(f"relocks at {_fmt_time(rec['relock_at'])} (by the {rec.get('relock_by')})")
    if rec.get("programs_paused_until"):
        parts.append(f"programs paused until {_fmt_time(rec['programs_paused_until'])}")
    state = rec.get("state")
    if isinstance(state, dict) and state:
        shown = ", ".join(f"{k}={_fmt_value(v)}" for k, v in state.items())
        parts.append(f"read back: {shown}")
    return "; ".join(parts)


def _fmt_value(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_fmt_value(x)}" for k, x in v.items()) + "}"
    return orjson.dumps(v).decode()


def cmd_remote(args) -> int:
    from rich.console import Console

    from core.protocol.envelope import KeyError_

    console = Console(stderr=args.json, soft_wrap=True)
    try:
        env, _key = build_envelope(args)
        host, port, endpoint = endpoint_from_args(args)
    except (ValueError, KeyError_, PermissionError, ssl.SSLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"error: file not found: {exc.filename}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    person = f" for {env['on_behalf_of']}" if env.get("on_behalf_of") else ""
    console.print(f"sending [bold]{env['action']}[/] {env['target']} {orjson.dumps(env['params']).decode() if env['params'] else ''}"
                  f" to {env['site']}/{env['gateway']} via {host}:{port} as {env['issuer']}{person} (id {env['id']})")

    def show(rec):
        if args.json:
            print(orjson.dumps(rec).decode(), flush=True)
        else:
            console.print(_describe_record(rec))

    try:
        records = asyncio.run(send_async(env, endpoint, timeout=args.timeout, on_record=show))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    final = next((r for r in records if r.get("status") in FINAL), None)
    if final is None:
        said = (" (it accepted the command; the result did not come in time)" if records else
                "; is the gateway online and subscribed? A gateway drops commands it cannot verify without an answer "
                f"(unknown issuer {env['issuer']!r}, or a key it does not know): see …/state → commands.counters.junk")
        print(f"error: no result from {env['site']}/{env['gateway']} within {args.timeout:g} s{said}", file=sys.stderr)
        return EXIT_NO_ANSWER
    return EXIT_OK if final["status"] == "executed" else EXIT_REFUSED
