"""Operator tools: ``canopy alerts [--follow]`` and ``canopy ack ALERT_ID [--resolve] --by NAME``.

``canopy alerts`` reads the gateway's local alert state file (on the board),
or the broker (``--broker``, or when there is no local file): the retained
``…/state`` carries the open alerts, and ``--follow`` then prints every
``alert.*`` record published on ``…/event`` and ``…/alert/{group}``.

``canopy ack`` publishes an ack on ``…/alert/ack`` through the broker named in
the site config (same username, password and TLS as the gateway, through the
one asyncio MQTT client of ``gateway.uplink.client``) and waits for the
gateway's answer (``alert.acknowledged``, ``alert.resolved`` or
``alert.ack_rejected``).  Exit codes: 0 done, 1 not confirmed or refused,
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

    p = subparsers.add_parser("ack", help="acknowledge (and optionally resolve) an alert through the broker")
    p.add_argument("alert_id", help="the alert id, as shown by `canopy alerts`")
    p.add_argument("--by", required=True, help="who acknowledges (name or staff id)")
    p.add_argument("--resolve", action="store_true", help="also close the alert")
    p.add_argument("--note", default=None, help="a short note kept with the ack")
    p.add_argument("-c", "--config", required=True, help="site config YAML of the gateway")
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
    from gateway.cli.broker import connect_problem
    from gateway.uplink.client import MqttConnectError, MqttError

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
        extra = f" by {r.get('by')}" + (f" ({r['note']})" if r.get("note") else "")
    elif t == "alert.resolved":
        extra = f" ({r.get('resolved_by')}) {r.get('message', '')}"
    elif t == "alert.ack_rejected":
        extra = f" ack from {r.get('by')}: {r.get('reason')}"
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


def ack_payload(alert_id: str, by: str, resolve: bool = False, note: str | None = None) -> bytes:
    body = {"v": 1, "alert": alert_id, "by": by, "resolve": bool(resolve), "ts": round(time.time(), 3)}
    if note:
        body["note"] = note
    return orjson.dumps(body)


def cmd_ack(args) -> int:
    from core.protocol.topics import Topics
    from gateway.cli.broker import run, site_client

    cfg = _load(args.config)
    if cfg is None:
        return EXIT_CONFIG
    by = (args.by or "").strip()
    if not by or len(by) > 64:
        print("error: --by needs a name of 1 to 64 characters", file=sys.stderr)
        return EXIT_CONFIG
    if not args.alert_id or len(args.alert_id) > 64:
        print("error: the alert id must be 1 to 64 characters", file=sys.stderr)
        return EXIT_CONFIG
    try:
        client = site_client(cfg, "ack", args.timeout)
    except (OSError, ssl.SSLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return run(_ack(client, Topics(cfg.site.site, cfg.site.gateway), args, by))


async def _ack(client, topics, args, by: str) -> int:
    """Publish the ack (PUBACK awaited), then wait for the gateway's answer on ``…/event``."""
    from gateway.cli.broker import connect_problem
    from gateway.uplink.client import MqttConnectError, MqttError

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
                    await client.publish(topics.alert_ack, ack_payload(args.alert_id, by, args.resolve, args.note), qos=1)
            except TimeoutError:
                print(f"error: the broker did not confirm the ack within {args.timeout:g} s", file=sys.stderr)
                return EXIT_FAIL
            except MqttError as exc:
                print(f"error: the ack could not be sent: {exc}", file=sys.stderr)
                return EXIT_FAIL
            if args.no_wait:
                print(f"ack for {args.alert_id} sent to {topics.alert_ack}")
                return EXIT_OK
            answer = await _gateway_answer(client, args.alert_id, by, args.resolve, args.timeout)
    except MqttConnectError as exc:
        print(f"error: {connect_problem(exc, client.endpoint, args.timeout)}", file=sys.stderr)
        return EXIT_FAIL
    except MqttError as exc:
        print(f"error: broker {client.endpoint}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if answer is None:
        print(f"the broker has the ack, but gateway {topics.gateway} did not confirm it within {args.timeout:g} s "
              "(is it online? an ack sent while it is offline is not kept: send it again)", file=sys.stderr)
        return EXIT_FAIL
    if answer.get("type") == "alert.ack_rejected":
        print(f"gateway refused the ack for {args.alert_id}: {answer.get('reason')}", file=sys.stderr)
        return EXIT_FAIL
    verb = "resolved" if answer.get("type") == "alert.resolved" else "acknowledged"
    print(f"alert {args.alert_id} {verb} by {by}")
    return EXIT_OK


async def _gateway_answer(client, alert_id: str, by: str, resolve: bool, timeout: float) -> dict | None:
    """The gateway's record about this ack (acknowledged, resolved or ack_rejected), or None in time."""
    from gateway.cli.broker import records_of

    wanted = {"alert.resolved"} if resolve else {"alert.acknowledged", "alert.resolved"}
    try:
        async with asyncio.timeout(timeout):
            async for msg in client.messages():
                for r in records_of(msg.payload):
                    if r.get("alert") != alert_id:
                        continue
                    if r.get("type") in wanted or (r.get("type") == "alert.ack_rejected" and r.get("by") == by):
                        return r
    except TimeoutError:
        pass
    return None
