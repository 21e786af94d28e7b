"""``/api/admin/…``: what an installer or an administrator needs -- gateway health, people, routing, issuer keys.

- ``GET /api/admin/gateways`` (``gaps.view``: installer, admin): every gateway with its
  health in one answer -- online/offline and why, last seen, versions, the outbox backlog,
  failing devices, unrepaired gaps -- and ``trouble`` set when it is offline, silent or never
  seen online, troubled ones first;
- ``/api/admin/users`` (``users.manage``): :mod:`centre.web.api.admin_users`;
- ``GET /api/admin/routing`` (``routing.manage``): group -> users and channels, read-only,
  webhook secrets and mail passwords left out;
- ``GET /api/admin/keys`` (``keys.manage``): per site the public issuer keys and the YAML
  snippet for the gateways' config, rendered by the same function as ``canopy-centre keys show``.

Each endpoint refuses (403, audited) a caller without its permission at any site, and shows
only the sites the permission covers.  Routing and keys come from the centre's acting
component (``web.components["acting"]``): this instance's own configuration and key files.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import APIRouter

from centre.people import users
from centre.people.roles import MANAGE_KEYS, MANAGE_ROUTING, VIEW_GAPS
from centre.store import schema
from centre.web.api import admin_users
from centre.web.api.admin_access import gate, visible
from centre.web.scope import at_sites
from centre.web.auth import Caller, CurrentUser
from centre.web.errors import ApiError

router = APIRouter(prefix="/admin", tags=["admin"])
router.include_router(admin_users.router)

SILENT_S = 300.0  # an online gateway unheard this long is silent (routing.blind.after when routing runs)
LANES = ("alarm", "event", "telemetry")
OPEN_GAPS = ("open", "repair_requested")


# ---- gateways and their health ----------------------------------------------------------------------------

def _num(v) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def health(state: dict | None) -> dict | None:
    """The health part of an online ``…/state`` (docs/protocol.md#state): backlog, failing devices, errors.
    None for an offline state, which carries none."""
    if not isinstance(state, dict) or state.get("status") != "online":
        return None
    outbox = state.get("outbox") if isinstance(state.get("outbox"), dict) else {}
    lanes = {lane: int(_num((outbox.get(lane) or {}).get("pending")) or 0) for lane in LANES
             if isinstance(outbox.get(lane), dict)}
    lost = 0  # records the gateway deleted unsent (expired, dropped by its size policy)
    for lane in LANES:
        counts = outbox.get(lane) if isinstance(outbox.get(lane), dict) else {}
        dropped = counts.get("dropped") if isinstance(counts.get("dropped"), dict) else {}
        lost += int(_num(counts.get("expired")) or 0) + sum(int(_num(v) or 0) for v in dropped.values())
    devices = state.get("devices") if isinstance(state.get("devices"), dict) else {}
    failing = [{"device": d, "status": str(v.get("status")), "detail": v.get("detail") if isinstance(v.get("detail"), str) else None,
                "last_ok": _num(v.get("last_ok"))}
               for d, v in sorted(devices.items()) if isinstance(v, dict) and v.get("status") not in ("ok", "unknown")]
    uplink = state.get("uplink") if isinstance(state.get("uplink"), dict) else {}
    return {"backlog": sum(lanes.values()), "lanes": lanes, "lost": lost,
            "degraded": bool(outbox.get("degraded")), "store_error": outbox.get("last_error") or None,
            "uplink_error": uplink.get("last_error") or None,
            "devices": len(devices), "devices_ok": sum(1 for v in devices.values() if isinstance(v, dict) and v.get("status") == "ok"),
            "failing": failing}


def trouble(row: dict, now: float, silent_after: float) -> str | None:
    """offline | silent | unknown (never seen online) | None -- the same words the duty desk uses."""
    if row["status"] == "offline":
        return "offline"
    if row["status"] != "online":
        return "unknown"
    return "silent" if now - row["last_seen"] > silent_after else None


def _blind_limit(caller: Caller):
    cfg = _routing_cfg(caller, required=False)
    return cfg.blind.limit if cfg is not None else (lambda site: SILENT_S)


@router.get("/gateways", summary="Every gateway with its health: offline, silent or unseen ones first")
async def gateways(caller: CurrentUser) -> list[dict]:
    await gate(caller, VIEW_GAPS, "gateways health")  # a 403 (audited) when no site at all
    g, gp = schema.gateways, schema.gaps
    cols = [c for c in g.c if c.name not in ("meta",)]
    mine_g = at_sites(caller.grants, VIEW_GAPS, g.c.site)  # the same sites ``gate`` found, in SQL
    async with caller.web.engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(sa.select(*cols).where(mine_g).order_by(g.c.site, g.c.gateway))]
        gaps: dict[tuple[str, str], list] = {}
        for x in await conn.execute(
                sa.select(gp.c.site, gp.c.gateway, gp.c.state, sa.func.count().label("n"), sa.func.sum(gp.c.size).label("size"))
                .where(gp.c.state != "repaired", at_sites(caller.grants, VIEW_GAPS, gp.c.site))
                .group_by(gp.c.site, gp.c.gateway, gp.c.state)):
            gaps.setdefault((x.site, x.gateway), []).append(x)
    now, limit = time.time(), _blind_limit(caller)
    out = []
    for r in rows:
        mine = gaps.get((r["site"], r["gateway"]), [])
        state, silent_after = r.pop("state"), limit(r["site"])
        r.update(online=r["status"] == "online", trouble=trouble(r, now, silent_after),
                 silent_after=silent_after, health=health(state),
                 gaps={"open": sum(x.n for x in mine if x.state in OPEN_GAPS),
                       "missing": int(sum(x.size or 0 for x in mine if x.state in OPEN_GAPS)),
                       "unrepairable": sum(x.n for x in mine if x.state == "unrepairable"),
                       "lost": int(sum(x.size or 0 for x in mine if x.state == "unrepairable"))})
        out.append(r)
    rank = {"offline": 0, "silent": 1, "unknown": 2, None: 3}
    return sorted(out, key=lambda r: (rank[r["trouble"]], not _worrying(r), r["site"], r["gateway"]))


def _worrying(r: dict) -> bool:
    """Online, but something needs a look: failing devices, a store that cannot write, data lost for good."""
    h = r["health"] or {}
    return bool(h.get("failing") or h.get("degraded") or r["gaps"]["unrepairable"])


# ---- routing ------------------------------------------------------------------------------------------

def _acting(caller: Caller, required: bool = True):
    acting = caller.web.components.get("acting")
    if acting is None and required:
        raise ApiError(503, "this centre instance runs without its acting component: its routing and keys are "
                            "not known here (see docs/centre.md)")
    return acting


def _routing_cfg(caller: Caller, required: bool = True):
    acting = _acting(caller, required)
    return acting.routing.feed.cfg if acting is not None else None


def _safe_url(url: str) -> str:
    """A webhook's address without credentials or query (either may hold a token)."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}{u.path}"


@router.get("/routing", summary="Recipient groups -> people and channels (read-only; no secrets)")
async def routing(caller: CurrentUser) -> dict:
    sites = await gate(caller, MANAGE_ROUTING, "routing")
    cfg = _routing_cfg(caller)
    granted: dict[tuple[str | None, str], list[str]] = {}
    for u in await users.list_users(caller.web.engine):
        for gr in u.grants:
            if gr.scope_kind == "group" and u.active:
                granted.setdefault((gr.site, gr.scope), []).append(u.username)
    groups = []
    for name, group in sorted(cfg.groups.items()):
        site, _, short = name.rpartition("/") if "/" in name else (None, "", name)
        if site is not None and not visible(sites, site):
            continue
        members = sorted({m for (s, gname), names in granted.items() if gname == short and (site is None or s in (None, site))
                          for m in names if visible(sites, s) or s is None})
        groups.append({"group": name, "site": site, "name": short, "users": list(group.users), "granted": members,
                       "channels": list(group.channels)})
    email = cfg.email
    return {"groups": groups,
            "webhooks": [{"name": n, "url": _safe_url(w.url), "max_attempts": w.max_attempts} for n, w in sorted(cfg.webhooks.items())],
            "email": None if email is None else {"host": email.host, "port": email.port, "security": email.security,
                                                 "from_address": email.from_address},
            "blind": {"after": cfg.blind.after, "sites": {s: v for s, v in cfg.blind.sites.items() if visible(sites, s)},
                      "groups": list(cfg.blind.groups), "severity": cfg.blind.severity},
            "notify_on": list(cfg.notify_on)}


# ---- issuer keys ----------------------------------------------------------------------------------------

def _snippet_renderer():
    """``gateway_snippet`` of ``centre.acting.keys``, by name: acting imports the web layer (its API), so the web
    layer reaches acting's code the way app.py reaches its routers -- never by a static import (a cycle)."""
    return importlib.import_module("centre.acting.keys").gateway_snippet


def _key_sites(store, known: set[str]) -> list[str]:
    found = set(known)
    if store.dir.is_dir():
        found |= {d.name for d in store.dir.iterdir() if d.is_dir()}
    out = []
    for s in found:
        try:
            store.site_dir(s)
        except ValueError:
            continue
        out.append(s)
    return sorted(out)


def _keys_of(store, known: set[str], mine: set[str] | None) -> list[dict]:
    render = _snippet_renderer()
    out = []
    for site in (s for s in _key_sites(store, known) if visible(mine, s)):
        keys = store.keys(site)
        out.append({"site": site,
                    "keys": [{"issuer": k.issuer, "public_key": k.public_key, "active": k.active,
                              "has_private": k.has_private} for k in keys],
                    "snippet": render(site, keys) if keys else None,
                    "command": None if keys else f"canopy-centre keys gen --site {site} -c centre.yaml"})
    return out


@router.get("/keys", summary="Per site: the public issuer keys and the YAML snippet for its gateways")
async def keys(caller: CurrentUser) -> list[dict]:
    sites = await gate(caller, MANAGE_KEYS, "issuer keys")
    store = _acting(caller).keys
    async with caller.web.engine.connect() as conn:
        known = {s for (s,) in await conn.execute(sa.select(schema.gateways.c.site).distinct())}
    try:
        return await asyncio.to_thread(_keys_of, store, known, sites)
    except (OSError, ValueError) as exc:
        raise ApiError(503, f"cannot read the issuer keys in {store.dir}: {exc}") from None
