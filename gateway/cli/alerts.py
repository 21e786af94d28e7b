"""Operator tools: ``canopy alerts [--follow]`` and ``canopy ack ALERT_ID --key OPERATOR.key [--as PERSON] [--resolve]``.

``canopy alerts`` reads the gateway's local alert state file (on the board),
or the broker (``--broker``, or when there is no local file): the retained
``…/state`` carries the open alerts, and ``--follow`` then prints every
``alert.*`` record published on ``…/event`` and ``…/alert/{group}``.

``canopy ack`` signs a v2 ack envelope (kind ``ack``) with the operator's key --
the gateway acts on nothing else (docs/alerts.md#acknowledging-an-alert) --,
publishes it on ``…/alert/ack`` through the broker named in the site config
(same username, password and TLS as the gateway, through the one asyncio MQTT
client of ``core.mqtt``) and waits for the gateway's answer
(``alert.acknowledged``, ``alert.resolved`` or ``alert.ack_rejected``).  Exit codes: 0 done, 1 not confirmed or refused,
2 bad config, 130 interrupted (Ctrl-C; ``--follow`` exits 0).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
from datetime import datetime

import orjson

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("alerts", help="list a gateway's open alerts (local state file or broker)")
    p.add_argument("-c", "--config", required=True, help="site config YAML of the gateway")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing alert changes as they happen")
    p.add_argument("--broker", action="store_true", help="ask the broker instead of the local state file")
    p.add_argument("--all", action="store_true", help="also list recently closed alerts (local state file)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker (default 5)")
    p.add_argument("--for", dest="follow_for", type=float, default=0.0, metavar="SECONDS",
                   help="with --follow: stop after this many seconds (default: until Ctrl-C)")
    p.set_defaults(func=cmd_alerts)

    p = subparsers.add_parser("ack", help="acknowledge (and optionally resolve) an alert: a signed ack through the broker")
    p.add_argument("alert_id", help="the alert id, as shown by `canopy alerts`")
    p.add_argument("--key", required=True, help="the operator's private key (from `canopy keys gen`), mode 0600")
    p.add_argument("--issuer", help="issuer name as in the gateway's commands.issuers (default: the key file name without .key)")
    p.add_argument("--as", "--by", dest="person", default=None,
                   help="the person acknowledging, when the key is a service's or a desk's (the ack's on_behalf_of)")
    p.add_argument("--resolve", action="store_true", help="also close the alert")
    p.add_argument("--note", default=None, help="a short note kept with the ack (up to 500 characters)")
    p.add_argument("-c", "--config", required=True, help="site config YAML of the gateway")
    p.add_argument("--valid-for", type=float, default=120.0, help="seconds the gateway may still act on it (default 120)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the gateway's answer (default 10)")
    p.add_argument("--no-wait", action="store_true", help="return once the broker has the ack")
    p.set_defaults(func=cmd_ack)


# --------------------------------------------------------------------------- helpers


def _load(path: str):
    from gateway.cli.site import load_site

    return load_site(path)


def _when(ts) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _where(loc: dict | None) -> str:
    if not loc:
        return "-"
    return "/".join(str(loc[k]) for k in ("building", "unit", "household", "grid", "zone") if loc.get(k)) or "-"


def _row(a: dict) -> str:
    status = a.get("status", "?")
    if status == "acknowledged" and a.get("acked_by"):
        status = f"acked by {a['acked_by']}"
    return (f"{a.get('id', '?'):<12} {a.get('severity', '?'):<8} {status:<22} {_when(a.get('raised_at')):<19} "
            f"{a.get('rule', '?'):<20} {_where(a.get('location')):<16} {a.get('message', '')}")


HEADER = f"{'ID':<12} {'SEVERITY':<8} {'STATUS':<22} {'RAISED':<19} {'RULE':<20} {'WHERE':<16} MESSAGE"


def _summary(d: dict) -> dict:
    """A state-file alert as the short form the snapshot uses."""
    from gateway.alerts.lifecycle import Alert

    try:
        a = Alert.from_dict(d)
    except TypeError:
        return {}
    return {"id": a.id, "rule": a.rule, "severity": a.severity, "status": a.status, "raised_at": a.raised_at,
            "device": a.device, "location": a.location, "message": a.message, "step": a.step, "acked_by": a.acked_by,
            "resolved_at": a.resolved_at, "resolved_by": a.resolved_by}


def _print_list(alerts: list[dict], as_json: bool, what: str) -> None:
    if as_json:
        print(orjson.dumps(alerts, option=orjson.OPT_INDENT_2).decode())
        return
    if not alerts:
        print(f"no {what} alerts")
        return
    print(HEADER)
    for a in alerts:
        print(_row(a))


def _read_state(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return None


def _local_alerts(data: dict, include_closed: bool) -> list[dict]:
    out = [_summary(d) for d in data.get("alerts", [])]
    out = [a for a in out if a and (include_closed or a["status"] != "resolved")]
    return sorted(out, key=lambda a: a.get("raised_at") or 0)


# --------------------------------------------------------------------------- canopy alerts


def cmd_alerts(args) -> int:
    from core.protocol.topics import Topics
    from gateway.alerts.state import state_path
    from gateway.cli.broker import run, site_client

    cfg = _load(args.config)
    if cfg is None:
        return EXIT_CONFIG
    if cfg.site.rules is None:
        print(f"{args.config} has no rules: section, so this gateway raises no alerts", file=sys.stderr)
    path = state_path(cfg)
    local = None if args.broker else _read_state(path)
    if local is not None:
        alerts = _local_alerts(local, args.all)
        _print_list(alerts, args.json, "open" if not args.all else "recorded")
        if args.follow:
            return _follow_file(path, args)
        return EXIT_OK
    if not args.broker:
        print(f"no local alert state at {path}; asking the broker", file=sys.stderr)
    try:
        client = site_client(cfg, "alerts", args.timeout)
    except (OSError, ssl.SSLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    topics = Topics(cfg.site.site, cfg.site.gateway)
    if args.follow:  # following ends with Ctrl-C: that is the normal way out
        return run(_alerts_from_broker(client, topics, args), interrupted=EXIT_OK)
    return run(_alerts_from_broker(client, topics, args))


async def _alerts_from_broker(client, topics, args) -> int:
    """The open alerts of the retained ``…/state``; with --follow, then every alert record as it comes."""
    from core.mqtt import MqttConnectError, MqttError
    from gateway.cli.broker import connect_problem

    try:
        async with client:
            await client.subscribe(topics.state, topics.event, f"{topics.base}/alert/+")
            state = await _retained_state(client, topics.state, args.timeout)
            if state is None:
                print(f"no retained state from {topics.site}/{topics.gateway} on the broker within {args.timeout:g} s "
                      "(has this gateway ever connected?)", file=sys.stderr)
                if not args.follow:
                    return EXIT_FAIL
            else:
                if state.get("status") != "online":
                    print(f"note: the gateway is {state.get('status')} ({state.get('reason', '')}); the list is its last report",
                          file=sys.stderr)
                _print_list(list((state.get("alerts") or {}).get("open", [])), args.json, "open")
            if args.follow:
                await _follow_broker(client, topics.state, args)
            return EXIT_OK
    except MqttConnectError as exc:
        print(f"error: {connect_problem(exc, client.endpoint, args.timeout)}", file=sys.stderr)
        return EXIT_FAIL
    except MqttError as exc:
        print(f"error: broker {client.endpoint}: {exc}", file=sys.stderr)
        return EXIT_FAIL


async def _retained_state(client, state_topic: str, timeout: float) -> dict | None:
    """The gateway's retained state, or None when the broker has none within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            async for msg in client.messages():
                if msg.topic == state_topic:
                    try:
                        body = orjson.loads(msg.payload)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(body, dict):
                        return body
    except TimeoutError:
        pass
    return None


async def _follow_broker(client, state_topic: str, args) -> None:
    """Print the alert records of ``…/event`` and ``…/alert/{group}`` until --for runs out (or Ctrl-C)."""
    from gateway.cli.broker import records_of

    try:
        async with asyncio.timeout(args.follow_for if args.follow_for > 0 else None):
            async for msg in client.messages():
                if msg.topic == state_topic:
                    continue
                for r in records_of(msg.payload):
                    if str(r.get("type", "")).startswith("alert."):
                        _print_record(r, args.json)
    except TimeoutError:
        pass


def _print_record(r: dict, as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(r).decode(), flush=True)
        return
    t = r.get("type", "")
    what = t.removeprefix("alert.")
    extra = ""
    if t in ("alert.raised", "alert.escalated"):
        extra = f" -> {r.get('group') or '-'} {r.get('recipients') or ''} {r.get('message', '')}"
    elif t == "alert.acknowledged":
        signer = f" [key {r['issuer']}]" if r.get("issuer") and r.get("issuer") != r.get("by") else ""
        extra = f" by {r.get('by')}{signer}" + (f" ({r['note']})" if r.get("note") else "")
    elif t == "alert.resolved":
        extra = f" ({r.get('resolved_by')}) {r.get('message', '')}"
    elif t == "alert.ack_rejected":
        extra = f" ack from {r.get('by')}: {r.get('reason')}" + (f" ({r['detail']})" if r.get("detail") else "")
    print(f"{_when(r.get('ts'))} {r.get('alert', '?'):<12} {what:<12} {r.get('severity', '') or ''}{extra}", flush=True)


def _follow_file(path: str, args) -> int:
    """Print what changes in the local state file until stopped."""
    seen = {a["id"]: (a["status"], a.get("step")) for a in _local_alerts(_read_state(path) or {}, True)}
    deadline = time.monotonic() + args.follow_for if args.follow_for > 0 else float("inf")
    mtime = 0.0
    try:
        while time.monotonic() < deadline:
            try:
                m = os.stat(path).st_mtime
            except OSError:
                m = 0.0
            if m != mtime:
                mtime = m
                for a in _local_alerts(_read_state(path) or {}, True):
                    now = (a["status"], a.get("step"))
                    if seen.get(a["id"]) != now:
                        seen[a["id"]] = now
                        if args.json:
                            print(orjson.dumps(a).decode(), flush=True)
                        else:
                            print(_row(a) + (f" [step {a['step']}]" if a.get("step") else ""), flush=True)
            time.sleep(0.3)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


# --------------------------------------------------------------------------- canopy ack


def ack_envelope(cfg, args, now: float | None = None) -> dict:
    """The signed v2 ack for the parsed arguments; raises ValueError (bad usage), OSError or KeyError_ (the key)."""
    from pathlib import Path

    from core.protocol import envelope
    from gateway.cli.issuing import load_issuer_key

    person = args.person.strip() if args.person is not None else None
    if person is not None and not envelope.PERSON_RE.match(person):
        raise ValueError("--as needs a name of 1 to 128 letters, digits or _ . : @ + - (starting with a letter or digit)")
    if not envelope.TARGET_RE.match(args.alert_id or ""):
        raise ValueError(f"{args.alert_id!r} is not an alert id (like 17-a3f9, as `canopy alerts` shows)")
    if args.note is not None and len(args.note) > 500:
        raise ValueError("--note is at most 500 characters")
    if not args.valid_for > 0:
        raise ValueError("--valid-for must be positive")
    issuer = args.issuer or (Path(args.key).stem if args.key.endswith(".key") else Path(args.key).name)
    key = load_issuer_key(args.key)
    env = envelope.make(v=2, kind="ack", issuer=issuer, on_behalf_of=person, site=cfg.site.site, gateway=cfg.site.gateway,
                        target=args.alert_id, action="resolve" if args.resolve else "acknowledge",
                        params={"note": args.note} if args.note else {}, valid_for=args.valid_for, now=now)
    return envelope.sign(env, key)


def cmd_ack(args) -> int:
    from core.protocol.envelope import KeyError_
    from core.protocol.topics import Topics
    from gateway.cli.broker import run, site_client

    cfg = _load(args.config)
    if cfg is None:
        return EXIT_CONFIG
    try:
        env = ack_envelope(cfg, args)
    except (ValueError, KeyError_, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        client = site_client(cfg, "ack", args.timeout)
    except (OSError, ssl.SSLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return run(_ack(client, Topics(cfg.site.site, cfg.site.gateway), args, env))


async def _ack(client, topics, args, env: dict) -> int:
    """Publish the ack (PUBACK awaited), then wait for the gateway's answer on ``…/event``."""
    from core.mqtt import MqttConnectError, MqttError
    from gateway.cli.broker import connect_problem

    try:
        async with client:
            if not args.no_wait:  # subscribed before the ack goes out, so the answer cannot be missed
                try:
                    async with asyncio.timeout(args.timeout):
                        await client.subscribe(topics.event)
                except TimeoutError:
                    pass
            try:
                async with asyncio.timeout(args.timeout):
                    await client.publish(topics.alert_ack, orjson.dumps(env), qos=1)
            except TimeoutError:
                print(f"error: the broker did not confirm the ack within {args.timeout:g} s", file=sys.stderr)
                return EXIT_FAIL
            except MqttError as exc:
                print(f"error: the ack could not be sent: {exc}", file=sys.stderr)
                return EXIT_FAIL
            if args.no_wait:
                print(f"ack for {args.alert_id} sent to {topics.alert_ack} (id {env['id']})")
                return EXIT_OK
            answer = await _gateway_answer(client, env, args.timeout)
    except MqttConnectError as exc:
        print(f"error: {connect_problem(exc, client.endpoint, args.timeout)}", file=sys.stderr)
        return EXIT_FAIL
    except MqttError as exc:
        print(f"error: broker {client.endpoint}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if answer is None:
        print(f"the broker has the ack, but gateway {topics.gateway} did not confirm it within {args.timeout:g} s "
              f"(is it online? the ack stays valid for {args.valid_for:g} s; after that send a new one)", file=sys.stderr)
        return EXIT_FAIL
    if answer.get("type") == "alert.ack_rejected":
        detail = f" ({answer['detail']})" if answer.get("detail") else ""
        print(f"gateway refused the ack for {args.alert_id}: {answer.get('reason')}{detail}", file=sys.stderr)
        return EXIT_FAIL
    verb = "resolved" if answer.get("type") == "alert.resolved" else "acknowledged"
    print(f"alert {args.alert_id} {verb} by {env.get('on_behalf_of') or env['issuer']}")
    return EXIT_OK


async def _gateway_answer(client, env: dict, timeout: float) -> dict | None:
    """The gateway's record about this ack (acknowledged, resolved or ack_rejected), or None in time."""
    from gateway.cli.broker import records_of

    alert_id, resolve = env["target"], env["action"] == "resolve"
    try:
        async with asyncio.timeout(timeout):
            async for msg in client.messages():
                for r in records_of(msg.payload):
                    if r.get("alert") != alert_id:
                        continue
                    if r.get("type") == "alert.ack_rejected" and r.get("id") == env["id"]:
                        return r
                    if r.get("type") == "alert.resolved" or (not resolve and r.get("type") == "alert.acknowledged"
                                                              and r.get("ack") == env["id"]):
                        return r
    except TimeoutError:
        pass
    return None
