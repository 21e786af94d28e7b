"""``canopy-centre users …``: add people, grant and revoke roles, reset a password, disable an account.

``users add NAME --role R [--site S] [--scope group:G …]`` prints a one-time password (or reads
one from stdin with ``--password-stdin``); either way the user must change it at the first
login.  Every change is audited with the actor ``cli:<login name>``.
"""

from __future__ import annotations

import getpass
import json
import sys

from centre.people import audit, passwords, sessions, users
from centre.people.config import PeopleConfig
from centre.people.roles import ROLES, Grant, parse_scope
from centre.people.users import UserError
from centre.store.engine import create_engine
from centre.store.migrate import current


def register(subparsers) -> None:
    p = subparsers.add_parser("users", help="people: add users, grant roles, reset passwords")
    sub = p.add_subparsers(dest="users_command", required=True)

    def cmd(name: str, help: str, func, *, scoped: bool = False, secret: bool = False):
        c = sub.add_parser(name, help=help)
        c.add_argument("-c", "--config", required=True, help="centre.yaml")
        if name != "list":
            c.add_argument("name", help="the user name (what signed envelopes carry as on_behalf_of)")
        if scoped:
            c.add_argument("--role", required=True, choices=ROLES)
            c.add_argument("--site", help="the site the role is for (default: every site)")
            c.add_argument("--scope", action="append", default=[], metavar="KIND:ID",
                           help="narrow to group:G, household:H or zone:Z (repeatable: one grant each)")
        if secret:
            c.add_argument("--password-stdin", action="store_true",
                           help="read the first password from stdin instead of printing a one-time one")
        c.set_defaults(func=func)
        return c

    add = cmd("add", "add a user with a role; prints a one-time password", _add, scoped=True, secret=True)
    add.add_argument("--display-name")
    add.add_argument("--language", choices=users.LANGUAGES, default="en")
    add.add_argument("--phone")
    add.add_argument("--email")
    cmd("grant", "give a user another role or scope", _grant, scoped=True)
    cmd("revoke", "take a role or scope away", _revoke, scoped=True)
    cmd("reset-password", "a new one-time password; ends the user's sessions", _reset, secret=True)
    cmd("disable", "the user can no longer log in; ends their sessions", _disable)
    cmd("enable", "allow a disabled user to log in again", _enable)
    ls = cmd("list", "every user and their grants", _list)
    ls.add_argument("--json", action="store_true")


def _grants(args) -> list[Grant]:
    if not args.scope:
        return [Grant(args.role, args.site)]
    return [Grant(args.role, args.site, *parse_scope(s)) for s in args.scope]


def _actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


async def _with_engine(cfg, work) -> int:
    engine = create_engine(cfg.database.url, synchronous=cfg.database.synchronous)
    try:
        if not await current(engine):
            print("the database has no schema yet: run `canopy-centre db upgrade -c centre.yaml` first", file=sys.stderr)
            return 1
        return await work(engine)
    except (UserError, ValueError) as exc:
        print(f"canopy-centre users: {exc}", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()


def _password(args, people: PeopleConfig) -> tuple[str, bool]:
    """(password, shown): read from stdin and checked, or a fresh one-time password to print."""
    if not args.password_stdin:
        return passwords.one_time_password(), True
    pw = sys.stdin.readline().rstrip("\r\n")
    problem = passwords.policy_problem(pw, username=args.name, min_length=people.password_min_length)
    if problem:
        raise ValueError(problem)
    return pw, False


def _people(cfg) -> PeopleConfig:
    return getattr(cfg, "people", None) or PeopleConfig()


async def _add(args, cfg) -> int:
    async def work(engine) -> int:
        grants = _grants(args)
        users.check_username(args.name)
        pw, shown = _password(args, _people(cfg))
        await users.add_user(engine, args.name, await passwords.hash_password(pw), grants,
                             display_name=args.display_name, language=args.language, phone=args.phone, email=args.email)
        await audit.record(engine, actor=_actor(), action="users.add", outcome="ok", target=args.name, site=args.site,
                           detail={"grants": [str(g) for g in grants]})
        print(f"user {args.name} added: {'; '.join(str(g) for g in grants)}")
        _show(pw, shown)
        return 0
    return await _with_engine(cfg, work)


async def _grant(args, cfg) -> int:
    async def work(engine) -> int:
        grants = _grants(args)
        await users.add_grants(engine, args.name, grants)
        await audit.record(engine, actor=_actor(), action="users.grant", outcome="ok", target=args.name, site=args.site,
                           detail={"grants": [str(g) for g in grants]})
        print(f"{args.name}: granted {'; '.join(str(g) for g in grants)}")
        return 0
    return await _with_engine(cfg, work)


async def _revoke(args, cfg) -> int:
    async def work(engine) -> int:
        grants = _grants(args)
        n = await users.revoke_grants(engine, args.name, grants)
        await audit.record(engine, actor=_actor(), action="users.revoke", outcome="ok", target=args.name, site=args.site,
                           detail={"grants": [str(g) for g in grants], "removed": n})
        print(f"{args.name}: {n} grant(s) revoked")
        return 0 if n else 1
    return await _with_engine(cfg, work)


async def _reset(args, cfg) -> int:
    async def work(engine) -> int:
        pw, shown = _password(args, _people(cfg))
        new_hash = await passwords.hash_password(pw)
        ended = await sessions.reset_password(engine, args.name, new_hash, actor=_actor())
        print(f"{args.name}: password reset, {ended} session(s) ended")
        _show(pw, shown)
        return 0
    return await _with_engine(cfg, work)


async def _set_active(args, cfg, active: bool) -> int:
    async def work(engine) -> int:
        ended = await sessions.set_active(engine, args.name, active, actor=_actor())
        print(f"{args.name}: {'enabled' if active else f'disabled, {ended} session(s) ended'}")
        return 0
    return await _with_engine(cfg, work)


async def _disable(args, cfg) -> int:
    return await _set_active(args, cfg, False)


async def _enable(args, cfg) -> int:
    return await _set_active(args, cfg, True)


async def _list(args, cfg) -> int:
    async def work(engine) -> int:
        found = await users.list_users(engine)
        if args.json:
            print(json.dumps([u.public() for u in found], ensure_ascii=False, indent=2))
            return 0
        for u in found:
            flags = ("" if u.active else " [disabled]") + (" [must change password]" if u.must_change_password else "")
            print(f"{u.username}{flags}: {'; '.join(str(g) for g in u.grants) or 'no roles'}")
        return 0
    return await _with_engine(cfg, work)


def _show(pw: str, shown: bool) -> None:
    if shown:
        print(f"one-time password (shown once; it must be changed at the first login): {pw}")
    else:
        print("password set from stdin; it must be changed at the first login")
